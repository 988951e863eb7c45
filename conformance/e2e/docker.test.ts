/**
 * Real-client end-to-end tests with the Docker engine: a private dockerd (see dockerd.ts) loads a generated
 * `docker save` tarball, pushes it to the registry, forgets it, and pulls it back. Docker recompresses layers on push,
 * so what must survive is the image ID (the config digest), the uncompressed layer content (the diff_ids) and the
 * manifest digest the push reported.
 *
 * Skipped, with a message in the test title, only when the `dockerd` binary is not installed; any other failure to
 * run the engine fails the tests.
 */
import test from 'ava';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { RunningWharf } from '../../testing/harness.js';
import { startDockerd, findExecutable, type PrivateDocker } from '../../testing/e2e/dockerd.js';
import {
  MediaType, allBlobs, generateImage, generateMultiArch, hostPlatform, writeDockerSave, writeOciLayout,
} from '../../testing/e2e/image.js';
import { runOk, startRegistry, tempDir } from '../../testing/e2e/target.js';
import { sha256 } from '../../testing/helpers.js';

const dockerd = await findExecutable('dockerd');

if (!dockerd) {
  test.skip('docker engine tests skipped: no `dockerd` binary on PATH (install the docker.io package to run them)', () => {});
} else {
  let registry: RunningWharf;
  let engine: PrivateDocker;
  let work: { path: string; remove: () => Promise<void> };

  test.before(async () => {
    work = await tempDir('wharf-e2e-docker-');
    registry = await startRegistry();
    engine = await startDockerd(dockerd);
  });

  test.after.always(async () => {
    await engine?.stop();
    await registry?.stop();
    await work?.remove();
  });

  /** The fields of `docker image inspect` these tests look at. */
  async function inspectImage(reference: string): Promise<{ Id: string; RepoDigests: string[]; Architecture: string }> {
    return JSON.parse((await engine.docker('image', 'inspect', reference)).stdout)[0];
  }

  test('docker load, push, rmi and pull round-trip an image', async (t) => {
    const image = generateImage();
    const tarball = join(work.path, 'image.tar');
    await writeDockerSave(tarball, image, ['e2e/docker:1']);

    const loaded = await engine.docker('load', '-i', tarball);
    t.regex(loaded.stdout, /Loaded image: e2e\/docker:1/);
    t.is((await inspectImage('e2e/docker:1')).Id, image.config.digest, 'image ID is the config digest');

    const remote = `${registry.host}/e2e/docker:1`;
    await engine.docker('tag', 'e2e/docker:1', remote);
    const pushed = await engine.docker('push', remote);
    const reported = /1: digest: (sha256:[0-9a-f]{64}) size: (\d+)/.exec(pushed.stdout);
    if (!reported) return t.fail(`docker push did not report a digest:\n${pushed.stdout}`);
    const [, digest, size] = reported as unknown as [string, string, string];

    // What the registry stored: a Docker schema 2 manifest with the pushed digest, the same config, and layers
    // that decompress to exactly the loaded tars.
    const res = await fetch(`${registry.url}/v2/e2e/docker/manifests/1`, { headers: { Accept: MediaType.dockerManifest } });
    t.is(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    t.is(res.headers.get('docker-content-digest'), digest);
    t.is(res.headers.get('content-type'), MediaType.dockerManifest);
    t.is(sha256(body), digest);
    t.is(body.length, Number(size));
    const manifest = JSON.parse(body.toString('utf8'));
    t.is(manifest.config.digest, image.config.digest);
    t.is(manifest.layers.length, image.layers.length);
    for (const [i, layer] of (manifest.layers as { digest: string }[]).entries()) {
      const blob = await fetch(`${registry.url}/v2/e2e/docker/blobs/${layer.digest}`);
      t.is(blob.status, 200);
      const compressed = Buffer.from(await blob.arrayBuffer());
      t.is(sha256(compressed), layer.digest);
      t.is(sha256(gunzipSync(compressed)), image.layers[i]!.diffId, `layer ${i} decompresses to the loaded tar`);
    }

    // Forget the image entirely, then pull it by tag and by digest.
    await engine.docker('rmi', '-f', image.config.digest);
    t.not((await engine.dockerMayFail('image', 'inspect', image.config.digest)).code, 0, 'image is gone after rmi');

    const pulled = await engine.docker('pull', remote);
    t.true(pulled.stdout.includes(`Digest: ${digest}`), pulled.stdout);
    const afterPull = await inspectImage(remote);
    t.is(afterPull.Id, image.config.digest);
    t.true(afterPull.RepoDigests.includes(`${registry.host}/e2e/docker@${digest}`), JSON.stringify(afterPull.RepoDigests));

    await engine.docker('rmi', '-f', image.config.digest);
    await engine.docker('pull', `${registry.host}/e2e/docker@${digest}`);
    t.is((await inspectImage(`${registry.host}/e2e/docker@${digest}`)).Id, image.config.digest);
  });

  test('docker pull resolves a multi-arch OCI index to the host platform', async (t) => {
    const multi = generateMultiArch();
    const native = multi.images.find((i) => i.platform.architecture === hostPlatform().architecture);
    if (!native) return t.fail(`the generated index has no image for this machine's architecture ${hostPlatform().architecture}`);

    const layout = join(work.path, 'multi-layout');
    await writeOciLayout(layout, [{ tag: 'multi', target: multi.index }], allBlobs(multi));
    await runOk('skopeo', ['--insecure-policy', 'copy', '--all', '--dest-tls-verify=false', `oci:${layout}:multi`, `docker://${registry.host}/e2e/docker-multi:1`]);

    const pulled = await engine.docker('pull', `${registry.host}/e2e/docker-multi:1`);
    t.true(pulled.stdout.includes(`Digest: ${multi.index.digest}`), pulled.stdout);
    const info = await inspectImage(`${registry.host}/e2e/docker-multi:1`);
    t.is(info.Id, native.config.digest, 'the host-platform image was pulled');
    t.is(info.Architecture, native.platform.architecture);
    t.true(info.RepoDigests.includes(`${registry.host}/e2e/docker-multi@${multi.index.digest}`), JSON.stringify(info.RepoDigests));
  });
}
