/** `/`: the repositories the user may pull, a page at a time, with a name filter and a chart of storage used. */
import { useState } from 'preact/hooks';
import { api, type Session } from './api.js';
import { Bar, ErrorMessage, Loading, Time, useLoad } from './components.js';
import { bytes } from './format.js';
import { href, navigate } from './router.js';

export function Repositories({ session, params }: { session: Session; params: URLSearchParams }) {
  const q = params.get('q') ?? '';
  const next = params.get('next');
  const page = useLoad(`repos ${q} ${next}`, (signal) => api.repositories({ q, next }, signal));
  const [input, setInput] = useState(q);
  const [seenQ, setSeenQ] = useState(q);
  if (seenQ !== q) { setSeenQ(q); setInput(q); }
  const items = page.data?.items ?? [];
  const max = items.reduce((m, r) => Math.max(m, r.size), 0);
  return (
    <>
      <h1 tabIndex={-1}>Repositories</h1>
      <form class="filter" role="search" onSubmit={(e) => { e.preventDefault(); navigate(href.repositories({ q: input.trim() })); }}>
        <label for="repo-q">Name contains</label>
        <input id="repo-q" type="search" name="q" value={input} autoComplete="off" maxLength={255}
          onInput={(e) => setInput((e.target as HTMLInputElement).value)} />
        <button type="submit">Search</button>
        {q && <a href={href.repositories()}>Clear</a>}
      </form>
      {page.error !== undefined && <ErrorMessage error={page.error} what="the repositories" canLogin={session.canLogin} />}
      {page.loading && !page.data && <Loading />}
      {page.data && (
        items.length === 0 ? (
          <p class="message" role="status">
            {q ? `No repository you may see has a name containing “${q}”.` : 'There are no repositories you may see.'}
            {!session.user && session.canLogin && <> <a href={href.login('/')}>Log in</a> to see more.</>}
          </p>
        ) : (
          <>
            <p class="muted" role="status">
              {page.data.total !== null ? `${page.data.total} repositories` : `${items.length} repositories on this page`}
              {next ? ' (a later page)' : ''}
            </p>
            <table class="list repos">
              <thead>
                <tr><th scope="col">Name</th><th scope="col" class="num">Tags</th><th scope="col">Last push</th><th scope="col" class="num">Size</th></tr>
              </thead>
              <tbody>
                {items.map((r) => (
                  <tr key={r.name}>
                    <td data-label="Name"><a href={href.repository(r.name)}>{r.name}</a></td>
                    <td data-label="Tags" class="num">{r.tags}</td>
                    <td data-label="Last push"><Time iso={r.lastPush} /></td>
                    <td data-label="Size" class="num">{bytes(r.size)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            <Pager first={next ? href.repositories({ q }) : null} next={page.data.next ? href.repositories({ q, next: page.data.next }) : null} />
            <section class="chart" aria-labelledby="chart-title">
              <h2 id="chart-title">Storage used by the repositories on this page</h2>
              <ul class="bars">
                {[...items].sort((a, b) => b.size - a.size).map((r) => (
                  <li key={r.name} class="bar-row">
                    <span class="bar-label">{r.name}</span>
                    <Bar value={r.size} max={max} label={`${r.name}: ${bytes(r.size)}`} />
                    <span class="bar-value">{bytes(r.size)}</span>
                  </li>
                ))}
              </ul>
              <p class="muted small">Unique bytes of the blobs the repository's tagged manifests reference; blobs shared between repositories count in each.</p>
            </section>
          </>
        )
      )}
    </>
  );
}

export function Pager({ first, next }: { first: string | null; next: string | null }) {
  if (!first && !next) return null;
  return (
    <nav class="pager" aria-label="Pages">
      {first && <a href={first}>First page</a>}
      {next && <a href={next} rel="next">Next page</a>}
    </nav>
  );
}
