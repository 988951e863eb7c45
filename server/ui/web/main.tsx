/**
 * Wharf's web UI (docs/ui.md): the entry point esbuild bundles into /ui/assets/app-<hash>.js. The header, the session
 * (title, user, what the registry allows) and the router that picks a view from the URL.
 */
import './app.css';
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, onUnauthorized, type Session } from './api.js';
import { ErrorMessage, Loading } from './components.js';
import { Login } from './login.js';
import { Manifest } from './manifest.js';
import { Repositories } from './repositories.js';
import { Repository } from './repository.js';
import { href, interceptLinks, navigate, onNavigate, parseRoute, type Route } from './router.js';
import { Status } from './status.js';

function useLocation(): string {
  const [loc, setLoc] = useState(location.pathname + location.search);
  useEffect(() => onNavigate(() => setLoc(location.pathname + location.search)), []);
  return loc;
}

function viewTitle(route: Route): string {
  switch (route.view) {
    case 'repositories': return 'Repositories';
    case 'repository': return route.name;
    case 'manifest': return `${route.name} ${route.reference}`;
    case 'status': return 'Status';
    case 'login': return 'Log in';
    default: return 'Not found';
  }
}

function App() {
  const loc = useLocation();
  const [session, setSession] = useState<Session | undefined>();
  const [sessionError, setSessionError] = useState<unknown>();
  const main = useRef<HTMLElement>(null);
  const first = useRef(true);

  const loadSession = async () => {
    try {
      setSession(await api.session());
      setSessionError(undefined);
    } catch (err) {
      setSessionError(err);
    }
  };
  useEffect(() => {
    void loadSession();
    // A 401 while someone seems logged in means their session ended: ask again who we are.
    onUnauthorized(() => { void loadSession(); });
  }, []);

  const url = new URL(loc, location.origin);
  const route = parseRoute(url.pathname);
  const params = url.searchParams;
  const title = session?.title ?? 'Wharf';

  useEffect(() => { document.title = `${viewTitle(route)} · ${title}`; }, [loc, title]);
  // After a navigation (not the first load), focus moves to the new view's heading, for keyboards and screen readers.
  useEffect(() => {
    if (first.current) { first.current = false; return; }
    const h = main.current?.querySelector<HTMLElement>('h1');
    (h ?? main.current)?.focus({ preventScroll: true });
    scrollTo(0, 0);
  }, [loc]);

  const logout = async () => {
    try {
      await api.logout();
    } finally {
      await loadSession();
      navigate(href.repositories());
    }
  };

  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <a class="brand" href={href.repositories()}>{title}</a>
        <nav aria-label="Main">
          <a href={href.repositories()} aria-current={route.view === 'repositories' ? 'page' : undefined}>Repositories</a>
          <a href={href.status()} aria-current={route.view === 'status' ? 'page' : undefined}>Status</a>
        </nav>
        <div class="who">
          {session?.user ? (
            <>
              <span class="user">Logged in as <strong>{session.user}</strong></span>
              <button type="button" class="small" onClick={logout}>Log out</button>
            </>
          ) : session?.canLogin && route.view !== 'login' ? (
            <a href={href.login(location.pathname + location.search)}>Log in</a>
          ) : null}
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {sessionError !== undefined && <ErrorMessage error={sessionError} what="the registry" />}
        {!session && sessionError === undefined && <Loading />}
        {session && <View route={route} params={params} session={session} onLogin={loadSession} />}
      </main>
    </>
  );
}

function View({ route, params, session, onLogin }: { route: Route; params: URLSearchParams; session: Session; onLogin: () => Promise<void> }) {
  switch (route.view) {
    case 'repositories': return <Repositories session={session} params={params} />;
    case 'repository': return <Repository key={route.name} session={session} name={route.name} params={params} />;
    case 'manifest': return <Manifest key={`${route.name}@${route.reference}`} session={session} name={route.name} reference={route.reference} />;
    case 'status': return <Status session={session} />;
    case 'login': return <Login session={session} params={params} onLogin={onLogin} />;
    default: return (
      <>
        <h1 tabIndex={-1}>Not found</h1>
        <p>This page does not exist. <a href={href.repositories()}>See the repositories</a>.</p>
      </>
    );
  }
}

interceptLinks();
render(<App />, document.getElementById('app')!);
