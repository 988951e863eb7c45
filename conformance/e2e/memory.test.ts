/**
 * Memory tests: the server must stream blobs, never hold one in memory. A 2 GiB blob (WHARF_E2E_MEMORY_BYTES to
 * change it) is uploaded in one PATCH and downloaded again while the server process's resident set size is sampled
 * from /proc/<pid>/status; its growth over the baseline taken just before the transfer must stay under
 * MEMORY_BOUND. The bytes are generated on the fly and hashed while they are generated or received, so the test
 * process does not hold them either.
 *
 * The tests run serially against one server so that each measurement sees only its own transfer.
 */
import test, { type ExecutionContext } from 'ava';
import type { RunningWharf } from '../../testing/harness.js';
import { startRegistry } from '../../testing/e2e/target.js';
import {
  GiB, MiB, PseudoRandomStream, RssSampler, hashingGet, residentBytes, simpleRequest, streamRequest, type Response,
} from '../../testing/e2e/transfer.js';

const SIZE = Number(process.env.WHARF_E2E_MEMORY_BYTES ?? 2 * GiB);
/** Generous: a streaming server grows by a few MiB of buffers; one that buffers a blob grows by gigabytes. */
const MEMORY_BOUND = 100 * MiB;
const REPO = 'e2e/memory';

let registry: RunningWharf;
let pid: number;

test.before(async () => {
  registry = await startRegistry();
  pid = registry.process.pid!;
  // Warm up both paths (lazy module loading, JIT, first buffers) so the baselines below are steady-state.
  for (const contentLength of [true, false]) {
    const { digest } = await upload(new PseudoRandomStream(8 * MiB, 100 + Number(contentLength)), contentLength);
    await hashingGet(`${registry.url}/v2/${REPO}/blobs/${digest}`);
  }
});

test.after.always(async () => {
  await registry?.stop();
});

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

function describe(what: string, res: Response): string {
  return `${what}: ${res.status} ${JSON.stringify(res.headers)} ${res.body.slice(0, 500)}`;
}

/**
 * Uploads `stream` as one blob: POST to open a session, one PATCH streaming the whole body (with Content-Length, or
 * chunked without it), then PUT ?digest= with the digest computed while the bytes were generated. Throws with the
 * exchange quoted unless each step answers as the distribution spec says.
 */
async function upload(stream: PseudoRandomStream, withContentLength: boolean): Promise<{ digest: string; patch: Response }> {
  const start = await simpleRequest('POST', `${registry.url}/v2/${REPO}/blobs/uploads/`);
  if (start.status !== 202 || !start.headers.location) throw new Error(describe(`POST /v2/${REPO}/blobs/uploads/ expected 202 with Location`, start));
  const session = new URL(start.headers.location, registry.url).href;

  const patch = await streamRequest('PATCH', session, stream, { 'Content-Type': 'application/octet-stream' },
    withContentLength ? stream.size : undefined);
  if (patch.status !== 202 || !patch.headers.location) throw new Error(describe(`PATCH ${session} expected 202 with Location`, patch));

  const finish = new URL(patch.headers.location, registry.url);
  finish.searchParams.set('digest', stream.digest);
  const put = await simpleRequest('PUT', finish.href);
  if (put.status !== 201) throw new Error(describe(`PUT ${finish.href} expected 201`, put));
  if (put.headers['docker-content-digest'] !== stream.digest) {
    throw new Error(describe(`PUT ${finish.href} expected Docker-Content-Digest ${stream.digest}`, put));
  }
  return { digest: stream.digest, patch };
}

/** Runs `transfer` while sampling the server's RSS; asserts the growth bound and that sampling really happened. */
async function measured<T>(t: ExecutionContext, what: string, transfer: () => Promise<T>): Promise<T> {
  const baseline = await residentBytes(pid);
  const sampler = new RssSampler(pid).start();
  const started = Date.now();
  let result: T;
  try {
    result = await transfer();
  } finally {
    await sampler.stop();
  }
  const growth = sampler.peak - baseline;
  t.log(`${what}: ${mib(SIZE)} in ${((Date.now() - started) / 1000).toFixed(1)} s; server RSS baseline ${mib(baseline)}, ` +
    `peak ${mib(sampler.peak)} (+${mib(growth)}), ${sampler.samples} samples`);
  t.true(sampler.samples >= 10, `only ${sampler.samples} RSS samples were taken during the ${what}`);
  t.true(growth < MEMORY_BOUND, `server RSS grew by ${mib(growth)} during the ${what} (bound ${mib(MEMORY_BOUND)})`);
  return result;
}

test.serial('a large blob streams in with Content-Length and out again without the server holding it', async (t) => {
  const { digest, patch } = await measured(t, 'upload (PATCH with Content-Length)', () => upload(new PseudoRandomStream(SIZE, 1), true));
  t.is(patch.headers.range, `0-${SIZE - 1}`, 'PATCH reports the whole body as received');

  const download = await measured(t, 'download', () => hashingGet(`${registry.url}/v2/${REPO}/blobs/${digest}`));
  t.is(download.status, 200);
  t.is(download.headers['content-length'], String(SIZE));
  t.is(download.headers['docker-content-digest'], digest);
  t.is(download.bytes, SIZE);
  t.is(download.digest, digest, 'downloaded bytes hash to the blob digest');
});

test.serial('a large blob streams in with a chunked PATCH and no Content-Length, as docker sends it', async (t) => {
  const { digest, patch } = await measured(t, 'upload (chunked PATCH)', () => upload(new PseudoRandomStream(SIZE, 2), false));
  t.is(patch.headers.range, `0-${SIZE - 1}`, 'PATCH reports the whole body as received');

  const head = await simpleRequest('HEAD', `${registry.url}/v2/${REPO}/blobs/${digest}`);
  t.is(head.status, 200);
  t.is(head.headers['content-length'], String(SIZE));
  t.is(head.headers['docker-content-digest'], digest);
});
