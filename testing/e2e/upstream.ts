/**
 * An upstream for the mirror end-to-end tests: a Wharf with its built-in token server requiring Bearer auth the way
 * Docker Hub does (an `admin` who may push, a `puller` who may pull), and skopeo pushes into it.
 */
import { join } from 'node:path';
import { freePort, startWharf, writeHtpasswd, type RunningWharf } from '../harness.js';
import { run } from './target.js';

export const UPSTREAM_USERS = { admin: 'admin-e2e-pw', puller: 'puller-e2e-pw' };

export async function skopeo(...args: string[]) {
  return run('skopeo', ['--insecure-policy', ...args], { timeoutMs: 120_000 });
}

/** Start the upstream; its htpasswd file, token key and certificate go into `dir`. */
export async function startTokenUpstream(dir: string): Promise<RunningWharf> {
  await writeHtpasswd(join(dir, 'htpasswd'), UPSTREAM_USERS, 5);
  const port = await freePort();
  return startWharf({
    config: {
      log: { level: 'info' },
      http: { addr: `127.0.0.1:${port}` },
      auth: {
        token: { realm: `http://127.0.0.1:${port}/auth/token`, service: 'upstream-e2e', issuer: 'upstream-e2e-issuer' },
        tokenserver: { key: join(dir, 'token.key'), certificate: join(dir, 'token.crt'), htpasswd: join(dir, 'htpasswd') },
        access: {
          rules: [
            { users: ['admin'], repositories: ['**'], actions: ['*'] },
            { users: ['puller'], repositories: ['**'], actions: ['pull'] },
          ],
        },
      },
    },
  });
}

/** Push an OCI layout ref into the upstream as admin. */
export async function pushUpstream(upstream: RunningWharf, layoutDir: string, ref: string, target: string, all = false): Promise<void> {
  const r = await skopeo('copy', ...(all ? ['--all'] : []), '--dest-tls-verify=false', '--dest-creds', `admin:${UPSTREAM_USERS.admin}`, `oci:${layoutDir}:${ref}`, `docker://${upstream.host}/${target}`);
  if (r.code !== 0) throw new Error(`push ${target} failed: ${r.stderr}`);
}

/** Successful blob GETs the upstream's access log shows for repository `name`. */
export function upstreamBlobGets(upstream: RunningWharf, name: string): number {
  const re = new RegExp(`"method":"GET","path":"/v2/${name}/blobs/[^"]*"[^\\n]*"status":200`, 'g');
  return upstream.output().match(re)?.length ?? 0;
}
