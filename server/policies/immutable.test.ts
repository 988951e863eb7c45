/**
 * Immutable tags in process, over a real filesystem tree (two LocalRegistry instances over one root stand for two
 * replicas): moves and deletes refused with the rule named, same-digest re-pushes accepted, the exclusive create
 * deciding a race to a new tag, both orders of a delete by digest racing a push that sets an immutable tag (forced
 * by a driver that runs the other side at the worst moment), a reload, and the mirror keeping a cached immutable tag.
 */
import test from 'ava';
import pino from 'pino';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { parseConfig } from '../config/load.js';
import { errorResponse } from '../http/errors.js';
import { Mirror } from '../proxy/mirror.js';
import { RegistryError } from '../registry/errors.js';
import * as layout from '../registry/layout.js';
import { digestOf, parseDigest, parseReference } from '../registry/reference.js';
import { LocalRegistry } from '../registry/registry.js';
import { fixture, OCI_MANIFEST, pullsCompletely, pushImage, pushIndex, randomBlob, type Fixture } from '../../testing/gc-helpers.js';
import { Policies } from './rules.js';

const RULES = `policies:\n  immutabletags:\n    - repositories: ['release/**']\n      tags: ['v*']\n`;
const RULE_NAME = 'policies.immutabletags[0] (release/**; tags v*)';

function policiesOf(yaml: string): Policies {
  return new Policies(parseConfig(`version: 0.1\nstorage: inmemory\n${yaml}`, {}, 'x').config);
}

async function setup(t: { teardown(fn: () => Promise<void>): void }, yaml = RULES): Promise<Fixture & { policies: Policies }> {
  const policies = policiesOf(yaml);
  const f = await fixture({ policies });
  t.teardown(f.remove);
  return { ...f, policies };
}

async function denied(t: any, p: Promise<unknown>): Promise<RegistryError> {
  const err: RegistryError = await t.throwsAsync(p, { instanceOf: RegistryError });
  t.is(err.code, 'DENIED');
  t.is(errorResponse(err).status, 403);
  return err;
}

/** An image's manifest bytes pushed by digest (untagged); its digest. */
async function untagged(f: Fixture, repo: string) {
  const img = await pushImage(f.registry, repo, undefined, [randomBlob()]);
  const bytes = (await f.registry.manifests.get(repo, parseReference(img.manifest.digest))).content;
  return { digest: img.manifest.digest, bytes };
}

test('an immutable tag is not moved: DENIED naming the rule with both digests; the same digest again is fine', async (t) => {
  const f = await setup(t);
  const first = await pushImage(f.registry, 'release/app', 'v1', [randomBlob()]);
  const other = await untagged(f, 'release/app');

  const err = await denied(t, f.registry.manifests.put('release/app', parseReference('v1'), other.bytes, OCI_MANIFEST));
  t.true(err.message.includes(RULE_NAME), err.message);
  t.deepEqual(err.detail, { rule: RULE_NAME, tag: 'v1', current: first.manifest.digest, attempted: other.digest });
  t.is((await f.registry.manifests.resolveTag('release/app', 'v1'))?.value, first.manifest.digest);

  // By digest with ?tag=: refused as well, and the other tag of the same request is not set either.
  await denied(t, f.registry.manifests.put('release/app', parseReference(other.digest), other.bytes, OCI_MANIFEST, ['v1', 'latest']));
  t.is(await f.registry.manifests.resolveTag('release/app', 'latest'), undefined);

  // Re-pushing the same manifest, by tag and by digest with ?tag=, succeeds (docker/skopeo re-push).
  const same = (await f.registry.manifests.get('release/app', parseReference('v1'))).content;
  await f.registry.manifests.put('release/app', parseReference('v1'), same, OCI_MANIFEST);
  await f.registry.manifests.put('release/app', parseReference(first.manifest.digest), same, OCI_MANIFEST, ['v1']);
  t.is((await f.registry.manifests.resolveTag('release/app', 'v1'))?.value, first.manifest.digest);

  // Tags and repositories no rule covers move as before.
  await pushImage(f.registry, 'release/app', 'latest', [randomBlob()]);
  await pushImage(f.registry, 'release/app', 'latest', [randomBlob()]);
  await pushImage(f.registry, 'other/app', 'v1', [randomBlob()]);
  await pushImage(f.registry, 'other/app', 'v1', [randomBlob()]);
  t.pass();
});

test('an immutable tag is not deleted, nor the manifest it names; nothing is removed by the refusal', async (t) => {
  const f = await setup(t);
  const img = await pushImage(f.registry, 'release/app', 'v1', [randomBlob()]);
  const digest = parseDigest(img.manifest.digest);
  await f.registry.manifests.tag('release/app', 'latest', digest);

  const byTag = await denied(t, f.registry.manifests.delete('release/app', parseReference('v1')));
  t.true(byTag.message.includes(RULE_NAME));
  t.deepEqual(byTag.detail, { rule: RULE_NAME, tag: 'v1', current: img.manifest.digest });

  const byDigest = await denied(t, f.registry.manifests.delete('release/app', parseReference(img.manifest.digest)));
  t.true(byDigest.message.includes('v1') && byDigest.message.includes(RULE_NAME), byDigest.message);
  t.deepEqual(byDigest.detail, { digest: img.manifest.digest, tags: [{ tag: 'v1', rule: RULE_NAME }] });
  t.is((await f.registry.manifests.resolveTag('release/app', 'latest'))?.value, img.manifest.digest, 'the mutable tag is kept too');
  t.true(await pullsCompletely(f.registry, 'release/app', 'v1'));

  // A manifest no immutable tag names is deleted as before, with its mutable tags.
  const other = await pushImage(f.registry, 'release/app', 'dev', [randomBlob()]);
  await f.registry.manifests.delete('release/app', parseReference(other.manifest.digest));
  t.is(await f.registry.manifests.resolveTag('release/app', 'dev'), undefined);
});

test('two replicas racing to set a new immutable tag to different manifests: exactly one wins, both see it', async (t) => {
  const f = await setup(t);
  const b = new LocalRegistry(f.driver, { policies: f.policies });
  for (let round = 0; round < 15; round++) {
    const one = await untagged(f, 'release/app');
    const two = await untagged(f, 'release/app');
    const tagName = `v${round}`;
    const tag = parseReference(tagName);
    const results = await Promise.allSettled([
      f.registry.manifests.put('release/app', tag, one.bytes, OCI_MANIFEST),
      b.manifests.put('release/app', tag, two.bytes, OCI_MANIFEST),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    t.is(won.length, 1, `round ${round}: one winner`);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    t.is((lost.reason as RegistryError).code, 'DENIED');
    const winner = results[0]!.status === 'fulfilled' ? one.digest : two.digest;
    t.is((await f.registry.manifests.resolveTag('release/app', tagName))?.value, winner);
    t.is((await b.manifests.get('release/app', tag)).digest, winner);
    // The loser left no history entry under the tag.
    const loser = parseDigest(winner === one.digest ? two.digest : one.digest);
    t.is(await f.driver.stat(layout.tagIndexLinkPath('release/app', tagName, loser)).catch(() => undefined), undefined);
  }
});

test('the loser of the exclusive create waits for the winner\'s link to be written: DENIED, not an error', async (t) => {
  const f = await setup(t);
  const first = await untagged(f, 'release/app');
  const other = await untagged(f, 'release/app');
  // The winner between its create and its write: the filesystem creates the link empty and writes it just after.
  const link = join(f.root, layout.tagCurrentLinkPath('release/app', 'v9'));
  await mkdir(dirname(link), { recursive: true });
  await writeFile(link, '');
  const writes = (async () => {
    await new Promise((resolve) => setTimeout(resolve, 150));
    await writeFile(link, first.digest);
  })();
  await denied(t, f.registry.manifests.put('release/app', parseReference('v9'), other.bytes, OCI_MANIFEST));
  await writes;
  t.is((await f.registry.manifests.resolveTag('release/app', 'v9'))?.value, first.digest);
});

/** A driver that runs `hook` once, just before the first call of `method` on a path for which `when` holds. */
function interceptOnce(driver: StorageDriver, method: 'delete' | 'putContentIfAbsent', when: (path: string) => boolean, hook: () => Promise<void>): StorageDriver {
  let fired = false;
  return new Proxy(driver, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop !== method || typeof value !== 'function') return typeof value === 'function' ? value.bind(target) : value;
      return async (path: string, ...rest: unknown[]) => {
        if (!fired && when(path)) {
          fired = true;
          await hook();
        }
        return (value as (...a: unknown[]) => unknown).call(target, path, ...rest);
      };
    },
  });
}

test('delete by digest vs push setting an immutable tag, push lands after the delete looked: the revision is restored, the delete is DENIED', async (t) => {
  const f = await setup(t);
  const m = await untagged(f, 'release/app');
  const digest = parseDigest(m.digest);
  const pusher = new LocalRegistry(f.driver, { policies: f.policies });
  // The deleting replica: just before it removes the revision (after its look for immutable tags), the push runs.
  const deleter = new LocalRegistry(interceptOnce(f.driver, 'delete', (p) => p === layout.revisionDir('release/app', digest), async () => {
    await pusher.manifests.put('release/app', parseReference('v1'), m.bytes, OCI_MANIFEST);
  }), { policies: f.policies });

  const err = await denied(t, deleter.manifests.delete('release/app', parseReference(m.digest)));
  t.deepEqual(err.detail, { digest: m.digest, tags: [{ tag: 'v1', rule: RULE_NAME }] });
  t.is((await f.registry.manifests.resolveTag('release/app', 'v1'))?.value, m.digest, 'the immutable tag is kept');
  t.true(await f.registry.manifests.hasRevision('release/app', digest), 'and the manifest it names exists');
  t.true(await pullsCompletely(f.registry, 'release/app', 'v1'));
});

test('delete by digest vs push setting an immutable tag, the whole delete runs between the push\'s revision and tag: the push restores the revision', async (t) => {
  const f = await setup(t);
  const m = await untagged(f, 'release/app');
  const digest = parseDigest(m.digest);
  const deleter = new LocalRegistry(f.driver, { policies: f.policies });
  let deleted = false;
  const pusher = new LocalRegistry(interceptOnce(f.driver, 'putContentIfAbsent', (p) => p === layout.tagCurrentLinkPath('release/app', 'v1'), async () => {
    await deleter.manifests.delete('release/app', parseReference(m.digest));
    deleted = !(await f.registry.manifests.hasRevision('release/app', digest));
  }), { policies: f.policies });

  await pusher.manifests.put('release/app', parseReference('v1'), m.bytes, OCI_MANIFEST);
  t.true(deleted, 'the delete went through before the tag was set');
  t.is((await f.registry.manifests.resolveTag('release/app', 'v1'))?.value, m.digest);
  t.true(await f.registry.manifests.hasRevision('release/app', digest), 'the push wrote the revision back');
  t.true(await pullsCompletely(f.registry, 'release/app', 'v1'));
});

test('delete by digest racing pushes of immutable tags on another replica never leaves a tag without its manifest', async (t) => {
  const f = await setup(t);
  const b = new LocalRegistry(f.driver, { policies: f.policies });
  for (let round = 0; round < 20; round++) {
    const m = await untagged(f, 'release/app');
    const tag = `v${round}`;
    const [del, push] = await Promise.allSettled([
      f.registry.manifests.delete('release/app', parseReference(m.digest)),
      b.manifests.put('release/app', parseReference(tag), m.bytes, OCI_MANIFEST),
    ]);
    t.is(push.status, 'fulfilled', `round ${round}: the push succeeds`);
    if (del.status === 'rejected') t.is((del.reason as RegistryError).code, 'DENIED', String((del.reason as Error).stack));
    t.is((await f.registry.manifests.resolveTag('release/app', tag))?.value, m.digest, `round ${round}: the tag is there`);
    t.true(await f.registry.manifests.hasRevision('release/app', parseDigest(m.digest)), `round ${round}: with its manifest`);
  }
});

test('a rule added by a reload covers existing tags from the next request on', async (t) => {
  const f = await setup(t, '');
  const img = await pushImage(f.registry, 'release/app', 'v1', [randomBlob()]);
  const other = await untagged(f, 'release/app');
  f.policies.reload(parseConfig(`version: 0.1\nstorage: inmemory\n${RULES}`, {}, 'x').config);
  await denied(t, f.registry.manifests.put('release/app', parseReference('v1'), other.bytes, OCI_MANIFEST));
  await denied(t, f.registry.manifests.delete('release/app', parseReference('v1')));
  t.is((await f.registry.manifests.resolveTag('release/app', 'v1'))?.value, img.manifest.digest);
  f.policies.reload(parseConfig('version: 0.1\nstorage: inmemory\n', {}, 'x').config);
  await f.registry.manifests.put('release/app', parseReference('v1'), other.bytes, OCI_MANIFEST);
  t.is((await f.registry.manifests.resolveTag('release/app', 'v1'))?.value, other.digest, 'and a rule removed frees it');
});

test('the mirror serves a cached immutable tag that upstream moved, and warns once', async (t) => {
  const manifestOf = (n: number) => Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(Buffer.from('{}')), size: 2 }, layers: [], annotations: { n: String(n) },
  }));
  let upstream = manifestOf(1);
  const fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const path = new URL(String(input)).pathname;
    const head = init?.method === 'HEAD';
    if (path === '/v2/release/app/manifests/v1' || path === '/v2/release/app/manifests/latest') {
      return new Response(head ? null : new Uint8Array(upstream), { headers: { 'Content-Type': OCI_MANIFEST, 'Docker-Content-Digest': digestOf(upstream), 'Content-Length': String(upstream.length) } });
    }
    return new Response(null, { status: 404 });
  };
  const { config } = parseConfig(`version: 0.1\nstorage: inmemory\nproxy: {remoteurl: "http://127.0.0.1:9"}\n${RULES}`, {}, 'x');
  const f = await fixture({ policies: new Policies(config) });
  t.teardown(f.remove);
  const lines: { msg: string }[] = [];
  const logger = pino({ level: 'warn' }, new Writable({ write(chunk, _e, cb) { lines.push(JSON.parse(String(chunk))); cb(); } }));
  const mirror = new Mirror(config.proxy!, f.registry, logger, { manifestMaxSize: 1 << 20, fetch });

  const first = digestOf(manifestOf(1));
  t.is((await mirror.getManifest('release/app', parseReference('v1'))).digest, first);
  t.is((await mirror.getManifest('release/app', parseReference('latest'))).digest, first);
  upstream = manifestOf(2);
  for (let i = 0; i < 3; i++) t.is((await mirror.getManifest('release/app', parseReference('v1'))).digest, first, 'the cached manifest is served');
  t.is((await mirror.getManifest('release/app', parseReference('latest'))).digest, digestOf(upstream), 'a mutable tag follows upstream');
  t.is(lines.filter((l) => l.msg.includes('immutable')).length, 1, 'one warning');
});

test('the manifests an index lists are protected while an immutable tag names the index, across a racing delete too', async (t) => {
  const f = await setup(t);
  const amd = await pushImage(f.registry, 'release/app', undefined, [randomBlob()]);
  const arm = await pushImage(f.registry, 'release/app', undefined, [randomBlob()]);
  const index = await pushIndex(f.registry, 'release/app', 'v1', [amd.manifest, arm.manifest]);
  const err = await denied(t, f.registry.manifests.delete('release/app', parseReference(amd.manifest.digest)));
  t.deepEqual(err.detail, { digest: amd.manifest.digest, tags: [{ tag: 'v1', rule: RULE_NAME, index: index.digest }] });
  t.true(err.message.includes(index.digest));
  t.true(await f.registry.manifests.hasRevision('release/app', parseDigest(amd.manifest.digest)));

  // A child deleted by another replica after the index push checked its children, before the tag was set: the
  // push writes the child's revision back.
  const x = await pushImage(f.registry, 'release/app', undefined, [randomBlob()]);
  const y = await pushImage(f.registry, 'release/app', undefined, [randomBlob()]);
  const deleter = new LocalRegistry(f.driver, { policies: f.policies });
  const pusher = new LocalRegistry(interceptOnce(f.driver, 'putContentIfAbsent', (p) => p === layout.tagCurrentLinkPath('release/app', 'v2'), async () => {
    await deleter.manifests.delete('release/app', parseReference(x.manifest.digest));
  }), { policies: f.policies });
  await pushIndex(pusher, 'release/app', 'v2', [x.manifest, y.manifest]);
  t.true(await f.registry.manifests.hasRevision('release/app', parseDigest(x.manifest.digest)), 'the child is back');
  t.true(await pullsCompletely(f.registry, 'release/app', 'v2'));
});
