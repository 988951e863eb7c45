/** `/ui/r/<name>`: a repository's tags, sorted and filtered on the server, with pull commands and delete. */
import { useState } from 'preact/hooks';
import { api, type Session, type TagItem } from './api.js';
import { ConfirmDialog, CopyCommand, ErrorMessage, Loading, Time, useLoad } from './components.js';
import { bytes, platform, shortDigest } from './format.js';
import { href, navigate } from './router.js';
import { Pager } from './repositories.js';

const SORTS: [string, string][] = [
  ['name', 'Tag name (A–Z)'],
  ['-name', 'Tag name (Z–A)'],
  ['-pushed', 'Newest push first'],
  ['pushed', 'Oldest push first'],
];

/**
 * Whether to offer deletion: the answer's `canDelete`, which the server works out with the same rules a delete is
 * checked by (deletion on, not a mirrored repository, the user granted `delete`). The server decides in the end, and
 * a refusal is shown.
 */
export function mayOfferDelete(session: Session, canDelete?: boolean): boolean {
  return session.deleteEnabled && canDelete === true;
}

export function Kind({ kind, artifactType }: { kind: string; artifactType: string | null }) {
  return (
    <span class="kind">
      <span class={`badge badge-${kind}`}>{kind}</span>
      {artifactType && <span class="artifact-type">{artifactType}</span>}
    </span>
  );
}

export function Repository({ session, name, params }: { session: Session; name: string; params: URLSearchParams }) {
  const q = params.get('q') ?? '';
  const sort = params.get('sort') ?? 'name';
  const next = params.get('next');
  const page = useLoad(`tags ${name} ${q} ${sort} ${next}`, (signal) => api.tags(name, { q, sort, next }, signal));
  const [input, setInput] = useState(q);
  const [seenQ, setSeenQ] = useState(q);
  if (seenQ !== q) { setSeenQ(q); setInput(q); }
  const [deleting, setDeleting] = useState<{ tag: TagItem; what: 'tag' | 'manifest' } | null>(null);
  const [notice, setNotice] = useState('');
  const canDelete = mayOfferDelete(session, page.data?.canDelete);
  const items = page.data?.items ?? [];
  const go = (p: { q?: string; sort?: string }) => navigate(href.repository(name, { q: p.q ?? q, sort: (p.sort ?? sort) === 'name' ? '' : (p.sort ?? sort) }));
  return (
    <>
      <nav class="crumbs" aria-label="Breadcrumb"><a href={href.repositories()}>Repositories</a> / </nav>
      <h1 tabIndex={-1} class="name">{name}</h1>
      <form class="filter" role="search" onSubmit={(e) => { e.preventDefault(); go({ q: input.trim() }); }}>
        <label for="tag-q">Tag contains</label>
        <input id="tag-q" type="search" name="q" value={input} autoComplete="off" maxLength={128}
          onInput={(e) => setInput((e.target as HTMLInputElement).value)} />
        <button type="submit">Filter</button>
        <label for="tag-sort">Sort</label>
        <select id="tag-sort" name="sort" value={sort} onChange={(e) => go({ sort: (e.target as HTMLSelectElement).value })}>
          {SORTS.map(([v, l]) => <option key={v} value={v}>{l}</option>)}
        </select>
      </form>
      {notice && <p class="message ok" role="status">{notice}</p>}
      {page.error !== undefined && <ErrorMessage error={page.error} what="this repository" canLogin={session.canLogin} />}
      {page.loading && !page.data && <Loading />}
      {page.data && (items.length === 0 ? (
        <p class="message" role="status">{q ? `No tag contains “${q}”.` : 'This repository has no tags.'}</p>
      ) : (
        <>
          {page.data.total !== null && <p class="muted">{page.data.total} tags</p>}
          <table class="list tags">
            <thead>
              <tr>
                <th scope="col">Tag</th><th scope="col">Digest</th><th scope="col">Kind</th><th scope="col">Platforms</th>
                <th scope="col" class="num">Size</th><th scope="col">Created</th><th scope="col">Last push</th><th scope="col">Pull</th>
                {canDelete && <th scope="col">Delete</th>}
              </tr>
            </thead>
            <tbody>
              {items.map((t) => (
                <tr key={t.tag} data-tag={t.tag}>
                  <td data-label="Tag"><a href={href.manifest(name, t.tag)} class="tag">{t.tag}</a></td>
                  <td data-label="Digest"><a href={href.manifest(name, t.digest)} title={t.digest} class="digest">{shortDigest(t.digest)}</a></td>
                  <td data-label="Kind"><Kind kind={t.kind} artifactType={t.artifactType} /></td>
                  <td data-label="Platforms">{t.platforms.length === 0 ? <span class="muted">–</span> : (
                    <ul class="platforms">{t.platforms.map((p) => <li key={platform(p)}>{platform(p)}</li>)}</ul>
                  )}</td>
                  <td data-label="Size" class="num">{bytes(t.size)}</td>
                  <td data-label="Created"><Time iso={t.created} /></td>
                  <td data-label="Last push"><Time iso={t.lastPush} /></td>
                  <td data-label="Pull"><CopyCommand command={`docker pull ${session.registryHost}/${name}:${t.tag}`} label={`the pull command for ${t.tag}`} compact /></td>
                  {canDelete && (
                    <td data-label="Delete"><div class="row-actions">
                      {t.immutable
                        ? <span class="muted" title={`Immutable under ${t.immutable}`}>Immutable</span>
                        : <button type="button" class="danger small" onClick={() => setDeleting({ tag: t, what: 'tag' })} aria-label={`Delete the tag ${t.tag}`}>Delete tag</button>}
                      {!t.manifestImmutable && (
                        <button type="button" class="danger small" onClick={() => setDeleting({ tag: t, what: 'manifest' })} aria-label={`Delete the manifest of ${t.tag}`}>Delete manifest</button>
                      )}
                    </div></td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
          <Pager first={next ? href.repository(name, { q, sort: sort === 'name' ? '' : sort }) : null}
            next={page.data.next ? href.repository(name, { q, sort: sort === 'name' ? '' : sort, next: page.data.next }) : null} />
        </>
      ))}
      {deleting && (
        <ConfirmDialog
          title={deleting.what === 'tag' ? `Delete the tag ${deleting.tag.tag}?` : `Delete the manifest of ${deleting.tag.tag}?`}
          confirmLabel={deleting.what === 'tag' ? 'Delete tag' : 'Delete manifest'}
          onClose={() => setDeleting(null)}
          onConfirm={async () => {
            const t = deleting.tag;
            if (deleting.what === 'tag') {
              await api.deleteTag(name, t.tag);
              setNotice(`Deleted the tag ${t.tag}.`);
            } else {
              await api.deleteManifest(name, t.digest);
              setNotice(`Deleted the manifest ${t.digest} and every tag that pointed to it.`);
            }
            page.reload();
          }}
        >
          {deleting.what === 'tag' ? (
            <p>The tag <strong>{name}:{deleting.tag.tag}</strong> will be removed. The manifest <code>{deleting.tag.digest}</code> stays, reachable by its digest and any other tag.</p>
          ) : (
            <p>The manifest <code>{deleting.tag.digest}</code> will be removed from <strong>{name}</strong>, with every tag that points to it (<strong>{deleting.tag.tag}</strong> among them). This cannot be undone.</p>
          )}
        </ConfirmDialog>
      )}
    </>
  );
}
