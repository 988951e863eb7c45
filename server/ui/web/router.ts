/**
 * The page's URLs (docs/ui.md, "URLs"): each view has its own address, kept in the browser's history, so links can be
 * shared and the back button works. Links are real `<a href>`; a click on a same-origin link is turned into a
 * history push instead of a page load.
 */
import { namePath } from './api.js';

export type Route =
  | { view: 'repositories' }
  | { view: 'repository'; name: string }
  | { view: 'manifest'; name: string; reference: string }
  | { view: 'status' }
  | { view: 'login' }
  | { view: 'not-found' };

function decode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

/** The view a path names. A manifest is recognised by the last literal `/manifest/` (a reference has no slash). */
export function parseRoute(pathname: string): Route {
  if (pathname === '/' || pathname === '/ui' || pathname === '/ui/') return { view: 'repositories' };
  if (pathname === '/ui/status') return { view: 'status' };
  if (pathname === '/ui/login') return { view: 'login' };
  if (pathname.startsWith('/ui/r/')) {
    const rest = pathname.slice('/ui/r/'.length).replace(/\/+$/, '');
    const at = rest.lastIndexOf('/manifest/');
    if (at > 0) {
      const name = decode(rest.slice(0, at));
      const reference = decode(rest.slice(at + '/manifest/'.length));
      if (name && reference && !reference.includes('/')) return { view: 'manifest', name, reference };
    } else {
      const name = decode(rest);
      if (name) return { view: 'repository', name };
    }
  }
  return { view: 'not-found' };
}

export const href = {
  repositories: (q?: { q?: string; next?: string | null }) => `/${search(q ?? {})}`,
  repository: (name: string, q?: { q?: string; sort?: string; next?: string | null }) => `/ui/r/${namePath(name)}${search(q ?? {})}`,
  manifest: (name: string, reference: string) => `/ui/r/${namePath(name)}/manifest/${encodeURIComponent(reference).replace(/%3A/g, ':')}`,
  status: () => '/ui/status',
  login: (back?: string) => `/ui/login${back && back !== '/' ? search({ back }) : ''}`,
};

export function search(params: Record<string, string | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

type Listener = () => void;
const listeners = new Set<Listener>();

export function onNavigate(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function navigate(url: string, replace = false): void {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  for (const fn of listeners) fn();
}

/** Same-origin link clicks become history pushes (a modified click, a download or another target are left alone). */
export function interceptLinks(): void {
  addEventListener('popstate', () => { for (const fn of listeners) fn(); });
  document.addEventListener('click', (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const a = (event.target as Element | null)?.closest?.('a');
    if (!a || a.target || a.hasAttribute('download')) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin) return;
    if (parseRoute(url.pathname).view === 'not-found') return;
    event.preventDefault();
    if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search);
  });
}
