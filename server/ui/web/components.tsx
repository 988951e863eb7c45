/** Small building blocks shared by the views. Everything from the registry is rendered as text (Preact escapes it). */
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api.js';
import { href } from './router.js';
import { when } from './format.js';

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload(): void;
}

/** Runs `load` whenever `key` changes (the previous request is aborted) and keeps its answer or error. */
export function useLoad<T>(key: string, load: (signal: AbortSignal) => Promise<T>): Loaded<T> {
  const [state, setState] = useState<{ key: string; data?: T; error?: unknown; loading: boolean }>({ key, loading: true });
  const [round, setRound] = useState(0);
  useEffect(() => {
    const ac = new AbortController();
    setState((s) => ({ key, data: s.key === key ? s.data : undefined, loading: true }));
    load(ac.signal).then(
      (data) => { if (!ac.signal.aborted) setState({ key, data, loading: false }); },
      (error) => { if (!ac.signal.aborted) setState({ key, error, loading: false }); },
    );
    return () => ac.abort();
  }, [key, round]);
  const current = state.key === key;
  return {
    data: current ? state.data : undefined,
    error: current ? state.error : undefined,
    loading: !current || state.loading,
    reload: () => setRound((r) => r + 1),
  };
}

/** A failed request said in a sentence, with a way to log in when that would help. */
export function ErrorMessage({ error, what, canLogin }: { error: unknown; what: string; canLogin?: boolean }) {
  let text: string;
  let login = false;
  if (error instanceof ApiError) {
    if (error.status === 401) { text = `Log in to see ${what}.`; login = !!canLogin; }
    else if (error.status === 403) text = `You are not allowed to see ${what}.`;
    else if (error.status === 404) text = `${what[0]!.toUpperCase()}${what.slice(1)} was not found.`;
    else text = `${error.message} (${error.code}, HTTP ${error.status})`;
  } else {
    text = `Something went wrong: ${(error as Error)?.message ?? String(error)}`;
  }
  return (
    <p class="message error" role="alert">
      {text}
      {login && <> <a href={href.login(location.pathname + location.search)}>Log in</a></>}
    </p>
  );
}

export function Loading() {
  return <p class="loading" aria-live="polite">Loading…</p>;
}

export function Time({ iso }: { iso: string | null | undefined }) {
  if (!iso) return <span class="muted">–</span>;
  return <time dateTime={iso} title={iso}>{when(iso)}</time>;
}

/** A horizontal bar of `value` out of `max`, drawn with one SVG rect (no inline style: the CSP forbids it). */
export function Bar({ value, max, label }: { value: number; max: number; label: string }) {
  const width = max > 0 ? Math.max(0.5, (value / max) * 100) : 0;
  return (
    <svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label={label}>
      <rect class="bar-track" x="0" y="0" width="100" height="10" />
      <rect class="bar-fill" x="0" y="0" width={width.toFixed(2)} height="10" />
    </svg>
  );
}

/**
 * A command shown as text with a button that copies it (or selects it where the clipboard is not available).
 * `compact` (in a table row) shows only the button, with the command as its title, until a copy needs the text shown.
 */
export function CopyCommand({ command, label, compact }: { command: string; label: string; compact?: boolean }) {
  const code = useRef<HTMLElement>(null);
  const [said, setSaid] = useState('');
  const [shown, setShown] = useState(!compact);
  const select = () => {
    if (!code.current) return;
    const range = document.createRange();
    range.selectNodeContents(code.current);
    const sel = getSelection();
    sel?.removeAllRanges();
    sel?.addRange(range);
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(command);
      setSaid('Copied');
    } catch {
      setShown(true);
      setSaid('Selected: press Ctrl+C to copy');
      requestAnimationFrame(select);
    }
  };
  return (
    <div class={compact ? 'copy compact' : 'copy'} data-command={command}>
      {shown && <code ref={code} class="command">{command}</code>}
      <button type="button" class="small" onClick={copy} title={command} aria-label={`Copy ${label}: ${command}`}>
        {compact ? 'Copy pull command' : 'Copy'}
      </button>
      <span class="copied" aria-live="polite">{said}</span>
    </div>
  );
}

/**
 * A modal confirmation (the native <dialog>: it keeps focus inside, Escape cancels). Focus starts on Cancel and
 * returns to what had it when the dialog closes.
 */
export function ConfirmDialog(props: {
  title: string;
  children: ComponentChildren;
  confirmLabel: string;
  onConfirm: () => Promise<void>;
  onClose: () => void;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  const cancel = useRef<HTMLButtonElement>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const d = dialog.current!;
    d.showModal();
    cancel.current?.focus();
    const closed = () => props.onClose();
    d.addEventListener('close', closed);
    return () => {
      d.removeEventListener('close', closed);
      if (d.open) d.close();
      before?.focus?.();
    };
  }, []);
  const confirm = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await props.onConfirm();
      dialog.current?.close();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return (
    <dialog ref={dialog} class="confirm" aria-labelledby="confirm-title">
      <h2 id="confirm-title">{props.title}</h2>
      <div>{props.children}</div>
      {error !== undefined && <ErrorMessage error={error} what="this" />}
      <div class="actions">
        <button type="button" ref={cancel} onClick={() => dialog.current?.close()}>Cancel</button>
        <button type="button" class="danger" disabled={busy} onClick={confirm}>{busy ? 'Deleting…' : props.confirmLabel}</button>
      </div>
    </dialog>
  );
}

/** Keys and values (labels, annotations) as a two-column list, sorted by key. */
export function KeyValues({ values, empty }: { values: Record<string, string> | null | undefined; empty: string }) {
  const entries = Object.entries(values ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (entries.length === 0) return <p class="muted">{empty}</p>;
  return (
    <dl class="kv">
      {entries.map(([k, v]) => (
        <div class="kv-row" key={k}>
          <dt>{k}</dt>
          <dd>{String(v)}</dd>
        </div>
      ))}
    </dl>
  );
}

/** Raw JSON on request, as the text of a <pre>. */
export function RawJson({ value, label }: { value: unknown; label: string }) {
  const [open, setOpen] = useState(false);
  return (
    <div class="raw">
      <button type="button" aria-expanded={open} onClick={() => setOpen(!open)}>
        {open ? `Hide ${label}` : `Show ${label}`}
      </button>
      {open && <pre class="json" tabIndex={0} aria-label={label}>{JSON.stringify(value, null, 2)}</pre>}
    </div>
  );
}
