import test from 'ava';
import { ifExists, type StorageDriver } from '../../storage-drivers/driver.js';
import { createDriver } from '../../storage-drivers/index.js';
import { sha256 } from '../../testing/helpers.js';
import * as layout from './layout.js';
import { parseDigest, type Digest } from './reference.js';
import {
  BLOB_PAGE, blobContent, forEachLimited, isLinked, lastPullRecords, listBlobs, listRepositories, removeEmptyBlobFolders,
  removeEmptyLastPullFolders, removeEmptyParents, removeEmptyRepository, removeEmptyTree, removeTag, repositoryRelativePath,
  scanRepository, tagLink,
} from './scan.js';

const digestOf = (text: string): Digest => parseDigest(sha256(text));
const exists = async (driver: StorageDriver, path: string) => (await ifExists(driver.stat(path))) !== undefined;
const settle = () => new Promise((r) => setImmediate(r));

test('listRepositories names every folder holding _layers or _manifests, nested ones too, and nothing else', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  t.deepEqual(await names(driver), [], 'no repositories folder yet');
  const d = digestOf('x');
  await driver.putContent(layout.layerLinkPath('solo', d), d.value);
  await driver.putContent(layout.revisionLinkPath('team/app', d), d.value);
  await driver.putContent(layout.layerLinkPath('team/app', d), d.value);
  await driver.putContent(layout.revisionLinkPath('team/app/sub', d), d.value);
  await driver.putContent(layout.uploadStartedAtPath('uploads-only', 'u1'), 'x');
  t.deepEqual(await names(driver), ['solo', 'team/app', 'team/app/sub']);
});

async function names(driver: StorageDriver): Promise<string[]> {
  const out: string[] = [];
  for await (const name of listRepositories(driver)) out.push(name);
  return out.sort();
}

test('scanRepository reads tags, revisions, layer links, referrers and uploads of one repository only', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const [m, layer, sig, other] = ['manifest', 'layer', 'signature', 'other'].map(digestOf) as [Digest, Digest, Digest, Digest];
  await driver.putContent(layout.revisionLinkPath('r', m), m.value);
  await driver.putContent(layout.revisionLinkPath('r', sig), sig.value);
  await driver.putContent(layout.tagCurrentLinkPath('r', 'v1'), `${m.value}\n`);
  await driver.putContent(layout.tagIndexLinkPath('r', 'v1', m), m.value);
  await driver.putContent(layout.tagCurrentLinkPath('r', 'broken'), 'not a digest');
  await driver.putContent(layout.layerLinkPath('r', layer), layer.value);
  await driver.putContent(`${layout.layersPath('r')}/sha256/nothex/link`, layer.value);
  await driver.putContent(layout.referrerLinkPath('r', m, sig), sig.value);
  await driver.putContent(layout.uploadStartedAtPath('r', 'u1'), 'x');
  await driver.putContent(layout.uploadStartedAtPath('r', 'u2'), 'x');
  await driver.putContent(layout.layerLinkPath('r/nested', other), other.value);

  const scan = await scanRepository(driver, 'r');
  t.is(scan.name, 'r');
  t.deepEqual([...scan.tags], [['v1', m.value]], 'an unreadable tag link is no tag');
  t.deepEqual([...scan.revisions.keys()].sort(), [m.value, sig.value].sort());
  t.deepEqual([...scan.layers.keys()], [layer.value], 'a link under a name that is no digest is skipped, nested repositories too');
  t.deepEqual([...scan.referrers.get(m.value)!.keys()], [sig.value]);
  t.is(scan.uploads, 2);

  const revision = scan.revisions.get(m.value)!;
  t.is(revision.path, layout.revisionLinkPath('r', m));
  t.is(revision.keep, layout.manifestsPath('r'));
  t.is(revision.mtime, (await driver.stat(revision.path)).modTime.getTime());
  t.is(scan.layers.get(layer.value)!.keep, layout.layersPath('r'));
  t.is(scan.referrers.get(m.value)!.get(sig.value)!.keep, layout.referrersRoot('r'));
  t.is(repositoryRelativePath('r', scan.layers.get(layer.value)!.path), `_layers/sha256/${layer.hex}/link`);

  const empty = await scanRepository(driver, 'absent');
  t.deepEqual([empty.tags.size, empty.revisions.size, empty.layers.size, empty.referrers.size, empty.uploads], [0, 0, 0, 0, 0]);
});

test('tagLink, removeTag and isLinked', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const [m, layer, none] = ['m', 'l', 'n'].map(digestOf) as [Digest, Digest, Digest];
  await driver.putContent(layout.revisionLinkPath('r', m), m.value);
  await driver.putContent(layout.layerLinkPath('r', layer), layer.value);
  await driver.putContent(layout.tagCurrentLinkPath('r', 'v1'), m.value);
  await driver.putContent(layout.tagIndexLinkPath('r', 'v1', m), m.value);

  const link = await tagLink(driver, 'r', 'v1');
  t.is(link?.path, layout.tagCurrentLinkPath('r', 'v1'));
  t.is(link?.mtime, (await driver.stat(layout.tagCurrentLinkPath('r', 'v1'))).modTime.getTime());
  t.is(await tagLink(driver, 'r', 'v2'), undefined);
  await removeTag(driver, 'r', 'v1');
  t.false(await exists(driver, layout.tagPath('r', 'v1')), 'the whole tag folder goes');
  await t.notThrowsAsync(removeTag(driver, 'r', 'v1'), 'a tag already gone is no error');

  t.true(await isLinked(driver, 'r', m.value), 'a revision');
  t.true(await isLinked(driver, 'r', layer.value), 'a layer');
  t.false(await isLinked(driver, 'r', none.value));
  t.false(await isLinked(driver, 'r', 'not-a-digest'));
});

test('removeEmptyRepository removes what is left of an emptied repository, its namespace folders and nothing else', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const d = digestOf('x');
  // ns/app: links deleted, empty folders left, a stray file in an old tag's index, no upload session.
  await driver.putContent(layout.layerLinkPath('ns/app', d), d.value);
  await driver.putContent(layout.tagIndexLinkPath('ns/app', 'old', d), d.value);
  await driver.putContent(layout.referrerLinkPath('ns/app', d, d), d.value);
  await driver.delete(layout.layerLinkPath('ns/app', d));
  await driver.delete(layout.referrerLinkPath('ns/app', d, d));
  await driver.putContent(layout.uploadStartedAtPath('ns/app', 'u'), 'x');
  await driver.delete(layout.uploadDir('ns/app', 'u'));

  t.false(await removeEmptyRepository(driver, 'ns/app', async () => false), 'mayRemove says no');
  t.true(await exists(driver, layout.manifestsPath('ns/app')), 'then nothing is removed');

  t.true(await removeEmptyRepository(driver, 'ns/app', async () => true));
  t.false(await exists(driver, `${layout.REPOSITORIES_ROOT}/ns`), 'the repository and its emptied namespace folder are gone');
  t.true(await exists(driver, layout.REPOSITORIES_ROOT), 'the repositories folder stays');

  // keep: a nested repository below it, and an upload session in it.
  await driver.putContent(layout.layerLinkPath('keep', d), d.value);
  await driver.delete(layout.layerLinkPath('keep', d));
  await driver.putContent(layout.uploadStartedAtPath('keep', 'u'), 'x');
  await driver.putContent(layout.layerLinkPath('keep/nested', d), d.value);
  t.true(await removeEmptyRepository(driver, 'keep', async () => true));
  t.false(await exists(driver, layout.layersPath('keep')));
  t.true(await exists(driver, layout.uploadStartedAtPath('keep', 'u')), 'an upload session is never removed');
  t.true(await exists(driver, layout.layerLinkPath('keep/nested', d)), 'a nested repository is untouched');
});

/** `count` blob folders under `sha256/<prefix>`, named after made-up hex digests (listBlobs never reads the bytes). */
async function plantBlobs(driver: StorageDriver, prefix: string, count: number): Promise<string[]> {
  const digests: string[] = [];
  for (let i = 0; i < count; i++) {
    const d = parseDigest(`sha256:${prefix}${i.toString(16).padStart(62, '0')}`);
    await driver.putContent(layout.blobDataPath(d), `blob ${i}`);
    digests.push(d.value);
  }
  return digests;
}

test('listBlobs yields every stored blob, a page at a time, and reports a blob folder without data', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  t.deepEqual(await collect(driver), [], 'no blobs folder yet');
  const planted = [...(await plantBlobs(driver, 'ab', BLOB_PAGE + 44)), ...(await plantBlobs(driver, 'cd', 3))];
  const noDataHex = `ef${'1'.repeat(62)}`;
  await driver.putContent(`${layout.BLOBS_ROOT}/sha256/ef/${noDataHex}/leftover`, 'x');
  await driver.delete(`${layout.BLOBS_ROOT}/sha256/ef/${noDataHex}/leftover`);
  await driver.putContent(`${layout.BLOBS_ROOT}/sha256/ef/not-a-digest/data`, 'x');

  const noData: string[] = [];
  const pages: number[] = [];
  const seen: string[] = [];
  for await (const page of listBlobs(driver, 4, async (folder) => void noData.push(folder))) {
    pages.push(page.length);
    for (const b of page) {
      seen.push(b.digest);
      const info = await driver.stat(b.path);
      t.deepEqual([b.size, b.modTime.getTime()], [info.size, info.modTime.getTime()]);
      t.is(b.path, layout.blobDataPath(parseDigest(b.digest)));
      t.is(b.keep, layout.parentOf(layout.parentOf(b.path)), 'keep is the <xx> folder');
    }
  }
  t.deepEqual(pages, [BLOB_PAGE, 44, 3], 'at most one page per listing step');
  t.deepEqual(seen.sort(), planted.sort());
  t.deepEqual(noData, [`${layout.BLOBS_ROOT}/sha256/ef/${noDataHex}`]);
});

async function collect(driver: StorageDriver): Promise<string[]> {
  const out: string[] = [];
  for await (const page of listBlobs(driver, 2)) out.push(...page.map((b) => b.digest));
  return out;
}

test('removeEmptyBlobFolders removes emptied <xx> folders and keeps blobs/<alg>', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const [kept] = await plantBlobs(driver, 'ab', 1);
  const [gone] = await plantBlobs(driver, 'cd', 1);
  await driver.delete(layout.blobDir(parseDigest(gone!)));
  await removeEmptyBlobFolders(driver, 2);
  t.false(await exists(driver, `${layout.BLOBS_ROOT}/sha256/cd`));
  t.true(await exists(driver, layout.blobDataPath(parseDigest(kept!))));
  t.true(await exists(driver, `${layout.BLOBS_ROOT}/sha256`));
});

test('blobContent reads a stored blob; a missing one or a bad digest is undefined', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const d = digestOf('content');
  await driver.putContent(layout.blobDataPath(d), 'content');
  t.is((await blobContent(driver, d.value))?.toString(), 'content');
  t.is(await blobContent(driver, digestOf('other').value), undefined);
  t.is(await blobContent(driver, 'sha256:zz'), undefined);
});

test('lastPullRecords lists a repository\'s own records; removeEmptyLastPullFolders tidies after them', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  const d = digestOf('pulled');
  const record = `${layout.lastPullDir('hub/app')}/sha256/${d.hex}`;
  await driver.putContent(record, 'date upstream');
  await driver.putContent(`${layout.lastPullDir('hub/app')}/sha256/nothex`, 'x');
  await driver.putContent(`${layout.lastPullDir('hub/app/nested')}/sha256/${d.hex}`, 'x');
  t.deepEqual([...(await lastPullRecords(driver, 'hub/app'))], [[d.value, record]]);
  t.deepEqual([...(await lastPullRecords(driver, 'absent'))], []);

  await driver.putContent(`${layout.lastPullDir('solo')}/sha256/${d.hex}`, 'x');
  await driver.delete(`${layout.lastPullDir('solo')}/sha256/${d.hex}`);
  await removeEmptyLastPullFolders(driver, 'solo');
  t.false(await exists(driver, layout.lastPullDir('solo')));
  await removeEmptyLastPullFolders(driver, 'hub/app');
  t.true(await exists(driver, record), 'folders with records stay');
});

test('removeEmptyParents stops at keep and at the first folder that is not empty; removeEmptyTree only removes empty trees', async (t) => {
  const driver = createDriver({ driver: 'inmemory' });
  await driver.putContent('/k/a/b/c/file', 'x');
  await driver.putContent('/k/a/other', 'x');
  await driver.delete('/k/a/b/c/file');
  await removeEmptyParents(driver, '/k/a/b/c/file', '/k');
  t.false(await exists(driver, '/k/a/b'));
  t.true(await exists(driver, '/k/a/other'), 'a/ holds a file, so it stays');

  await driver.putContent('/t/x/y/file', 'x');
  t.false(await removeEmptyTree(driver, '/t'), 'a file is inside');
  await driver.delete('/t/x/y/file');
  t.true(await removeEmptyTree(driver, '/t'));
  t.false(await exists(driver, '/t'));
  t.true(await removeEmptyTree(driver, '/never'), 'a folder that was never there is gone');
});

test('a trashed file goes back where it came from: blob data flat per algorithm, anything else at its path', (t) => {
  const d = digestOf('blob');
  const blob = layout.blobDataPath(d);
  t.is(layout.gcTrashPath('run1', blob), `${layout.gcTrashRunDir('run1')}/blobs/sha256/${d.hex}`);
  const link = layout.layerLinkPath('team/app', d);
  t.is(layout.gcTrashPath('run1', link), `${layout.gcTrashRunDir('run1')}${link.slice(layout.ROOT.length)}`);
  for (const path of [blob, link]) {
    const trashed = layout.gcTrashPath('run1', path);
    t.is(layout.gcTrashOrigin(trashed.slice(layout.gcTrashRunDir('run1').length + 1)), path);
  }
});

test('forEachLimited runs at most `concurrency` at a time', async (t) => {
  let active = 0;
  let most = 0;
  const done: number[] = [];
  await forEachLimited([...Array(20).keys()], 3, async (i) => {
    most = Math.max(most, ++active);
    await settle();
    active--;
    done.push(i);
  });
  t.is(most, 3);
  t.deepEqual(done.sort((a, b) => a - b), [...Array(20).keys()]);
  await t.notThrowsAsync(forEachLimited([], 2, async () => {}));
});

test('forEachLimited starts nothing after a failure and throws it only once the running ones ended', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const started: number[] = [];
  let slowEnded = false;
  const run = forEachLimited([0, 1, 2, 3, 4], 2, async (i) => {
    started.push(i);
    if (i === 0) {
      await gate;
      slowEnded = true;
    } else if (i === 1) {
      throw new Error('boom');
    }
  });
  let settled = false;
  run.then(() => (settled = true), () => (settled = true));
  await settle();
  t.false(settled, 'still waiting for the running item');
  release();
  await t.throwsAsync(run, { message: 'boom' });
  t.true(slowEnded);
  t.deepEqual(started, [0, 1], 'no item started after the failure');
});
