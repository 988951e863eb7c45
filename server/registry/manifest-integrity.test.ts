/**
 * A manifest is only ever served under a digest its bytes hash to, against real Wharf processes sharing one
 * filesystem root (two replicas): wrong bytes already in storage under a manifest's digest (planted by an earlier
 * race, or damaged) are replaced by an honest push rather than kept because a file of that size exists, and are
 * never served by a process that reads them from storage.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startWharf, type RunningWharf } from '../../testing/harness.js';
import * as layout from './layout.js';
import { parseDigest } from './reference.js';
import { pushBlob, sha256, waitForOutput } from '../../testing/helpers.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

let root: string;
let a: RunningWharf;
let b: RunningWharf;

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), 'wharf-manifest-integrity-'));
  [a, b] = await Promise.all([startWharf({ rootDirectory: root }), startWharf({ rootDirectory: root })]);
});

test.after.always(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  if (root) await rm(root, { recursive: true, force: true });
});

/** An image manifest with a fresh config and layer pushed to `repo`. */
async function image(repo: string): Promise<Buffer> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }));
  const layer = randomBytes(512);
  const [configDigest, layerDigest] = [await pushBlob(a.url, repo, config), await pushBlob(a.url, repo, layer)];
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length }],
  }));
}

/** Write `bytes` where storage keeps the content of `digest`, as a lost race or a damaged disk would leave them. */
async function plant(digest: string, bytes: Buffer): Promise<void> {
  const path = join(root, layout.blobDataPath(parseDigest(digest)));
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
}

/** Same length, other bytes: what a size check alone cannot tell apart. */
function forged(honest: Buffer): Buffer {
  const copy = Buffer.from(honest);
  copy[copy.length - 2] = copy[copy.length - 2] === 0x20 ? 0x09 : 0x20; // whitespace before the closing brace
  return copy;
}

test('an honest push replaces wrong bytes of the same size stored under its digest', async (t) => {
  const manifest = await image('integrity/replace');
  const digest = sha256(manifest);
  await plant(digest, forged(manifest));
  const put = await fetch(`${a.url}/v2/integrity/replace/manifests/v1`, {
    method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: manifest,
  });
  t.is(put.status, 201);
  t.is(put.headers.get('docker-content-digest'), digest);
  // The other replica has never seen these bytes: it reads them from storage.
  const got = await fetch(`${b.url}/v2/integrity/replace/manifests/${digest}`, { headers: { Accept: OCI_MANIFEST } });
  t.is(got.status, 200);
  const body = Buffer.from(await got.arrayBuffer());
  t.is(sha256(body), digest);
  t.true(body.equals(manifest));
});

test('stored bytes that do not hash to the digest are never served', async (t) => {
  const manifest = await image('integrity/damaged');
  const digest = sha256(manifest);
  const put = await fetch(`${a.url}/v2/integrity/damaged/manifests/${digest}`, {
    method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: manifest,
  });
  t.is(put.status, 201);
  await plant(digest, forged(manifest));
  for (const path of [`/v2/integrity/damaged/manifests/${digest}`]) {
    const res = await fetch(`${b.url}${path}`, { headers: { Accept: OCI_MANIFEST } });
    t.is(res.status, 404);
    t.is((await res.json() as any).errors[0].code, 'MANIFEST_UNKNOWN');
  }
  await waitForOutput(b, /does not hash to its digest/);
});
