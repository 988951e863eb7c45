/**
 * The collector against images a real client pushed: skopeo pushes two images sharing a layer and a multi-arch
 * index to a running Wharf; one image is untagged; `wharf garbage-collect --delete-untagged` runs in its own process
 * while the server keeps running; the survivors pull back with skopeo byte-identical, and the removed image's own
 * blobs are gone.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI_PATH, startWharf } from '../../testing/harness.js';
import {
  MediaType, allBlobs, blobOf, descriptor, generateImage, generateMultiArch, writeOciLayout, type Image,
} from '../../testing/e2e/image.js';
import { dirBlob } from '../../testing/e2e/layout.js';
import { runOk, tempDir } from '../../testing/e2e/target.js';

function run(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

/** An image that shares `base`'s first layer and adds one of its own. */
function sharingImage(base: Image): Image {
  const own = generateImage({ layerCount: 1, firstLayerBytes: 32 * 1024 });
  const layers = [base.layers[0]!, own.layers[0]!];
  const manifest = blobOf(MediaType.ociManifest, Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: descriptor(own.config),
    layers: layers.map((l) => descriptor(l.blob)),
  }, null, 2)));
  return { platform: own.platform, layers, config: own.config, manifest, blobs: [own.config, ...layers.map((l) => l.blob)] };
}

test('skopeo-pushed images: untag one, collect, the shared layer and the other images pull back byte-identical', async (t) => {
  const registry = await startWharf();
  t.teardown(() => registry.stop());
  const work = await tempDir('wharf-gc-skopeo-');
  t.teardown(() => work.remove());

  const a = generateImage();
  const b = sharingImage(a);
  const multi = generateMultiArch();
  const source = join(work.path, 'source');
  await writeOciLayout(source, [
    { tag: 'a', target: a.manifest }, { tag: 'b', target: b.manifest }, { tag: 'multi', target: multi.index },
  ], [...allBlobs(a), ...allBlobs(b), ...allBlobs(multi)]);
  const skopeo = (...args: string[]) => runOk('skopeo', ['--insecure-policy', ...args]);
  const ref = (r: string) => `docker://${registry.host}/${r}`;
  for (const tag of ['a', 'b']) await skopeo('copy', '--dest-tls-verify=false', `oci:${source}:${tag}`, ref(`gc/app:${tag}`));
  await skopeo('copy', '--all', '--dest-tls-verify=false', `oci:${source}:multi`, ref('gc/multi:latest'));

  // Untag `a` (DELETE by tag), then collect with the server still running.
  t.is((await fetch(`${registry.url}/v2/gc/app/manifests/a`, { method: 'DELETE' })).status, 202);
  const config = join(work.path, 'gc.yml');
  await writeFile(config, stringify({ version: '0.1', storage: { filesystem: { rootdirectory: registry.rootDirectory } } }));
  // Wait until the newest push is older than the clock's next millisecond, so `--grace 0s` may take everything old.
  const pushedAt = Date.now();
  while (Date.now() <= pushedAt) await new Promise((r) => setTimeout(r, 5));
  const gc = await run(['garbage-collect', config, '--delete-untagged', '--grace', '0s']);
  t.is(gc.code, 0, gc.out);
  t.regex(gc.out, /manifests: \d+ marked, 1 deleted/);

  const blobStatus = async (repo: string, digest: string) => (await fetch(`${registry.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' })).status;
  t.is(await blobStatus('gc/app', a.layers[0]!.blob.digest), 200, 'shared layer kept');
  t.is(await blobStatus('gc/app', a.layers[1]!.blob.digest), 404, "a's own layer gone");
  t.is(await blobStatus('gc/app', a.config.digest), 404, "a's config gone");
  t.is((await fetch(`${registry.url}/v2/gc/app/manifests/${a.manifest.digest}`, { method: 'HEAD' })).status, 404);

  const outB = join(work.path, 'b');
  await skopeo('copy', '--src-tls-verify=false', ref('gc/app:b'), `dir:${outB}`);
  t.deepEqual(await readFile(join(outB, 'manifest.json')), b.manifest.bytes);
  for (const blob of b.blobs) t.deepEqual(await dirBlob(outB, blob.digest), blob.bytes, blob.digest);
  const outMulti = join(work.path, 'multi');
  await skopeo('copy', '--all', '--src-tls-verify=false', ref('gc/multi:latest'), `dir:${outMulti}`);
  t.deepEqual(await readFile(join(outMulti, 'manifest.json')), multi.index.bytes);
  for (const img of multi.images) {
    t.deepEqual(await readFile(join(outMulti, `${img.manifest.digest.slice('sha256:'.length)}.manifest.json`)), img.manifest.bytes);
    for (const blob of img.blobs) t.deepEqual(await dirBlob(outMulti, blob.digest), blob.bytes, blob.digest);
  }
});
