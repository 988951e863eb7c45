/**
 * `/ui/r/<name>/manifest/<tag or digest>`: one manifest. An index lists its platforms (each opening its image); an image
 * shows its config, layers (a bar each for the sizes) and history; every kind shows annotations, referrers grouped by
 * artifactType, and the raw JSON on request.
 */
import { useState } from 'preact/hooks';
import { api, type ManifestInfo, type Referrer, type Session } from './api.js';
import { Bar, ConfirmDialog, CopyCommand, ErrorMessage, KeyValues, Loading, RawJson, Time, useLoad } from './components.js';
import { bytes, platform, shortDigest } from './format.js';
import { href, navigate } from './router.js';
import { Kind, mayOfferDelete } from './repository.js';

const isDigest = (ref: string) => /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(ref);

export function Manifest({ session, name, reference }: { session: Session; name: string; reference: string }) {
  const m = useLoad(`manifest ${name} ${reference}`, (signal) => api.manifest(name, reference, signal));
  const [deleting, setDeleting] = useState(false);
  return (
    <>
      <nav class="crumbs" aria-label="Breadcrumb">
        <a href={href.repositories()}>Repositories</a> / <a href={href.repository(name)}>{name}</a> /
      </nav>
      <h1 tabIndex={-1} class="name">{isDigest(reference) ? `${name}@${shortDigest(reference)}` : `${name}:${reference}`}</h1>
      {m.error !== undefined && <ErrorMessage error={m.error} what="this manifest" canLogin={session.canLogin} />}
      {m.loading && !m.data && <Loading />}
      {m.data && <Body session={session} name={name} reference={reference} m={m.data} onDelete={() => setDeleting(true)} />}
      {deleting && m.data && (
        <ConfirmDialog
          title="Delete this manifest?"
          confirmLabel="Delete manifest"
          onClose={() => setDeleting(false)}
          onConfirm={async () => {
            await api.deleteManifest(name, m.data!.digest);
            navigate(href.repository(name));
          }}
        >
          <p>The manifest <code>{m.data.digest}</code> will be removed from <strong>{name}</strong>, with every tag that points to it. This cannot be undone.</p>
        </ConfirmDialog>
      )}
    </>
  );
}

function Body({ session, name, reference, m, onDelete }: { session: Session; name: string; reference: string; m: ManifestInfo; onDelete: () => void }) {
  const host = session.registryHost;
  return (
    <>
      <dl class="facts">
        <div><dt>Digest</dt><dd class="digest-full">{m.digest}</dd></div>
        <div><dt>Kind</dt><dd><Kind kind={m.kind} artifactType={m.artifactType} /></dd></div>
        <div><dt>Media type</dt><dd>{m.mediaType}</dd></div>
        <div><dt>Size</dt><dd>{m.totalSize ? `${bytes(m.totalSize)} in all (the manifest: ${bytes(m.size)})` : `${bytes(m.size)} (the manifest)`}</dd></div>
        {m.subject && (
          <div><dt>Subject</dt><dd><a href={href.manifest(name, m.subject.digest)} class="digest">{m.subject.digest}</a></dd></div>
        )}
      </dl>
      <section aria-labelledby="pull-title">
        <h2 id="pull-title">Pull</h2>
        {!isDigest(reference) && <CopyCommand command={`docker pull ${host}/${name}:${reference}`} label="the pull command by tag" />}
        <CopyCommand command={`docker pull ${host}/${name}@${m.digest}`} label="the pull command by digest" />
      </section>
      {m.kind === 'index' && <Platforms name={name} m={m} />}
      {m.config && <Config m={m} />}
      {m.layers && m.layers.length > 0 && <Layers m={m} />}
      <section aria-labelledby="annotations-title">
        <h2 id="annotations-title">Annotations</h2>
        <KeyValues values={m.annotations} empty="No annotations." />
      </section>
      <Referrers name={name} referrers={m.referrers ?? []} />
      <section aria-labelledby="raw-title">
        <h2 id="raw-title">Raw JSON</h2>
        <RawJson value={m.raw} label="manifest JSON" />
        {m.config && m.config.raw !== null && m.config.raw !== undefined && <RawJson value={m.config.raw} label="config JSON" />}
      </section>
      {m.deleteRefusal && session.deleteEnabled && <p class="muted">This manifest cannot be deleted: it is {m.deleteRefusal}.</p>}
      {mayOfferDelete(session, m.canDelete) && (
        <section aria-labelledby="delete-title">
          <h2 id="delete-title">Delete</h2>
          <button type="button" class="danger" onClick={onDelete}>Delete manifest</button>
        </section>
      )}
    </>
  );
}

function Platforms({ name, m }: { name: string; m: ManifestInfo }) {
  const children = m.children ?? [];
  return (
    <section aria-labelledby="platforms-title">
      <h2 id="platforms-title">Platforms</h2>
      {children.length === 0 ? <p class="muted">This index lists no manifests.</p> : (
        <table class="list platforms-table">
          <thead><tr><th scope="col">Platform</th><th scope="col">Digest</th><th scope="col" class="num">Size</th><th scope="col">Media type</th></tr></thead>
          <tbody>
            {children.map((c) => (
              <tr key={c.digest}>
                <td data-label="Platform">
                  {c.missing
                    ? <span>{platform(c.platform)} <span class="muted">(not in this repository)</span></span>
                    : <a href={href.manifest(name, c.digest)} class="platform-link">{platform(c.platform)}</a>}
                </td>
                <td data-label="Digest"><span class="digest" title={c.digest}>{shortDigest(c.digest)}</span></td>
                <td data-label="Size" class="num">{bytes(c.size)}</td>
                <td data-label="Media type">{c.mediaType}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Words({ words }: { words: string[] | null | undefined }) {
  if (!words || words.length === 0) return <span class="muted">–</span>;
  return <code>{JSON.stringify(words)}</code>;
}

function Config({ m }: { m: ManifestInfo }) {
  const c = m.config!;
  if (c.raw === null || c.raw === undefined) {
    return (
      <section aria-labelledby="config-title">
        <h2 id="config-title">Configuration</h2>
        <p class="message" role="status">
          {c.tooLarge
            ? `The config (${c.digest}) is ${bytes(c.size)}, more than the web UI reads; fetch it with a registry client to see it.`
            : `The config (${c.digest}) could not be read.`}
        </p>
      </section>
    );
  }
  return (
    <section aria-labelledby="config-title">
      <h2 id="config-title">Configuration</h2>
      <dl class="facts">
        <div><dt>Platform</dt><dd>{platform({ os: c.os ?? '', architecture: c.architecture ?? '', variant: c.variant ?? undefined })}</dd></div>
        <div><dt>Created</dt><dd><Time iso={c.created} /></dd></div>
        <div><dt>Entrypoint</dt><dd><Words words={c.entrypoint} /></dd></div>
        <div><dt>Command</dt><dd><Words words={c.cmd} /></dd></div>
        <div><dt>Config</dt><dd><span class="digest" title={c.digest}>{shortDigest(c.digest)}</span></dd></div>
      </dl>
      <h3>Environment</h3>
      {c.env && c.env.length > 0 ? (
        <ul class="env">{c.env.map((e, i) => <li key={i}><code>{e}</code></li>)}</ul>
      ) : <p class="muted">No environment variables.</p>}
      <h3>Labels</h3>
      <KeyValues values={c.labels} empty="No labels." />
    </section>
  );
}

function Layers({ m }: { m: ManifestInfo }) {
  const layers = m.layers ?? [];
  const max = layers.reduce((a, l) => Math.max(a, l.size), 0);
  const total = layers.reduce((a, l) => a + l.size, 0);
  return (
    <section aria-labelledby="layers-title">
      <h2 id="layers-title">Layers</h2>
      <p class="muted">{layers.length} layers, {bytes(total)} compressed</p>
      <ol class="layers">
        {layers.map((l, i) => (
          <li key={`${i}${l.digest}`} class="layer">
            <div class="layer-head">
              <span class="layer-n">{i + 1}</span>
              <span class="digest" title={l.digest}>{shortDigest(l.digest)}</span>
              <span class="layer-size">{bytes(l.size)}</span>
            </div>
            <Bar value={l.size} max={max} label={`layer ${i + 1}: ${bytes(l.size)}`} />
            {l.createdBy ? <code class="created-by">{l.createdBy}</code> : <span class="muted small">No history for this layer.</span>}
          </li>
        ))}
      </ol>
    </section>
  );
}

function Referrers({ name, referrers }: { name: string; referrers: Referrer[] }) {
  const groups = new Map<string, Referrer[]>();
  for (const r of referrers) {
    const key = r.artifactType ?? r.mediaType;
    const list = groups.get(key) ?? [];
    list.push(r);
    groups.set(key, list);
  }
  return (
    <section aria-labelledby="referrers-title">
      <h2 id="referrers-title">Referrers</h2>
      {referrers.length === 0 ? <p class="muted">No signatures, SBOMs or other artifacts refer to this manifest.</p> : (
        [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([type, list]) => (
          <div class="referrer-group" key={type}>
            <h3 class="artifact-type">{type}</h3>
            <ul class="referrers">
              {list.map((r) => (
                <li key={r.digest}>
                  <a href={href.manifest(name, r.digest)} class="digest" title={r.digest}>{shortDigest(r.digest)}</a>
                  {' '}<span class="muted">{bytes(r.size)}</span>
                  {r.annotations && Object.keys(r.annotations).length > 0 && <KeyValues values={r.annotations} empty="" />}
                </li>
              ))}
            </ul>
          </div>
        ))
      )}
    </section>
  );
}
