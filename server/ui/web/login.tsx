/** `/ui/login`: the same users and passwords as the registry API. */
import { useState } from 'preact/hooks';
import { api, ApiError, type Session } from './api.js';
import { navigate } from './router.js';

/** Where to go after logging in: only a path on this site (never another origin). */
function backTo(params: URLSearchParams): string {
  const back = params.get('back') ?? '/';
  return back.startsWith('/') && !back.startsWith('//') && !back.startsWith('/\\') ? back : '/';
}

export function Login({ session, params, onLogin }: { session: Session; params: URLSearchParams; onLogin: () => Promise<void> }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  if (!session.canLogin) {
    return (
      <>
        <h1 tabIndex={-1}>Log in</h1>
        <p class="message" role="status">
          {session.authMode === 'none' ? 'This registry has no users: everyone can browse it without logging in.'
            : 'Logging in through this page is not available with this registry’s authentication; you can browse what anonymous users may pull.'}
        </p>
      </>
    );
  }
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      await api.login(username, password);
      setPassword('');
      await onLogin();
      navigate(backTo(params), true);
    } catch (err) {
      setBusy(false);
      if (err instanceof ApiError && err.status === 401) setError('The user name or password is wrong.');
      else if (err instanceof ApiError && err.status === 429) setError('Too many attempts: wait a little and try again.');
      else setError(err instanceof ApiError ? err.message : 'Logging in failed.');
    }
  };
  return (
    <>
      <h1 tabIndex={-1}>Log in</h1>
      {session.user && <p class="message" role="status">You are logged in as <strong>{session.user}</strong>.</p>}
      <form class="login" onSubmit={submit}>
        <label for="login-user">User name</label>
        <input id="login-user" name="username" autoComplete="username" required value={username} maxLength={256}
          onInput={(e) => setUsername((e.target as HTMLInputElement).value)} />
        <label for="login-password">Password</label>
        <input id="login-password" name="password" type="password" autoComplete="current-password" required value={password} maxLength={1024}
          onInput={(e) => setPassword((e.target as HTMLInputElement).value)} />
        {error && <p class="message error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>{busy ? 'Logging in…' : 'Log in'}</button>
      </form>
    </>
  );
}
