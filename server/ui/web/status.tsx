/** `/ui/status`: version, storage, uptime, the last garbage collection and each mirror upstream. */
import { api, type Session } from './api.js';
import { ErrorMessage, Loading, Time, useLoad } from './components.js';
import { bytes, duration } from './format.js';

/** The collector's figures (server/gc: wharf_gc_* in its metrics file), in the order and words people read them. */
const count = (v: unknown) => String(v);
const GC_FIELDS: [string, string, (v: unknown) => string][] = [
  ['durationSeconds', 'Duration', (v) => duration(v as number)],
  ['dryRun', 'Dry run', (v) => (v ? 'yes (nothing removed)' : 'no')],
  ['bytesFreed', 'Space freed', (v) => bytes(v as number)],
  ['blobsDeleted', 'Blobs removed', count],
  ['manifestsDeleted', 'Manifest revisions removed', count],
  ['repositoriesDeleted', 'Emptied repositories removed', count],
  ['linksDeleted', 'Repository links removed', count],
  ['uploadsPurged', 'Stale uploads purged', count],
  ['proxyExpiredTags', 'Mirrored tags expired', count],
  ['proxyExpiredManifests', 'Mirrored manifests expired', count],
  ['repositoriesMarked', 'Repositories examined', count],
  ['manifestsMarked', 'Live manifests', count],
  ['blobsMarked', 'Live blobs', count],
];

export function Status({ session }: { session: Session }) {
  const s = useLoad('status', (signal) => api.status(signal));
  const d = s.data;
  return (
    <>
      <h1 tabIndex={-1}>Status</h1>
      {s.error !== undefined && <ErrorMessage error={s.error} what="the registry's status" canLogin={session.canLogin} />}
      {s.loading && !d && <Loading />}
      {d && (
        <>
          <dl class="facts">
            <div><dt>Version</dt><dd>{d.version}</dd></div>
            <div><dt>Storage driver</dt><dd>{d.storageDriver}</dd></div>
            <div><dt>Up for</dt><dd>{duration(d.uptimeSeconds)}</dd></div>
            <div><dt>Started</dt><dd><Time iso={d.startedAt} /></dd></div>
          </dl>
          <section aria-labelledby="gc-title">
            <h2 id="gc-title">Garbage collection</h2>
            {!d.gc ? <p class="muted">No garbage collection has been recorded.</p> : (
              <dl class="facts">
                <div><dt>Last run</dt><dd><Time iso={d.gc.lastRun ?? null} /></dd></div>
                <div><dt>Result</dt><dd>{d.gc.success === false ? 'failed' : d.gc.success === true ? 'succeeded' : '–'}</dd></div>
                {GC_FIELDS.filter(([k]) => d.gc![k] !== undefined && d.gc![k] !== null).map(([k, label, f]) => (
                  <div key={k}><dt>{label}</dt><dd>{f(d.gc![k])}</dd></div>
                ))}
                {Object.entries(d.gc)
                  .filter(([k, v]) => !['lastRun', 'success', ...GC_FIELDS.map(([f]) => f)].includes(k) && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'))
                  .map(([k, v]) => <div key={k}><dt>{k}</dt><dd>{String(v)}</dd></div>)}
              </dl>
            )}
          </section>
          {d.mirror && (
            <section aria-labelledby="mirror-title">
              <h2 id="mirror-title">Mirror upstreams</h2>
              <table class="list">
                <thead><tr><th scope="col">Upstream</th><th scope="col">Last success</th><th scope="col">Last failure</th><th scope="col">Last error</th></tr></thead>
                <tbody>
                  {d.mirror.map((u) => (
                    <tr key={u.upstream}>
                      <td data-label="Upstream">{u.upstream}</td>
                      <td data-label="Last success"><Time iso={u.lastSuccess} /></td>
                      <td data-label="Last failure"><Time iso={u.lastFailure} /></td>
                      <td data-label="Last error">{u.lastError ?? '–'}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </section>
          )}
        </>
      )}
    </>
  );
}
