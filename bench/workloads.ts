/**
 * The workloads of issues 8 and 18. Each one prepares a fresh server (`setup`, not measured) and then measures one
 * repetition (`measure`), returning a value per figure. The runner alternates the servers between repetitions.
 * Workload 10 is the others again, one repetition each, against one server process, for its peak RSS.
 */
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { allBlobs, generateImage, writeOciLayout } from '../testing/e2e/image.js';
import {
  MB, OCI_MANIFEST, curlGet, latencyMs, makeBlobFile, median, nodeRate, pushConcurrently, pushMonolithic, pushSmallImage,
  pushStreamed,
  runProcess, sha256, wrkAvailable, wrkRate,
} from './client.js';
import { cpuSeconds, peakRss, type BenchServer } from './servers.js';
import { CLI_PATH } from '../testing/harness.js';
import { NODE_FLAGS } from '../server/node-flags.js';

export interface Sizes {
  /** Workloads 1 and 2: the big blob. */
  blobBytes: number;
  /** Workload 3: each of the concurrent blobs. */
  smallBlobBytes: number;
  concurrentPushes: number;
  /** Workload 1: concurrent GET streams. */
  getStreams: number;
  /** Workload 4: connections and seconds per repetition. */
  connections: number;
  loadSeconds: number;
  tags: number;
  repositories: number;
  /** Workload 6: size of the biggest file of the first layer. */
  imageLayerBytes: number;
  gcBlobs: number;
  /** Workload 9: layers pushed at once, and the size of each. */
  dockerLayers: number;
  dockerLayerBytes: number;
  /** The servers store in S3 (`--s3`): some targets are the S3 ones. */
  s3: boolean;
}

export interface Figure {
  id: string;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  /** Wanted speed ratio to registry:2 (>= this), or an absolute bound on Wharf's value. */
  target?: { ratio: number } | { max: number };
  /** Wanted speed ratio to the durable floor server (workloads with `floor`). */
  floorRatio?: number;
}

export interface Shared {
  work: string;
  sizes: Sizes;
  /** Files made once per run and reused by every server (name → path and digest). */
  files: Map<string, { path: string; digest: string; size: number }>;
  notes: string[];
}

export interface Workload {
  id: number;
  title: string;
  wharfOnly?: boolean;
  /** Runs with the servers storing in S3 (`--s3`); workloads that seed the storage tree directly do not. */
  s3?: boolean;
  /** A push workload: the durable floor server (bench/floor-server.ts) runs it too, beside Wharf and registry:2. */
  floor?: boolean;
  /** With --s3, the floor server runs it too, in its `s3` mode (monolithic pushes only). */
  s3Floor?: boolean;
  /**
   * The floor server answers this workload's requests too (blob GET, manifest GET), though it is not compared in it:
   * workload 10 takes the floor through it, so that its peak RSS is measured through the same traffic as Wharf's.
   */
  floorAnswers?: boolean;
  /** Repetitions of this workload whatever --reps says. */
  reps?: number;
  /** A bound on Wharf's peak RSS over the workload (MB). */
  rssTarget?(sizes: Sizes): number | undefined;
  /** The label of the peak RSS row, when not the generic one. */
  rssLabel?: string;
  figures(sizes: Sizes): Figure[];
  /** Once per run, before any server starts: make input files. */
  prepare?(shared: Shared): Promise<void>;
  /** Once per server, unmeasured. */
  setup?(server: BenchServer, shared: Shared): Promise<void>;
  measure(server: BenchServer, shared: Shared, rep: number): Promise<Record<string, number>>;
}

const mb = (bytes: number) => `${Math.round(bytes / MB)} MB`;
const seconds = (startedNs: bigint) => Number(process.hrtime.bigint() - startedNs) / 1e9;

async function blobFile(shared: Shared, name: string, size: number, seed: number) {
  let file = shared.files.get(name);
  if (!file) {
    const path = join(shared.work, `${name}.bin`);
    file = { path, size, digest: await makeBlobFile(path, size, seed) };
    shared.files.set(name, file);
  }
  return file;
}

/** `count` input files `<name>-<i>` of `size` bytes, seeds `seed + i`: new content for one repetition's pushes. */
async function freshFiles(shared: Shared, name: string, count: number, size: number, seed: number) {
  const files = [];
  for (let i = 0; i < count; i++) files.push(await blobFile(shared, `${name}-${i}`, size, seed + i));
  return files;
}

const totalMB = (files: Array<{ size: number }>) => files.reduce((a, f) => a + f.size, 0) / MB;

/** One unmeasured monolithic push, so the first measured repetition does not pay for the server's JIT warm-up. */
async function warmUpMonolithic(server: BenchServer, shared: Shared): Promise<void> {
  const file = await blobFile(shared, 'warm', 8 * MB, 99);
  await pushMonolithic(server.url, 'bench/warm', file.path, file.size, file.digest);
}

/** The same for workloads that push both ways: a monolithic push, then a streamed one. */
async function warmUpPush(server: BenchServer, shared: Shared): Promise<void> {
  await warmUpMonolithic(server, shared);
  const file = await blobFile(shared, 'warm', 8 * MB, 99);
  await pushStreamed(server.url, 'bench/warm', file.path, file.digest);
}

const blobGet: Workload = {
  id: 1,
  title: 'Blob GET',
  s3: true,
  floorAnswers: true,
  figures: (s) => [
    { id: 'get-1', label: `GET ${mb(s.blobBytes)} blob, 1 stream`, unit: 'MB/s', better: 'higher', target: { ratio: s.s3 ? 1.0 : 0.85 } },
    // S3 target: Wharf's CPU at most 1.5 times registry:2's, a speed ratio (registry:2/Wharf) of at least 1/1.5.
    { id: 'get-1-cpu', label: `server CPU time per 1-stream GET of the ${mb(s.blobBytes)} blob`, unit: 'ms', better: 'lower', ...(s.s3 ? { target: { ratio: 0.67 } } : {}) },
    { id: 'get-n', label: `GET ${mb(s.blobBytes)} blob, ${s.getStreams} streams (aggregate)`, unit: 'MB/s', better: 'higher', target: { ratio: 1.0 } },
  ],
  prepare: async (shared) => { await blobFile(shared, 'big', shared.sizes.blobBytes, 1); },
  async setup(server, shared) {
    const file = shared.files.get('big')!;
    await pushMonolithic(server.url, 'bench/get', file.path, file.size, file.digest);
    // Into the page cache, and warm: Node compiles the read path (and on S3 the SDK's) while it runs, and opens its
    // pooled connections to S3; a server that has served for a while is past both. The same for both servers.
    for (let i = 0; i < 3; i++) await curlGet(`${server.url}/v2/bench/get/blobs/${file.digest}`);
  },
  async measure(server, shared) {
    const url = `${server.url}/v2/bench/get/blobs/${shared.files.get('big')!.digest}`;
    const single: number[] = [];
    const cpuBefore = await cpuSeconds(server.pid);
    for (let i = 0; i < 3; i++) {
      const r = await curlGet(url);
      single.push(r.bytes / MB / r.seconds);
    }
    const singleCpuMs = ((await cpuSeconds(server.pid)) - cpuBefore) * 1000 / 3;
    const started = process.hrtime.bigint();
    const all = await Promise.all(Array.from({ length: shared.sizes.getStreams }, () => curlGet(url)));
    const bytes = all.reduce((a, r) => a + r.bytes, 0);
    return { 'get-1': median(single), 'get-1-cpu': singleCpuMs, 'get-n': bytes / MB / seconds(started) };
  },
};

/*
 * Every measured push sends content the server has not stored yet (a new file per repetition, the same for both
 * servers, whose storage is separate): a push of a blob already in the registry skips storing it, and would measure
 * that shortcut rather than a push.
 */
const blobPush: Workload = {
  id: 2,
  title: 'Blob push',
  s3: true,
  floor: true,
  figures: (s) => [
    { id: 'push-mono', label: `push ${mb(s.blobBytes)} blob, monolithic PUT`, unit: 'MB/s', better: 'higher', target: { ratio: 1.4 }, floorRatio: 1.0 },
    { id: 'push-patch', label: `push ${mb(s.blobBytes)} blob, streamed PATCH`, unit: 'MB/s', better: 'higher', target: { ratio: 1.4 }, floorRatio: 1.0 },
  ],
  setup: warmUpPush,
  async measure(server, shared, rep) {
    const mono = await blobFile(shared, `push-mono-${rep}`, shared.sizes.blobBytes, 1000 + rep);
    const patch = await blobFile(shared, `push-patch-${rep}`, shared.sizes.blobBytes, 2000 + rep);
    let started = process.hrtime.bigint();
    await pushMonolithic(server.url, `bench/mono-${rep}`, mono.path, mono.size, mono.digest);
    const monoRate = mono.size / MB / seconds(started);
    started = process.hrtime.bigint();
    await pushStreamed(server.url, `bench/patch-${rep}`, patch.path, patch.digest);
    return { 'push-mono': monoRate, 'push-patch': patch.size / MB / seconds(started) };
  },
};

const concurrentPush: Workload = {
  id: 3,
  title: 'Concurrent pushes',
  s3: true,
  floor: true,
  s3Floor: true,
  figures: (s) => [
    // The S3 floor streams without part buffers (it is there for the memory figure): no rate target against it.
    { id: 'push-concurrent', label: `${s.concurrentPushes} concurrent pushes of distinct ${mb(s.smallBlobBytes)} blobs (aggregate)`, unit: 'MB/s', better: 'higher', target: { ratio: 1.3 }, floorRatio: s.s3 ? undefined : 1.0 },
  ],
  rssTarget: (s) => (s.s3 ? 120 : undefined),
  // Monolithic only, as measured (the S3 floor takes no PATCH).
  setup: warmUpMonolithic,
  async measure(server, shared, rep) {
    const files = await freshFiles(shared, `many-${rep}`, shared.sizes.concurrentPushes, shared.sizes.smallBlobBytes, 10_000 + rep * 100);
    const started = process.hrtime.bigint();
    await pushConcurrently(server.url, `bench/many-${rep}`, files);
    return { 'push-concurrent': totalMB(files) / seconds(started) };
  },
};

const manifestGet: Workload = {
  id: 4,
  title: 'Manifest GET by tag',
  s3: true,
  floorAnswers: true,
  figures: (s) => [
    { id: 'manifest-tag', label: `manifest GET by tag, ${s.connections} keep-alive connections`, unit: 'req/s', better: 'higher', target: { ratio: 6.0 } },
    { id: 'manifest-cpu', label: 'server CPU time per manifest GET', unit: 'µs', better: 'lower', target: { max: 120 } },
  ],
  async setup(server, shared) {
    await pushSmallImage(server.url, 'bench/manifest', 'latest');
    // Warm up (JIT, caches) for a second before the measured repetitions.
    const url = `${server.url}/v2/bench/manifest/manifests/latest`;
    const headers = { Accept: OCI_MANIFEST };
    if (wrkAvailable()) await wrkRate(url, headers, shared.sizes.connections, 1);
    else await nodeRate(url, headers, shared.sizes.connections, 1);
  },
  async measure(server, shared) {
    const url = `${server.url}/v2/bench/manifest/manifests/latest`;
    const headers = { Accept: OCI_MANIFEST };
    const { connections, loadSeconds } = shared.sizes;
    const cpuBefore = await cpuSeconds(server.pid);
    const r = wrkAvailable()
      ? await wrkRate(url, headers, connections, loadSeconds)
      : await nodeRate(url, headers, connections, loadSeconds);
    const cpu = (await cpuSeconds(server.pid)) - cpuBefore;
    if (r.errors > 0) shared.notes.push(`workload 4 on ${server.key}: ${r.errors} failed requests`);
    return { 'manifest-tag': r.rps, 'manifest-cpu': (cpu * 1e6) / (r.rps * loadSeconds) };
  },
};

/** Tags and repositories written straight into the storage tree (the layout both servers share). */
async function seedListing(server: BenchServer, sizes: Sizes, manifest: Buffer): Promise<void> {
  const v2 = join(server.rootDirectory, 'docker', 'registry', 'v2', 'repositories');
  const digest = sha256(manifest);
  const hex = digest.slice('sha256:'.length);
  const writes: Array<() => Promise<void>> = [];
  for (let i = 0; i < sizes.tags; i++) {
    const tagDir = join(v2, 'bench', 'tags', '_manifests', 'tags', `tag-${String(i).padStart(6, '0')}`);
    writes.push(async () => {
      await mkdir(join(tagDir, 'index', 'sha256', hex), { recursive: true });
      await mkdir(join(tagDir, 'current'), { recursive: true });
      await writeFile(join(tagDir, 'index', 'sha256', hex, 'link'), digest);
      await writeFile(join(tagDir, 'current', 'link'), digest);
    });
  }
  for (let i = 0; i < sizes.repositories; i++) {
    const repo = join(v2, 'bench', 'catalog', `repo-${String(i).padStart(5, '0')}`);
    writes.push(async () => {
      await mkdir(join(repo, '_layers', 'sha256', hex), { recursive: true });
      await mkdir(join(repo, '_manifests', 'revisions', 'sha256', hex), { recursive: true });
      await writeFile(join(repo, '_layers', 'sha256', hex, 'link'), digest);
      await writeFile(join(repo, '_manifests', 'revisions', 'sha256', hex, 'link'), digest);
    });
  }
  for (let i = 0; i < writes.length; i += 64) await Promise.all(writes.slice(i, i + 64).map((w) => w()));
}

const listing: Workload = {
  id: 5,
  title: 'Tags list and catalog',
  figures: (s) => [
    { id: 'tags-first', label: `tags list, first page (n=100) of ${s.tags.toLocaleString('en')}`, unit: 'ms', better: 'lower' },
    { id: 'tags-middle', label: `tags list, middle page (n=100)`, unit: 'ms', better: 'lower' },
    { id: 'catalog-first', label: `catalog, first page (n=100) of ${s.repositories.toLocaleString('en')} repositories`, unit: 'ms', better: 'lower' },
    { id: 'catalog-middle', label: `catalog, middle page (n=100)`, unit: 'ms', better: 'lower' },
  ],
  async setup(server, shared) {
    const manifest = await pushSmallImage(server.url, 'bench/tags', 'seed');
    await seedListing(server, shared.sizes, manifest);
  },
  async measure(server, shared) {
    const { tags, repositories } = shared.sizes;
    const midTag = `tag-${String(Math.floor(tags / 2)).padStart(6, '0')}`;
    const midRepo = `bench/catalog/repo-${String(Math.floor(repositories / 2)).padStart(5, '0')}`;
    const base = server.url;
    return {
      'tags-first': await latencyMs(`${base}/v2/bench/tags/tags/list?n=100`, 20),
      'tags-middle': await latencyMs(`${base}/v2/bench/tags/tags/list?n=100&last=${midTag}`, 20),
      'catalog-first': await latencyMs(`${base}/v2/_catalog?n=100`, 20),
      'catalog-middle': await latencyMs(`${base}/v2/_catalog?n=100&last=${encodeURIComponent(midRepo)}`, 20),
    };
  },
};

const skopeoRoundTrip: Workload = {
  id: 6,
  title: 'skopeo push and pull',
  figures: (s) => [
    { id: 'skopeo-push', label: `skopeo copy push, 3-layer image (~${mb(s.imageLayerBytes)})`, unit: 's', better: 'lower' },
    { id: 'skopeo-pull', label: 'skopeo copy pull of the same image', unit: 's', better: 'lower' },
  ],
  async measure(server, shared, rep) {
    // A new image per repetition, the same for both servers: skopeo remembers where it saw a blob and would mount
    // it from an earlier repository of the same server instead of pushing it again.
    const layout = join(shared.work, `image-${rep}`);
    if (!shared.files.has(layout)) {
      const image = generateImage({ layerCount: 3, firstLayerBytes: shared.sizes.imageLayerBytes });
      await writeOciLayout(layout, [{ tag: 'v1', target: image.manifest }], allBlobs(image));
      shared.files.set(layout, { path: layout, digest: image.manifest.digest, size: 0 });
    }
    const skopeo = async (...args: string[]) => {
      const r = await runProcess('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', '--dest-tls-verify=false', ...args]);
      if (r.code !== 0) throw new Error(`skopeo ${args.join(' ')}: ${r.stderr}`);
    };
    const ref = `docker://${server.host}/bench/skopeo-${rep}:v1`;
    let started = process.hrtime.bigint();
    await skopeo(`oci:${layout}:v1`, ref);
    const push = seconds(started);
    const dest = join(shared.work, `pull-${server.key}-${rep}`);
    started = process.hrtime.bigint();
    await skopeo(ref, `oci:${dest}:v1`);
    return { 'skopeo-push': push, 'skopeo-pull': seconds(started) };
  },
};

/**
 * `count` unreferenced blobs (content `<salt>-<i>`) written straight into the storage tree under `root`, data and
 * folder dated a day back (past the collector's grace period), `concurrency` files at a time.
 */
export async function seedUnreferencedBlobs(root: string, count: number, salt: string, concurrency = 256): Promise<void> {
  const blobs = join(root, 'docker', 'registry', 'v2', 'blobs', 'sha256');
  const old = new Date(Date.now() - 24 * 3600 * 1000);
  const limit = pLimit(concurrency);
  // A batch at a time, so that a million blobs are not a million promises at once.
  const BATCH = 10_000;
  for (let i = 0; i < count; i += BATCH) {
    await Promise.all(Array.from({ length: Math.min(BATCH, count - i) }, (_, j) => limit(async () => {
      const content = `${salt}-${i + j}`;
      const hex = sha256(content).slice('sha256:'.length);
      const dir = join(blobs, hex.slice(0, 2), hex);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'data'), content);
      await utimes(join(dir, 'data'), old, old);
      await utimes(dir, old, old);
    })));
  }
}

/**
 * The collector over unreferenced blobs seeded straight into the content store. The GC's time includes the fixed
 * wait of its locking protocol (server/gc/worker.ts: P, a few seconds), so the smaller run shows that fixed part and
 * the difference between the two runs the part that grows with the blobs.
 */
const garbageCollect: Workload = {
  id: 7,
  title: 'Garbage collection',
  wharfOnly: true,
  figures: (s) => [
    { id: 'gc-quarter', label: `wharf garbage-collect, ${(s.gcBlobs / 4).toLocaleString('en')} blobs`, unit: 's', better: 'lower' },
    { id: 'gc-full', label: `wharf garbage-collect, ${s.gcBlobs.toLocaleString('en')} blobs`, unit: 's', better: 'lower', target: { max: 60 } },
  ],
  async setup(server) { await pushSmallImage(server.url, 'bench/live', 'latest'); },
  async measure(server, shared, rep) {
    const out: Record<string, number> = {};
    for (const [id, count] of [['gc-quarter', shared.sizes.gcBlobs / 4], ['gc-full', shared.sizes.gcBlobs]] as const) {
      await seedUnreferencedBlobs(server.rootDirectory, count, `${id}-${rep}`);
      const started = process.hrtime.bigint();
      const r = await runProcess(process.execPath, [...NODE_FLAGS, CLI_PATH, 'garbage-collect', server.configPath], 30 * 60_000);
      const took = seconds(started);
      if (r.code !== 0) {
        throw new Error(`wharf garbage-collect exited with ${r.code} (is the GC implemented yet?): ${(r.stderr || r.stdout).slice(0, 300)}`);
      }
      out[id] = took;
      // The run's own summary (marked, deleted, duration), once, so the table shows what the time bought.
      const summary = (r.stdout || r.stderr).trim().split('\n').filter(Boolean).at(-1);
      if (rep === 0 && summary) shared.notes.push(`workload 7, ${count.toLocaleString('en')} blobs: ${summary.slice(0, 300)}`);
    }
    return out;
  },
};

/** Repositories of one tag each, and one repository of many tags, written straight into the storage tree. */
async function seedUiListing(server: BenchServer, count: number, manifest: Buffer): Promise<void> {
  const v2 = join(server.rootDirectory, 'docker', 'registry', 'v2', 'repositories');
  const digest = sha256(manifest);
  const hex = digest.slice('sha256:'.length);
  const tag = async (repoDir: string, name: string) => {
    const tagDir = join(repoDir, '_manifests', 'tags', name);
    await mkdir(join(tagDir, 'index', 'sha256', hex), { recursive: true });
    await mkdir(join(tagDir, 'current'), { recursive: true });
    await writeFile(join(tagDir, 'index', 'sha256', hex, 'link'), digest);
    await writeFile(join(tagDir, 'current', 'link'), digest);
  };
  const writes: Array<() => Promise<void>> = [];
  const many = join(v2, 'bench', 'ui-tags');
  writes.push(async () => {
    await mkdir(join(many, '_manifests', 'revisions', 'sha256', hex), { recursive: true });
    await writeFile(join(many, '_manifests', 'revisions', 'sha256', hex, 'link'), digest);
  });
  for (let i = 0; i < count; i++) writes.push(() => tag(many, `tag-${String(i).padStart(6, '0')}`));
  for (let i = 0; i < count; i++) {
    const repo = join(v2, 'bench', 'ui', `repo-${String(i).padStart(5, '0')}`);
    writes.push(async () => {
      await mkdir(join(repo, '_manifests', 'revisions', 'sha256', hex), { recursive: true });
      await writeFile(join(repo, '_manifests', 'revisions', 'sha256', hex, 'link'), digest);
      await tag(repo, 'latest');
    });
  }
  for (let i = 0; i < writes.length; i += 64) await Promise.all(writes.slice(i, i + 64).map((w) => w()));
}

/**
 * The web UI's first pages (issue #16): its JSON API, which is what the page waits for before it shows anything.
 * The repositories page reads, for each of its 50 repositories, the tags folder and each tag's link; a tags page
 * reads its tags' links and each manifest once (then the per-digest summary is cached).
 */
const webUi: Workload = {
  id: 8,
  title: 'Web UI first pages',
  wharfOnly: true,
  figures: (s) => [
    { id: 'ui-repos-first', label: `UI repositories, first page (50) of ${s.tags.toLocaleString('en')} repositories`, unit: 'ms', better: 'lower', target: { max: 500 } },
    { id: 'ui-repos-middle', label: 'UI repositories, a middle page (50)', unit: 'ms', better: 'lower', target: { max: 500 } },
    { id: 'ui-repos-big', label: `UI repositories, the page holding the repository of ${s.tags.toLocaleString('en')} tags`, unit: 'ms', better: 'lower', target: { max: 1000 } },
    { id: 'ui-tags-first', label: `UI tags, first page (50) of ${s.tags.toLocaleString('en')} tags, by name`, unit: 'ms', better: 'lower', target: { max: 500 } },
    { id: 'ui-tags-pushed', label: `UI tags, first page (50) of ${s.tags.toLocaleString('en')} tags, newest first`, unit: 'ms', better: 'lower' },
  ],
  async setup(server, shared) {
    const manifest = await pushSmallImage(server.url, 'bench/ui-seed', 'seed');
    await seedUiListing(server, shared.sizes.tags, manifest);
  },
  async measure(server, shared) {
    const base = `${server.url}/ui/api`;
    const middle = Buffer.from(JSON.stringify({ k: `bench/ui/repo-${String(Math.floor(shared.sizes.tags / 2)).padStart(5, '0')}` })).toString('base64url');
    return {
      'ui-repos-first': await latencyMs(`${base}/repositories?limit=50`, 20),
      'ui-repos-middle': await latencyMs(`${base}/repositories?limit=50&next=${middle}`, 20),
      // The page after bench/ui-seed starts with bench/ui-tags: its tag count, last push and size read every tag.
      'ui-repos-big': await latencyMs(`${base}/repositories?limit=50&next=${Buffer.from(JSON.stringify({ k: 'bench/ui-seed' })).toString('base64url')}`, 5),
      'ui-tags-first': await latencyMs(`${base}/repositories/bench/ui-tags/tags?limit=50`, 20),
      'ui-tags-pushed': await latencyMs(`${base}/repositories/bench/ui-tags/tags?limit=50&sort=-pushed`, 5),
    };
  },
};

/**
 * Layers pushed the way docker pushes them, all at once: for each, POST a session, one chunked PATCH with the whole
 * layer (`Transfer-Encoding: chunked`, no Content-Length; one curl process per layer), then PUT ?digest= empty.
 */
const dockerPush: Workload = {
  id: 9,
  title: 'Docker-shaped push',
  s3: true,
  floor: true,
  figures: (s) => [
    { id: 'push-docker', label: `${s.dockerLayers} layers of ${mb(s.dockerLayerBytes)} at once, each POST + chunked PATCH + PUT (aggregate)`, unit: 'MB/s', better: 'higher', target: { ratio: 1.3 } },
    { id: 'push-docker-time', label: `time to push the ${s.dockerLayers} layers`, unit: 's', better: 'lower' },
  ],
  setup: warmUpPush,
  async measure(server, shared, rep) {
    const files = await freshFiles(shared, `docker-${rep}`, shared.sizes.dockerLayers, shared.sizes.dockerLayerBytes, 30_000 + rep * 100);
    const started = process.hrtime.bigint();
    await Promise.all(files.map((f, i) => pushStreamed(server.url, `bench/docker-${rep}`, f.path, f.digest).catch((err: Error) => {
      throw new Error(`layer ${i}: ${err.message}`);
    })));
    const took = seconds(started);
    return { 'push-docker': totalMB(files) / took, 'push-docker-time': took };
  },
};

/**
 * The memory figure: one server process taken through every filesystem workload (blob GET, the pushes, the
 * docker-shaped push, manifest load, listing, skopeo, the UI API; not GC, which runs in a process of its own), each
 * one's setup and one repetition, in that order. The figure is the peak RSS (VmHWM) over all of it, summed over
 * the workers when there are several; the high-water mark after each workload shows which one set it.
 */
function oneProcess(parts: Workload[]): Workload {
  return {
    id: 10,
    title: 'One process through every filesystem workload',
    reps: 1,
    // The durable floor too, through 1, 2, 3, 9 and 4: what a minimal Node server peaks at under the same traffic.
    floor: true,
    rssTarget: () => 100,
    rssLabel: 'peak RSS of one process through every filesystem workload',
    figures: () => parts.map((w) => ({ id: `hwm-${w.id}`, label: `peak RSS so far, after workload ${w.id} (${w.title})`, unit: 'MB', better: 'lower' as const })),
    async prepare(shared) {
      for (const w of parts) await w.prepare?.(shared);
    },
    async measure(server, shared, rep) {
      const out: Record<string, number> = {};
      for (const w of parts) {
        if (w.wharfOnly && server.kind !== 'wharf') continue;
        // The floor goes through the workloads it can answer: the pushes, blob GETs and manifest GETs.
        if (server.kind === 'floor' && !w.floor && !w.floorAnswers) continue;
        await w.setup?.(server, shared);
        await w.measure(server, shared, rep);
        out[`hwm-${w.id}`] = (await peakRss(server.pid)).total / MB;
      }
      return out;
    },
  };
}

export const WORKLOADS: Workload[] = [blobGet, blobPush, concurrentPush, manifestGet, listing, skopeoRoundTrip, garbageCollect, webUi, dockerPush];
WORKLOADS.push(oneProcess([blobGet, blobPush, concurrentPush, dockerPush, manifestGet, listing, skopeoRoundTrip, webUi]));
