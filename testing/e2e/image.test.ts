/**
 * Checks of the test-image generator itself, with independent readers (GNU tar, zlib, skopeo's OCI layout reader),
 * so that a failure in the registry tests can be trusted to be the registry's.
 */
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  allBlobs, generateImage, generateMultiArch, randomLayer, tar, writeDockerSave, writeOciLayout,
} from './image.js';
import { sha256 } from '../helpers.js';
import { runOk, tempDir } from './target.js';

test('tar archives are read back by GNU tar with identical content', async (t) => {
  const dir = await tempDir('wharf-e2e-tar-');
  t.teardown(dir.remove);
  const odd = Buffer.from('x'.repeat(513)); // one byte past a block: exercises the padding
  const archive = join(dir.path, 'a.tar');
  await writeFile(archive, tar([
    { name: 'd' },
    { name: 'd/odd.txt', data: odd },
    { name: 'd/empty', data: Buffer.alloc(0) },
    { name: 'd/exec.sh', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
  ]));
  const listing = (await runOk('tar', ['-tvf', archive])).stdout;
  t.regex(listing, /^drwxr-xr-x root\/root +0 .* d\/$/m);
  t.regex(listing, /^-rw-r--r-- root\/root +513 .* d\/odd\.txt$/m);
  t.regex(listing, /^-rwxr-xr-x root\/root +10 .* d\/exec\.sh$/m);
  await runOk('tar', ['-xf', archive, '-C', dir.path]);
  t.true((await readFile(join(dir.path, 'd/odd.txt'))).equals(odd));
  t.is((await readFile(join(dir.path, 'd/empty'))).length, 0);
});

test('a layer blob is the gzip of the tar whose digest is the diff_id', (t) => {
  const layer = randomLayer(3, 10_000);
  t.true(gunzipSync(layer.blob.bytes).equals(layer.tar));
  t.is(layer.diffId, sha256(layer.tar));
  t.is(layer.blob.digest, sha256(layer.blob.bytes));
  t.not(layer.blob.digest, layer.diffId);
});

test('skopeo reads the generated OCI layout: single image and multi-arch index', async (t) => {
  const dir = await tempDir('wharf-e2e-layout-');
  t.teardown(dir.remove);
  const single = generateImage({ firstLayerBytes: 4096 });
  const multi = generateMultiArch();
  await writeOciLayout(dir.path, [{ tag: 'single', target: single.manifest }, { tag: 'multi', target: multi.index }],
    [...allBlobs(single), ...allBlobs(multi)]);

  const raw = await runOk('skopeo', ['--insecure-policy', 'inspect', '--raw', `oci:${dir.path}:single`]);
  t.is(raw.stdout, single.manifest.bytes.toString('utf8'));
  const config = JSON.parse((await runOk('skopeo', ['--insecure-policy', 'inspect', '--config', '--raw', `oci:${dir.path}:single`])).stdout);
  t.deepEqual(config.rootfs.diff_ids, single.layers.map((l) => l.diffId));
  const index = await runOk('skopeo', ['--insecure-policy', 'inspect', '--raw', `oci:${dir.path}:multi`]);
  t.is(index.stdout, multi.index.bytes.toString('utf8'));
  t.deepEqual(JSON.parse(index.stdout).manifests.map((m: any) => m.platform.architecture), ['amd64', 'arm64']);
});

test('the docker-save tarball names the config and uncompressed layers in manifest.json', async (t) => {
  const dir = await tempDir('wharf-e2e-save-');
  t.teardown(dir.remove);
  const image = generateImage({ firstLayerBytes: 4096 });
  const archive = join(dir.path, 'image.tar');
  await writeDockerSave(archive, image, ['e2e/x:1']);
  await runOk('tar', ['-xf', archive, '-C', dir.path]);
  const [entry] = JSON.parse(await readFile(join(dir.path, 'manifest.json'), 'utf8'));
  t.deepEqual(entry.RepoTags, ['e2e/x:1']);
  t.is(sha256(await readFile(join(dir.path, entry.Config))), image.config.digest);
  const layerDigests = await Promise.all(entry.Layers.map(async (p: string) => sha256(await readFile(join(dir.path, p)))));
  t.deepEqual(layerDigests, image.layers.map((l) => l.diffId));
});
