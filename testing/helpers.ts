/**
 * The small helpers the tests share: digests, monolithic blob pushes over HTTP and polling on a condition.
 * Test-only (testing/ is not part of the product build).
 */
import { createHash } from 'node:crypto';

/** The OCI digest (`sha256:<hex>`) of some bytes. */
export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/**
 * A monolithic blob upload (`POST /v2/<repo>/blobs/uploads/?digest=`) with `data` as the body; returns the response
 * for the caller to inspect. `headers` are added (for instance Authorization) and may replace the Content-Type.
 */
export function postBlob(base: string, repo: string, data: Uint8Array, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${sha256(data)}`, {
    method: 'POST',
    body: data,
    headers: { 'Content-Type': 'application/octet-stream', ...headers },
  });
}

/** Pushes `data` as a blob of `repo` in one request and returns its digest; throws unless the registry answers 201. */
export async function pushBlob(base: string, repo: string, data: Uint8Array, headers: Record<string, string> = {}): Promise<string> {
  const res = await postBlob(base, repo, data, headers);
  const body = await res.text();
  if (res.status !== 201) throw new Error(`blob push to ${repo} answered ${res.status}: ${body}`);
  return sha256(data);
}

/**
 * Wait until a server's output holds `count` matches of `pattern` (at least): a server writes the log lines of a turn
 * at its end (server/logging.ts), so a line may reach the output just after the answer it describes.
 */
export async function waitForOutput(server: { output(): string }, pattern: RegExp | string, count = 1): Promise<number> {
  const matches = () => {
    const text = server.output();
    return typeof pattern === 'string' ? text.split(pattern).length - 1 : (text.match(new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`)) ?? []).length;
  };
  return waitFor(`${count} × ${String(pattern)} in the output`, async () => (matches() >= count ? matches() : undefined), 10_000, 20);
}

/** Polls `condition` every `intervalMs` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, condition: () => Promise<T | undefined>, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
