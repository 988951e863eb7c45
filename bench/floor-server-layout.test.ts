/**
 * The floor server's `layout` mode does on disk what a durable push into registry:2's storage layout must: the
 * session's folder, the blob renamed into the content store, the repository's link written and flushed, the
 * session removed; and nothing for a digest that does not match. Starts a process (the floor server): not in the
 * unit set.
 */
import test from 'ava';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pushMonolithic, pushStreamed, sha256 } from './client.js';
import { startServer, type BenchServer } from './servers.js';

const V2 = join('docker', 'registry', 'v2');

let server: BenchServer;
let work: string;
let root: string;
let url: string;
test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'floor-layout-test-'));
  server = await startServer('floor', { tmp: work, floorMode: 'layout' });
  root = server.rootDirectory;
  url = server.url;
});
test.after.always(async () => {
  await server?.stop();
  await rm(work, { recursive: true, force: true });
});

const hexOf = (digest: string) => digest.slice('sha256:'.length);

test('a push leaves the blob in the content store and the link in the repository, and no session', async (t) => {
  const content = Buffer.alloc(1_500_000, 7);
  const path = join(work, 'mono.bin');
  await writeFile(path, content);
  const digest = sha256(content);
  await pushMonolithic(url, 'floor/mono', path, content.length, digest);
  const hex = hexOf(digest);
  t.deepEqual(await readFile(join(root, V2, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')), content);
  t.is(await readFile(join(root, V2, 'repositories', 'floor', 'mono', '_layers', 'sha256', hex, 'link'), 'utf8'), digest);
  t.deepEqual(await readdir(join(root, V2, 'repositories', 'floor', 'mono', '_uploads')), [], 'the session folder is gone');
  t.deepEqual(await readdir(join(root, V2, 'repositories', 'floor', 'mono', '_layers', 'sha256', hex)), ['link'], 'no temporary link left');
  // And it reads back by digest.
  const got = await fetch(`${url}/v2/floor/mono/blobs/${digest}`);
  t.true(Buffer.from(await got.arrayBuffer()).equals(content));
});

test('a streamed PATCH push lands the same way; a wrong digest links nothing', async (t) => {
  const content = Buffer.alloc(700_000, 3);
  const path = join(work, 'streamed.bin');
  await writeFile(path, content);
  await pushStreamed(url, 'floor/streamed', path, sha256(content));
  const hex = hexOf(sha256(content));
  t.is(await readFile(join(root, V2, 'repositories', 'floor', 'streamed', '_layers', 'sha256', hex, 'link'), 'utf8'), sha256(content));

  const wrong = sha256(Buffer.from('not these bytes'));
  await t.throwsAsync(pushStreamed(url, 'floor/wrong', path, wrong), { message: /PUT blob: 400/ });
  const layers = await readdir(join(root, V2, 'repositories', 'floor', 'wrong', '_layers')).catch(() => []);
  t.deepEqual(layers, [], 'no link for a digest that does not match');
});

test('a repository name that is not one is refused before anything is made on disk', async (t) => {
  for (const name of ['floor/..', 'Floor/upper', 'floor//x']) {
    const res = await fetch(`${url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
    t.true(res.status === 400 || res.status === 404, `${name}: ${res.status}`);
  }
  // The tests of this file run at once: the folder exists only once some push made it.
  const repositories = await readdir(join(root, V2, 'repositories')).catch(() => [] as string[]);
  t.false(repositories.includes('Floor'));
});
