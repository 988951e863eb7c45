/**
 * Issue #13, finding 2: one upload session written by two processes at once must never let bytes in under a digest
 * they do not hash to, and a blob file of a digest must never stop the honest bytes from being stored.
 *
 * Real processes: two replicas (two `wharf serve` on one storage directory, each addressed directly, so the
 * interleaving is exact) and one Wharf with two workers (a connection stays on one worker; which worker holds a
 * connection is found by asking while a request of the session is in progress there).
 *
 * The attack: request A (on one process) writes the first part of its chunk and waits; request B (on the other)
 * starts appending where the stored bytes end; A writes the rest of its chunk; B writes on, into bytes A already
 * wrote. Both are answered 202. Then `PUT ?digest=<digest of A's bytes>` on A's process.
 */
import test, { type ExecutionContext } from 'ava';
import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { sharedStorage, startWharf } from '../../testing/harness.js';
import * as layout from './layout.js';
import { parseDigest } from './reference.js';
import { sha256 } from '../../testing/helpers.js';

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A keep-alive connection of its own (one socket), so every request sent through it reaches the same process. */
function connection(): Agent {
  return new Agent({ keepAlive: true, maxSockets: 1 });
}

/** One request whose body is written piece by piece (chunked), as a slow client would. */
function streamingRequest(base: string, method: string, path: string, agent: Agent, headers: Record<string, string> = {}) {
  const url = new URL(path, base);
  const req = request(url, { method, agent, headers: { 'content-type': 'application/octet-stream', ...headers } });
  const answer = new Promise<Answer>((resolve, reject) => {
    req.once('error', reject);
    req.once('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.once('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
      res.once('error', reject);
    });
  });
  answer.catch(() => {});
  return {
    answer,
    write: (chunk: Buffer) => new Promise<void>((resolve, reject) => req.write(chunk, (err) => (err ? reject(err) : resolve()))),
    end: () => {
      req.end();
      return answer;
    },
  };
}

/** A whole request with a body (or none). */
function send(base: string, method: string, path: string, agent: Agent, body?: Buffer, headers: Record<string, string> = {}) {
  const r = streamingRequest(base, method, path, agent, body ? { 'content-length': String(body.length), ...headers } : headers);
  if (body) void r.write(body);
  return r.end();
}

/** The path and query of a Location header. */
function pathOf(location: string | string[] | undefined): string {
  if (typeof location !== 'string') throw new Error('no Location header');
  const u = new URL(location, 'http://x');
  return u.pathname + u.search;
}

/** The session's stored size, as any process reports it. */
async function offsetOf(base: string, session: string): Promise<number> {
  const res = await fetch(new URL(session, base), { headers: { connection: 'close' } });
  const range = res.headers.get('range');
  if (res.status !== 204 || !range) throw new Error(`upload status: ${res.status}`);
  // `0-<last byte>`; an empty session also says 0-0, which the callers never wait for.
  return Number(range.split('-')[1]) + 1;
}

/**
 * Resolves true once the session holds `size` bytes (a write that is still in progress has reached storage), or
 * false as soon as `stop()` says to give up waiting.
 */
async function storedReaches(base: string, session: string, size: number, stop: () => boolean = () => false): Promise<boolean> {
  for (;;) {
    if (stop()) return false;
    const offset = await offsetOf(base, session);
    if (offset === size) return true;
    if (offset > size) throw new Error(`the session holds ${offset} bytes, more than ${size}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Every blob served under `digest` hashes to it: 404 is fine, other bytes are not. */
async function assertServedBytesMatch(t: ExecutionContext, bases: string[], repo: string, digest: string): Promise<number> {
  let served = 0;
  for (const base of bases) {
    const res = await fetch(`${base}/v2/${repo}/blobs/${digest}`, { headers: { connection: 'close' } });
    const body = Buffer.from(await res.arrayBuffer());
    if (res.status === 200) {
      served++;
      t.is(sha256(body), digest, `${base} serves bytes under ${digest} that do not hash to it`);
    } else {
      t.is(res.status, 404);
    }
  }
  return served;
}

const A1 = Buffer.alloc(64 * 1024, 0x61);
const A2 = Buffer.alloc(64 * 1024, 0x62);
const B_FIRST = Buffer.alloc(1, 0x78);
const B_REST = Buffer.alloc(32 * 1024 - 1, 0x78);
const HONEST = Buffer.concat([A1, A2]);

interface Process {
  base: string;
  /** A connection that reaches this process. */
  agent: Agent;
}

/**
 * Run the attack with request A on `a` and request B on the process `findB` gives once A is in progress. Whether B
 * is refused at once or writes, the PUT must commit A's digest only over A's bytes. Returns whether B was refused.
 */
async function attack(
  t: ExecutionContext,
  a: Process,
  repo: string,
  findB: (session: string) => Promise<Process>,
): Promise<{ refused: boolean }> {
  const started = await send(a.base, 'POST', `/v2/${repo}/blobs/uploads/`, a.agent);
  t.is(started.status, 202);
  const session = pathOf(started.headers.location).split('?')[0]!;

  const patchA = streamingRequest(a.base, 'PATCH', pathOf(started.headers.location), a.agent);
  await patchA.write(A1);
  await storedReaches(a.base, session, A1.length);

  const b = await findB(session);
  const patchB = streamingRequest(b.base, 'PATCH', session, b.agent);
  await patchB.write(B_FIRST);
  // b may refuse at once (416) instead of writing: then there is nothing to interleave.
  let answeredB: Answer | undefined;
  void patchB.answer.then((answer) => { answeredB = answer; });
  const refused = !(await storedReaches(a.base, session, A1.length + 1, () => answeredB !== undefined));
  if (refused) {
    t.is(answeredB!.status, 416, answeredB!.body.toString());
    await patchA.write(A2);
  } else {
    await patchA.write(A2);
    await storedReaches(a.base, session, HONEST.length);
    await patchB.write(B_REST);
    const answerB = await patchB.end();
    t.true([202, 416].includes(answerB.status), `${answerB.status} ${answerB.body.toString()}`);
  }
  const answerA = await patchA.end();
  t.is(answerA.status, 202, answerA.body.toString());

  const put = await send(a.base, 'PUT', `${session}?digest=${sha256(HONEST)}`, a.agent);
  if (refused) {
    t.is(put.status, 201, `the session holds A's bytes only: ${put.body.toString()}`);
  } else {
    t.is(put.status, 400, `the digest of A's bytes is not the digest of what storage holds: ${put.body.toString()}`);
    t.is(JSON.parse(put.body.toString()).errors[0].code, 'DIGEST_INVALID');
  }
  return { refused };
}

/** After the attack: nothing wrong is served, and an honest push of the content is served as pushed. */
async function honestPushIsServed(t: ExecutionContext, bases: string[], repo: string): Promise<void> {
  const digest = sha256(HONEST);
  await assertServedBytesMatch(t, bases, repo, digest);
  const agent = connection();
  const pushed = await send(bases[bases.length - 1]!, 'POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, agent, HONEST);
  agent.destroy();
  t.is(pushed.status, 201, pushed.body.toString());
  t.true((await assertServedBytesMatch(t, bases, repo, digest)) >= bases.length, 'every process serves the pushed bytes');
}

test('two replicas on one directory: bytes written into a session by the other replica never commit under the digest of the first', async (t) => {
  const storage = await sharedStorage(t);
  const [ra, rb] = [await storage.replica(), await storage.replica()];
  const a = { base: ra.url, agent: connection() };
  const b = { base: rb.url, agent: connection() };
  t.teardown(() => { a.agent.destroy(); b.agent.destroy(); });

  const { refused } = await attack(t, a, 'integrity/replicas', async () => b);
  t.true(refused, 'a request on another replica cannot join a write in progress');
  await honestPushIsServed(t, [ra.url, rb.url], 'integrity/replicas');
});

test('two workers: bytes written into a session by the other worker never commit under the digest of the first', async (t) => {
  const wharf = await startWharf({ env: { WHARF_WORKERS: '2' } });
  t.teardown(() => wharf.stop());
  const a = { base: wharf.url, agent: connection() };
  const agents: Agent[] = [a.agent];
  t.teardown(() => agents.forEach((x) => x.destroy()));

  /**
   * A connection on the other worker than A's PATCH, which is in progress: a chunk out of range is refused before
   * anything is written, by A's worker as busy (its own request holds the session) and by the other as out of order.
   */
  const otherWorker = async (session: string): Promise<Process> => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const agent = connection();
      agents.push(agent);
      const probe = await send(wharf.url, 'PATCH', session, agent, Buffer.from('zz'), { 'content-range': '999999-1000000' });
      t.is(probe.status, 416, probe.body.toString());
      const message = JSON.parse(probe.body.toString()).errors[0].message as string;
      if (/out of order/.test(message)) return { base: wharf.url, agent };
      t.regex(message, /another request is writing/);
    }
    throw new Error('no connection reached the second worker in 20 attempts');
  };
  const { refused } = await attack(t, a, 'integrity/workers', otherWorker);
  t.true(refused, 'a request on another worker cannot join a write in progress');
  await honestPushIsServed(t, [wharf.url, wharf.url, wharf.url, wharf.url], 'integrity/workers');
});

test('a blob file planted under a digest is replaced by the honest push, on every path a push can take', async (t) => {
  const wharf = await startWharf();
  t.teardown(() => wharf.stop());
  const honest = Buffer.from('honest layer bytes '.repeat(1000));
  const digest = sha256(honest);
  const blobFile = join(wharf.rootDirectory, layout.blobDataPath(parseDigest(digest)));
  // What a writer that won a race earlier leaves: other bytes of the same size under the digest.
  const plant = async () => {
    await mkdir(join(blobFile, '..'), { recursive: true });
    await writeFile(blobFile, Buffer.alloc(honest.length, 0x21));
  };
  const agent = connection();
  t.teardown(() => agent.destroy());
  const pushes: Array<[string, (repo: string) => Promise<Answer>]> = [
    ['monolithic POST', (repo) => send(wharf.url, 'POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, agent, honest)],
    ['POST, PATCH, PUT', async (repo) => {
      const started = await send(wharf.url, 'POST', `/v2/${repo}/blobs/uploads/`, agent);
      const patched = await send(wharf.url, 'PATCH', pathOf(started.headers.location), agent, honest);
      return send(wharf.url, 'PUT', `${pathOf(patched.headers.location).split('?')[0]}?digest=${digest}`, agent);
    }],
  ];
  for (const [label, push] of pushes) {
    await plant();
    const repo = `planted/${label.split(/\W+/).join('-').toLowerCase()}`;
    const answer = await push(repo);
    t.is(answer.status, 201, `${label}: ${answer.body.toString()}`);
    const res = await fetch(`${wharf.url}/v2/${repo}/blobs/${digest}`);
    t.is(sha256(Buffer.from(await res.arrayBuffer())), digest, `${label}: the planted bytes are still served`);
    t.deepEqual(await readFile(blobFile), honest, label);
  }
});
