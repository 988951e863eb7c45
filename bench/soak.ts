/**
 * `npm run soak [-- options]`: load held for a long time (issue 15). Not part of CI.
 *
 * Two Wharf replicas share one throw-away S3 (the Ceph RGW of testing/s3-test-server.ts) and one redis-server (the
 * blob-descriptor cache and the collector's lock). Clients push, pull and delete images against either replica at
 * random, and `wharf garbage-collect` runs every few minutes as its own process, as an operator runs it.
 *
 * Every pull is checked: the manifest bytes must hash to the digest the push acknowledged and every blob to its
 * digest. An image is only deleted once no pull of it is running, so any failed pull of a live image is a fault of
 * the registry, counted apart from the plain errors (a 5xx a client would retry). Each replica's resident memory
 * and open file descriptors are sampled every few seconds. Results go to bench/results/soak.{md,json,svg}.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { sha256 } from '../testing/helpers.js';
import { CLI_PATH, startWharf, type RunningWharf } from '../testing/harness.js';
import { startRedis } from '../testing/redis-test-server.js';
import { startS3TestServer } from '../testing/s3-test-server.js';

const HELP = `usage: npm run soak -- [options]
  --minutes N     how long the load runs (default 30)
  --clients N     concurrent clients (default 8)
  --gc-every S    seconds between garbage collections (default 120)
  --grace D       the collections' --grace (default 2m, so images deleted during the run are collected during it)
  --sample S      seconds between memory / descriptor samples (default 5)
  --out DIR       where soak.md, soak.json and soak.svg go (default bench/results)
`;

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const REPOSITORIES = 8;
const MAX_LIVE = 120;
const CHUNK = 512 * 1024;

interface Blob { digest: string; size: number; mediaType: string }
interface Image { repo: string; tag: string; digest: string; blobs: Blob[]; pulls: number; deleting: boolean }
type Op = 'push' | 'pull' | 'delete';

const stats = {
  latencies: { push: [] as number[], pull: [] as number[], delete: [] as number[] },
  ok: { push: 0, pull: 0, delete: 0 },
  errors: new Map<string, number>(),
  /** Pulls of a live image that failed or gave wrong bytes: the registry's fault, never acceptable. */
  integrity: [] as string[],
  gc: [] as Array<{ at: number; seconds: number; exit: number | null; summary: string }>,
  samples: [] as Array<{ at: number; rss: number[]; fds: number[] }>,
};

function countError(kind: string): void {
  stats.errors.set(kind, (stats.errors.get(kind) ?? 0) + 1);
}

class HttpError extends Error {
  constructor(readonly what: string, readonly status: number, body: string) {
    super(`${what}: ${status} ${body.slice(0, 200)}`);
  }
}

async function expect(res: Response, status: number, what: string): Promise<Response> {
  if (res.status !== status) throw new HttpError(what, res.status, await res.text());
  return res;
}

/** A blob pushed whole (small ones) or as a POST, PATCHes of CHUNK bytes and a closing PUT (larger ones). */
async function pushBlob(base: string, repo: string, bytes: Buffer, mediaType: string): Promise<Blob> {
  const digest = sha256(bytes);
  if (bytes.byteLength <= CHUNK) {
    await expect(await fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${digest}`, {
      method: 'POST', body: bytes, headers: { 'Content-Type': 'application/octet-stream' },
    }), 201, 'monolithic push');
    return { digest, size: bytes.byteLength, mediaType };
  }
  let location = (await expect(await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' }), 202, 'start upload')).headers.get('location')!;
  for (let at = 0; at < bytes.byteLength; at += CHUNK) {
    const chunk = bytes.subarray(at, at + CHUNK);
    const res = await expect(await fetch(new URL(location, base), {
      method: 'PATCH', body: chunk,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${at}-${at + chunk.byteLength - 1}` },
    }), 202, 'patch');
    location = res.headers.get('location')!;
  }
  const done = new URL(location, base);
  done.searchParams.set('digest', digest);
  await expect(await fetch(done, { method: 'PUT' }), 201, 'complete upload');
  return { digest, size: bytes.byteLength, mediaType };
}

/** Each repository's base layer, shared by all its images: the collector must keep it while any image names it. */
const baseLayers = new Map<string, Blob>();

async function pushImage(base: string, repo: string, tag: string): Promise<Image> {
  let shared = baseLayers.get(repo);
  const sharedBytes = Buffer.alloc(256 * 1024, repo);
  if (!shared || (await fetch(`${base}/v2/${repo}/blobs/${shared.digest}`, { method: 'HEAD' })).status !== 200) {
    shared = await pushBlob(base, repo, sharedBytes, OCI_LAYER);
    baseLayers.set(repo, shared);
  }
  const layers = [shared];
  const count = 1 + Math.floor(Math.random() * 3);
  for (let i = 0; i < count; i++) {
    const size = Math.floor(16 * 1024 + Math.random() * 2 * 1024 * 1024);
    layers.push(await pushBlob(base, repo, randomBytes(size), OCI_LAYER));
  }
  const config = await pushBlob(base, repo, Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }, tag,
  })), OCI_CONFIG);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  }));
  const res = await expect(await fetch(`${base}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT', body: manifest, headers: { 'Content-Type': OCI_MANIFEST },
  }), 201, 'manifest put');
  const digest = sha256(manifest);
  if (res.headers.get('docker-content-digest') !== digest) throw new Error(`manifest put: digest ${res.headers.get('docker-content-digest')}, expected ${digest}`);
  return { repo, tag, digest, blobs: [config, ...layers], pulls: 0, deleting: false };
}

/** Pull an image by tag and check every byte; returns a description of what was wrong, or undefined. */
async function pullImage(base: string, image: Image): Promise<string | undefined> {
  const res = await fetch(`${base}/v2/${image.repo}/manifests/${image.tag}`, { headers: { Accept: OCI_MANIFEST } });
  if (res.status !== 200) throw new HttpError('manifest get', res.status, await res.text());
  const body = Buffer.from(await res.arrayBuffer());
  if (sha256(body) !== image.digest) return `manifest ${image.repo}:${image.tag} served bytes hashing to ${sha256(body)}, pushed ${image.digest}`;
  for (const blob of image.blobs) {
    const got = await fetch(`${base}/v2/${image.repo}/blobs/${blob.digest}`);
    if (got.status !== 200) throw new HttpError('blob get', got.status, await got.text());
    const bytes = Buffer.from(await got.arrayBuffer());
    if (bytes.byteLength !== blob.size || sha256(bytes) !== blob.digest) {
      return `blob ${blob.digest} of ${image.repo}:${image.tag}: ${bytes.byteLength} bytes hashing to ${sha256(bytes)}`;
    }
  }
  return undefined;
}

const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)]!;

async function client(replicas: RunningWharf[], live: Image[], until: number, id: number): Promise<void> {
  let counter = 0;
  while (Date.now() < until) {
    const base = pick(replicas).url;
    const candidates = live.filter((i) => !i.deleting);
    const roll = Math.random();
    const op: Op = candidates.length < 20 || (roll < 0.3 && live.length < MAX_LIVE) ? 'push' : roll < 0.8 ? 'pull' : 'delete';
    const started = performance.now();
    try {
      if (op === 'push') {
        const image = await pushImage(base, `soak/r${Math.floor(Math.random() * REPOSITORIES)}`, `c${id}-${counter++}`);
        live.push(image);
      } else if (op === 'pull') {
        const image = pick(candidates);
        image.pulls++;
        try {
          const wrong = await pullImage(base, image);
          if (wrong) stats.integrity.push(wrong);
        } catch (err) {
          // A live image that does not pull is the registry's fault unless the registry said so with a 5xx.
          if (err instanceof HttpError && err.status >= 500) throw err;
          stats.integrity.push(`${image.repo}:${image.tag}: ${(err as Error).message}`);
          continue;
        } finally {
          image.pulls--;
        }
      } else {
        const image = pick(candidates);
        image.deleting = true;
        while (image.pulls > 0) await new Promise((r) => setTimeout(r, 20));
        // Out of the live set whatever the answer: after a failed delete its state is not known.
        live.splice(live.indexOf(image), 1);
        await expect(await fetch(`${base}/v2/${image.repo}/manifests/${image.digest}`, { method: 'DELETE' }), 202, 'manifest delete');
      }
      stats.ok[op]++;
      stats.latencies[op].push(performance.now() - started);
    } catch (err) {
      countError(err instanceof HttpError ? `${err.what} ${err.status}` : `${op}: ${(err as Error).message.slice(0, 80)}`);
    }
  }
}

async function collect(configPath: string, grace: string, started: number): Promise<void> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI_PATH, 'garbage-collect', configPath, '--grace', grace], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  const exit = await new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const summary = output.trim().split('\n').filter(Boolean).at(-1) ?? '';
  stats.gc.push({ at: (Date.now() - started) / 1000, seconds: (performance.now() - t0) / 1000, exit, summary: summary.slice(0, 200) });
}

async function sample(replicas: RunningWharf[], started: number): Promise<void> {
  const rss: number[] = [];
  const fds: number[] = [];
  for (const r of replicas) {
    const pid = r.process.pid!;
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    rss.push(Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024);
    fds.push((await readdir(`/proc/${pid}/fd`)).length);
  }
  stats.samples.push({ at: (Date.now() - started) / 1000, rss, fds });
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Resident memory of each replica over time, as an SVG line chart. */
function plot(samples: typeof stats.samples): string {
  const W = 760, H = 280, L = 56, B = 36, T = 16, R = 16;
  const maxT = Math.max(1, ...samples.map((s) => s.at));
  const maxY = Math.ceil(Math.max(50, ...samples.flatMap((s) => s.rss)) / 50) * 50;
  const x = (t: number) => L + ((W - L - R) * t) / maxT;
  const y = (v: number) => H - B - ((H - B - T) * v) / maxY;
  const colours = ['#1f77b4', '#d62728'];
  const lines = [0, 1].map((i) => `<polyline fill="none" stroke="${colours[i]}" stroke-width="1.5" points="${
    samples.map((s) => `${x(s.at).toFixed(1)},${y(s.rss[i]!).toFixed(1)}`).join(' ')}"/>`);
  const yTicks = Array.from({ length: maxY / 50 + 1 }, (_, k) => k * 50).filter((v) => maxY <= 400 || v % 100 === 0);
  const xStep = maxT > 1800 ? 600 : maxT > 600 ? 300 : 60;
  const xTicks = Array.from({ length: Math.floor(maxT / xStep) + 1 }, (_, k) => k * xStep);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">
<rect width="${W}" height="${H}" fill="#fff"/>
${yTicks.map((v) => `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/><text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`).join('\n')}
${xTicks.map((t) => `<text x="${x(t)}" y="${H - B + 16}" text-anchor="middle">${Math.round(t / 60)}</text>`).join('\n')}
<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle">minutes</text>
<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">resident memory (MB)</text>
${lines.join('\n')}
<text x="${L + 10}" y="${T + 12}" fill="${colours[0]}">replica A</text><text x="${L + 90}" y="${T + 12}" fill="${colours[1]}">replica B</text>
</svg>
`;
}

function report(minutes: number, clients: number, gcEvery: number, grace: string): string {
  const ms = (v: number) => (Number.isNaN(v) ? '–' : `${v.toFixed(0)} ms`);
  const rows = (['push', 'pull', 'delete'] as Op[]).map((op) => {
    const l = stats.latencies[op];
    return `| ${op} | ${stats.ok[op]} | ${ms(percentile(l, 50))} | ${ms(percentile(l, 95))} | ${ms(percentile(l, 99))} | ${ms(Math.max(0, ...l))} |`;
  });
  const per = (i: number, key: 'rss' | 'fds') => {
    const v = stats.samples.map((s) => s[key][i]!);
    const tail = v.slice(Math.floor(v.length / 2));
    return `${Math.min(...v).toFixed(0)} / ${Math.max(...v).toFixed(0)} / ${v.at(-1)!.toFixed(0)} (second half: ${Math.min(...tail).toFixed(0)}–${Math.max(...tail).toFixed(0)})`;
  };
  const errors = [...stats.errors].sort((a, b) => b[1] - a[1]).map(([k, n]) => `- ${k}: ${n}`);
  const gcs = stats.gc.map((g) => `- at ${(g.at / 60).toFixed(1)} min: ${g.seconds.toFixed(1)} s, exit ${g.exit}: ${g.summary}`);
  return `# Soak: ${minutes} minutes, ${clients} clients, two replicas on S3 (Ceph RGW) with Redis

Run ${new Date().toISOString()}; garbage collection (\`--grace ${grace}\`) every ${gcEvery} s.

| operation | completed | p50 | p95 | p99 | max |
|---|---:|---:|---:|---:|---:|
${rows.join('\n')}

Pulls of a live image that failed or gave wrong bytes: **${stats.integrity.length}**${stats.integrity.length ? `\n${stats.integrity.slice(0, 20).map((s) => `- ${s}`).join('\n')}` : ''}

Errors (answers a client would retry): ${stats.errors.size === 0 ? 'none' : `\n${errors.join('\n')}`}

| replica | resident memory, MB: min / max / last | open descriptors: min / max / last |
|---|---|---|
| A | ${per(0, 'rss')} | ${per(0, 'fds')} |
| B | ${per(1, 'rss')} | ${per(1, 'fds')} |

Garbage collections:
${gcs.join('\n')}
`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string' }, clients: { type: 'string' }, 'gc-every': { type: 'string' }, sample: { type: 'string' }, grace: { type: 'string' },
      out: { type: 'string' }, help: { type: 'boolean' },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  const minutes = Number(values.minutes ?? 30);
  const clients = Number(values.clients ?? 8);
  const gcEvery = Number(values['gc-every'] ?? 120);
  const sampleEvery = Number(values.sample ?? 5);
  const grace = values.grace ?? '2m';
  const out = resolve(values.out ?? 'bench/results');

  const dir = await mkdtemp(join(tmpdir(), 'wharf-soak-'));
  const s3 = await startS3TestServer({ memoryBytes: 6 * 1024 ** 3 });
  const redis = await startRedis();
  const config = {
    storage: { s3: s3.storageConfig({ rootdirectory: '/soak' }), cache: { blobdescriptor: 'redis' }, delete: { enabled: true }, redirect: { disable: true } },
    redis: { addr: redis.host },
  };
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, stringify({ version: 0.1, log: { level: 'warn' }, ...config }));
  const replicas = [await startWharf({ config }), await startWharf({ config })];
  process.stdout.write(`soak: ${minutes} min, ${clients} clients, replicas ${replicas.map((r) => r.url).join(' ')}\n`);

  const started = Date.now();
  const until = started + minutes * 60_000;
  const live: Image[] = [];
  const sampler = setInterval(() => void sample(replicas, started).catch(() => {}), sampleEvery * 1000);
  let collecting = Promise.resolve();
  const collector = setInterval(() => { collecting = collecting.then(() => collect(configPath, grace, started)); }, gcEvery * 1000);
  const progress = setInterval(() => {
    const last = stats.samples.at(-1);
    process.stdout.write(`${((Date.now() - started) / 60_000).toFixed(1)} min: push ${stats.ok.push}, pull ${stats.ok.pull}, delete ${stats.ok.delete}, ` +
      `errors ${[...stats.errors.values()].reduce((a, b) => a + b, 0)}, integrity ${stats.integrity.length}, live ${live.length}` +
      `${last ? `, rss ${last.rss.map((v) => v.toFixed(0)).join('/')} MB, fds ${last.fds.join('/')}` : ''}, gc runs ${stats.gc.length}\n`);
  }, 60_000);
  try {
    await sample(replicas, started);
    await Promise.all(Array.from({ length: clients }, (_, i) => client(replicas, live, until, i)));
    clearInterval(collector);
    await collecting;
    // A last collection with the load stopped, then every image still live must pull completely.
    await collect(configPath, grace, started);
    for (const image of live) {
      const wrong = await pullImage(replicas[0]!.url, image).catch((err: Error) => err.message);
      if (wrong) stats.integrity.push(`after the last collection: ${wrong}`);
    }
    await sample(replicas, started);
  } finally {
    clearInterval(sampler);
    clearInterval(progress);
    clearInterval(collector);
    await Promise.all(replicas.map((r) => r.stop()));
    await redis.stop();
    await s3.stop();
    await rm(dir, { recursive: true, force: true });
  }
  await mkdir(out, { recursive: true });
  const md = report(minutes, clients, gcEvery, grace);
  await writeFile(join(out, 'soak.md'), md);
  await writeFile(join(out, 'soak.json'), JSON.stringify({ ...stats, errors: Object.fromEntries(stats.errors) }, null, 1));
  await writeFile(join(out, 'soak.svg'), plot(stats.samples));
  process.stdout.write(`${md}\nwritten to ${out}/soak.{md,json,svg}\n`);
  if (stats.integrity.length > 0) process.exitCode = 1;
}

await main();
