/**
 * `npm run bench [-- options]`: Wharf beside registry:2 and, for pushes, beside the durable floor server
 * (issues 8 and 18).
 *
 * For each selected workload every server is started fresh (loopback, empty storage, equivalent config): Wharf (once
 * per entry of --workers), registry:2, and for the push workloads the durable floor server (bench/floor-server.ts,
 * Wharf's Node flags). The unmeasured setup runs on each, then the repetitions alternate between the servers (in
 * order, then in reverse, ...). Figures are medians over the repetitions, with their spread (min-max); the speed
 * ratio is Wharf/reference for throughput and reference/Wharf for times, so above 1 always means Wharf is faster.
 * Beside the ratio of the medians, each ratio cell gives the paired ratio: the median of the ratios within each
 * repetition, which a change of the machine's speed from one repetition to the next leaves out (bench/ratios.ts).
 * The verdicts judge the ratio of the medians.
 * Peak RSS is the kernel's high-water mark (VmHWM) of each server process over its whole workload, setup included,
 * summed over the workers. Server CPU time (user + system, from /proc) is reported too: on a busy machine it is
 * steadier than the rates, so it is the figure to compare two builds by.
 * Results go to bench/results/latest.{md,json}.
 *
 * Without registry:2 installed (or with --no-registry2) it is left out. With --s3 Wharf and registry:2 store in one
 * throw-away S3 server (the Ceph RGW of testing/s3-test-server.ts), only the workloads that go through the registry
 * API run, and the floor server runs workload 3 only, in its `s3` mode (each monolithic push streamed into one
 * PutObject: the least memory a push to S3 can take).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { median, MB } from './client.js';
import { orientedRatio, pairedRatio, type Spread } from './ratios.js';
import { cpuSeconds, peakRss, registry2Available, startServer, type BenchServer, type ServerKind } from './servers.js';
import { WORKLOADS, type Figure, type Shared, type Sizes, type Workload } from './workloads.js';
import { startS3TestServer } from '../testing/s3-test-server.js';

const HELP = `usage: npm run bench -- [options]
  --workloads 1,2,4     run only these workloads (default: all, 1-10); 9 is the docker-shaped push, 10 takes one
                        server process through every filesystem workload for its peak RSS
  --reps N              repetitions per server (default 3; 2 with --quick)
  --quick               small sizes for a fast check (32 MB blob, 2 MB x 20, 5 x 8 MB layers, 1,000 tags, 3 s
                        load, 10,000 GC blobs)
  --blob-mb N           size of the big blob of workloads 1-2 (default 200)
  --small-mb N          size of each of the 20 concurrent blobs of workload 3 (default 10)
  --seconds N           load duration per repetition of workload 4 (default 10)
  --layer-mb N          size of each of the 5 layers of workload 9 (default 50)
  --gc-blobs N          blobs in the registry for workload 7 (default 100000)
  --workers N[,M...]    run Wharf with N worker processes (wharf serve --workers N); a list (1,2) measures Wharf
                        once per entry in every workload, each beside registry:2 and the floor
  --no-floor            leave the durable floor server out of the push workloads (2, 3, 9)
  --no-access-log       turn the access log off on both servers
  --no-registry2        Wharf only
  --cpu-prof DIR        run Wharf under node --cpu-prof, profiles into DIR (summarise: node dist/bench/profile.js DIR)
  --s3                  Wharf and registry:2 store in S3: a throw-away Ceph RGW (testing/s3-test-server.ts, needs
                        ceph-mon, ceph-osd, radosgw); runs workloads 1-4 and 9 only, redirects off, the floor in 3 only
  --tmp DIR             parent of the servers' storage and the input files (default: the OS temp dir;
                        /dev/shm takes the disk out of the figures)
  --out DIR             where to write latest.md and latest.json (default bench/results)
`;

/** One of the run's servers: Wharf (once per --workers entry), registry:2 or the durable floor. */
interface Variant { key: string; label: string; kind: ServerKind; workers?: number }

interface Stat { median: number; min: number; max: number }

interface Row extends Figure {
  workload: number;
  title: string;
  /** Samples per server key, one per repetition. */
  samples: Record<string, number[]>;
  /** The repetition each sample of `samples` was taken in (the same index). */
  rounds: Record<string, number[]>;
  stats: Record<string, Stat>;
  error?: string;
}

function statOf(values: number[]): Stat | undefined {
  if (values.length === 0) return undefined;
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** Speed ratio of `key`'s median to `reference`'s: above 1 means `key` is faster (or smaller). */
function speedRatio(row: Row, key: string, reference: string): number | undefined {
  const value = row.stats[key]?.median;
  const ref = row.stats[reference]?.median;
  if (value === undefined || ref === undefined) return undefined;
  return orientedRatio(value, ref, row.better);
}

/** The median (and spread) of the per-repetition ratios of `key` to `reference` (see bench/ratios.ts). */
function pairedSpeedRatio(row: Row, key: string, reference: string): Spread | undefined {
  const withRounds = (k: string) => (row.samples[k] ?? []).map((value, i) => ({ round: row.rounds[k]![i]!, value }));
  return pairedRatio(withRounds(key), withRounds(reference), row.better);
}

/** Whether Wharf (`key`) meets every target of the row that this run can check: 'yes', 'NO' or ''. */
function verdict(row: Row, key: string): string {
  const value = row.stats[key]?.median;
  if (value === undefined) return '';
  const checks: boolean[] = [];
  if (row.target && 'max' in row.target) checks.push(value <= row.target.max);
  if (row.target && 'ratio' in row.target) {
    const ratio = speedRatio(row, key, 'registry2');
    if (ratio !== undefined) checks.push(ratio >= row.target.ratio);
  }
  if (row.floorRatio !== undefined) {
    const ratio = speedRatio(row, key, 'floor');
    if (ratio !== undefined) checks.push(ratio >= row.floorRatio);
  }
  return checks.length === 0 ? '' : checks.every(Boolean) ? 'yes' : 'NO';
}

function num(value: number): string {
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  return value.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** `median unit (min–max)`, the spread left out for a single sample. */
function fmt(stat: Stat | undefined, unit: string): string {
  if (!stat || Number.isNaN(stat.median)) return '–';
  const spread = stat.min === stat.max ? '' : ` (${num(stat.min)}–${num(stat.max)})`;
  return `${num(stat.median)} ${unit}${spread}`;
}

function ratioText(ratio: number | undefined): string {
  return ratio === undefined ? '–' : `${ratio.toFixed(2)}×`;
}

/** The ratio of the medians, then, when there are several pairs, the paired ratio's median and spread. */
function ratioCell(row: Row, key: string, reference: string): string {
  const ratio = ratioText(speedRatio(row, key, reference));
  const paired = pairedSpeedRatio(row, key, reference);
  if (!paired || paired.count < 2) return ratio;
  return `${ratio} (paired ${paired.median.toFixed(2)}×, ${paired.min.toFixed(2)}–${paired.max.toFixed(2)})`;
}

function targetText(row: Row): string {
  const parts: string[] = [];
  if (row.target) parts.push('max' in row.target ? `≤ ${row.target.max} ${row.unit}` : `≥ ${row.target.ratio}× registry:2`);
  if (row.floorRatio !== undefined && Object.keys(row.stats).includes('floor')) parts.push(`≥ ${row.floorRatio}× floor`);
  return parts.join(', ');
}

function markdown(rows: Row[], variants: Variant[], meta: Record<string, unknown>, notes: string[]): string {
  const wharfs = variants.filter((v) => v.kind === 'wharf');
  const lines = [
    `Run ${meta.date} on ${meta.cpus} × ${meta.cpu}, Node ${meta.node}; ${meta.reps} repetitions per server` +
      `${rows.some((r) => r.workload === 10) ? ' (workload 10: one)' : ''}, medians with the spread (min–max) of the ` +
      `repetitions; storage: ${meta.storage}.`,
    `Speed ratio: Wharf/reference for rates, reference/Wharf for times and sizes (above 1 = Wharf faster or smaller). ` +
      `"floor" is the durable floor server (bench/floor-server.ts: hash, write, background flush, fsync before answering), ` +
      `run in the push workloads and, for its peak RSS, in workload 10. ` +
      `Each ratio is that of the medians; "paired" is the median (and spread) of the ratios within each repetition, ` +
      `where the servers run one after the other, which a change of the machine's speed between repetitions moves ` +
      `far less (bench/ratios.ts). "Met" judges the ratio of the medians.`,
    '',
    '| # | Figure | Server | Wharf | registry:2 | floor | vs registry:2 | vs floor | Target | Met |',
    '|---|---|---|---:|---:|---:|---:|---:|---|---|',
  ];
  for (const row of rows) {
    for (const wharf of wharfs) {
      const value = row.error ? `error: ${row.error.split('\n')[0]!.slice(0, 80)}` : fmt(row.stats[wharf.key], row.unit);
      lines.push(`| ${row.workload} | ${row.label} | ${wharf.label} | ${value} | ${fmt(row.stats.registry2, row.unit)} | ` +
        `${fmt(row.stats.floor, row.unit)} | ${ratioCell(row, wharf.key, 'registry2')} | ` +
        `${ratioCell(row, wharf.key, 'floor')} | ${targetText(row)} | ${verdict(row, wharf.key)} |`);
    }
  }
  if (notes.length > 0) lines.push('', ...notes.map((n) => `- ${n}`));
  return `${lines.join('\n')}\n`;
}

function sizesFrom(values: Record<string, string | boolean | undefined>): Sizes {
  const quick = values.quick === true;
  const num = (key: string, fallback: number) => (typeof values[key] === 'string' ? Number(values[key]) : fallback);
  return {
    blobBytes: num('blob-mb', quick ? 32 : 200) * MB,
    smallBlobBytes: num('small-mb', quick ? 2 : 10) * MB,
    concurrentPushes: 20,
    getStreams: 8,
    connections: 50,
    loadSeconds: num('seconds', quick ? 3 : 10),
    tags: quick ? 1_000 : 10_000,
    repositories: quick ? 100 : 1_000,
    imageLayerBytes: quick ? 4 * MB : 64 * MB,
    gcBlobs: num('gc-blobs', quick ? 10_000 : 100_000),
    dockerLayers: 5,
    dockerLayerBytes: num('layer-mb', quick ? 8 : 50) * MB,
    s3: values.s3 === true,
  };
}

/**
 * Bytes the S3 server must hold for a run: per server, the big blob (workload 1), two pushes of it per repetition
 * plus the warm-up (workload 2), the concurrent blobs per repetition (workload 3) and the layers per repetition
 * (workload 9), with room for upload copies.
 */
function s3Capacity(sizes: Sizes, reps: number, servers: number): number {
  const perServer = sizes.blobBytes * (1 + 2 * reps) + sizes.smallBlobBytes * sizes.concurrentPushes * reps +
    sizes.dockerLayerBytes * sizes.dockerLayers * reps + 32 * MB;
  return Math.max(1 << 30, Math.ceil(2 * servers * perServer));
}

interface RunOptions { accessLogOff: boolean; cpuProf?: string; tmp: string; s3?: Record<string, unknown>; floor: boolean }

async function runWorkload(workload: Workload, variants: Variant[], shared: Shared, defaultReps: number, options: RunOptions,
  rows: Row[]): Promise<void> {
  const reps = workload.reps ?? defaultReps;
  const row = (f: Figure): Row => ({ ...f, workload: workload.id, title: workload.title, samples: {}, rounds: {}, stats: {} });
  const figures = workload.figures(shared.sizes).map(row);
  const cpu = row({
    id: `cpu-${workload.id}`, label: `server CPU time per repetition of workload ${workload.id}`, unit: 's', better: 'lower',
  });
  const rssTarget = workload.rssTarget?.(shared.sizes);
  const rss = row({
    id: `rss-${workload.id}`, label: workload.rssLabel ?? `peak RSS during workload ${workload.id}`,
    unit: 'MB', better: 'lower', ...(rssTarget !== undefined ? { target: { max: rssTarget } } : {}),
  });
  const all = [...figures, cpu, rss];
  rows.push(...all);
  const floorRuns = options.floor && (options.s3 ? workload.s3Floor === true : workload.floor === true);
  const running = variants.filter((v) => (v.kind === 'wharf' || !workload.wharfOnly) && (v.kind !== 'floor' || floorRuns));
  const servers: BenchServer[] = [];
  const record = (target: Row, key: string, value: number, round: number) => {
    (target.samples[key] ??= []).push(value);
    (target.rounds[key] ??= []).push(round);
  };
  try {
    for (const variant of running) {
      servers.push(await startServer(variant.kind, {
        key: variant.key,
        accessLogOff: options.accessLogOff,
        tmp: options.tmp,
        s3: options.s3,
        wharfWorkers: variant.workers,
        wharfNodeArgs: options.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProf}`] : undefined,
      }));
    }
    await workload.prepare?.(shared);
    for (const server of servers) await workload.setup?.(server, shared);
    for (let rep = 0; rep < reps; rep++) {
      const order = rep % 2 === 0 ? servers : [...servers].reverse();
      for (const server of order) {
        const cpuBefore = await cpuSeconds(server.pid);
        const values = await workload.measure(server, shared, rep);
        const cpuUsed = (await cpuSeconds(server.pid)) - cpuBefore;
        record(cpu, server.key, cpuUsed, rep);
        for (const figure of figures) {
          if (values[figure.id] !== undefined) record(figure, server.key, values[figure.id]!, rep);
        }
        process.stderr.write(`  ${workload.id} ${server.key.padEnd(9)} rep ${rep + 1}: ${
          Object.entries(values).map(([k, v]) => `${k}=${v.toFixed(2)}`).join(' ')} cpu=${cpuUsed.toFixed(2)}s\n`);
      }
    }
    for (const server of servers) record(rss, server.key, (await peakRss(server.pid)).total / MB, 0);
  } catch (err) {
    const message = (err as Error).message;
    for (const r of all) r.error = message;
    shared.notes.push(`workload ${workload.id} (${workload.title}) failed: ${message.split('\n')[0]}`);
    process.stderr.write(`  workload ${workload.id} failed: ${message}\n`);
  } finally {
    for (const server of servers) await server.stop();
  }
  for (const r of all) {
    for (const [key, values] of Object.entries(r.samples)) {
      const stat = statOf(values);
      if (stat) r.stats[key] = stat;
    }
  }
}

/** --workers: none (Wharf as `wharf serve` starts it), one count, or a list of counts, one Wharf per entry. */
function wharfVariants(workers: string | undefined): Variant[] {
  if (!workers) return [{ key: 'wharf', label: 'Wharf', kind: 'wharf' }];
  const counts = [...new Set(workers.split(',').map((w) => Number(w.trim())))];
  if (counts.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--workers ${workers}: expected counts such as 1 or 1,2`);
  if (counts.length === 1) return [{ key: 'wharf', label: `Wharf, ${counts[0]} worker${counts[0] === 1 ? '' : 's'}`, kind: 'wharf', workers: counts[0] }];
  return counts.map((n) => ({ key: `wharf-${n}`, label: `Wharf, ${n} worker${n === 1 ? '' : 's'}`, kind: 'wharf', workers: n }));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      workloads: { type: 'string' }, reps: { type: 'string' }, quick: { type: 'boolean' },
      'blob-mb': { type: 'string' }, 'small-mb': { type: 'string' }, 'layer-mb': { type: 'string' }, seconds: { type: 'string' },
      'gc-blobs': { type: 'string' }, workers: { type: 'string' }, 'no-access-log': { type: 'boolean' },
      'no-registry2': { type: 'boolean' }, 'no-floor': { type: 'boolean' }, s3: { type: 'boolean' }, 'cpu-prof': { type: 'string' },
      tmp: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const selected = values.workloads ? new Set(values.workloads.split(',').map(Number)) : undefined;
  const s3 = values.s3 === true;
  const workloads = WORKLOADS.filter((w) => (!selected || selected.has(w.id)) && (!s3 || w.s3));
  const reps = values.reps ? Number(values.reps) : values.quick ? 2 : 3;
  const variants = wharfVariants(values.workers);
  const notes: string[] = [];
  if (!values['no-registry2']) {
    if (registry2Available()) variants.push({ key: 'registry2', label: 'registry:2', kind: 'registry2' });
    else notes.push('registry:2 (docker-registry) is not installed: no registry:2 figures.');
  }
  const floor = !values['no-floor'];
  if (floor) variants.push({ key: 'floor', label: 'durable floor', kind: 'floor' });
  if (floor && s3) {
    notes.push('with --s3 the floor server runs workload 3 only: it streams each monolithic push into one PutObject (no part buffers), the least memory a push to S3 can take.');
  }
  if (s3 && selected) {
    const skipped = [...selected].filter((id) => !WORKLOADS.some((w) => w.id === id && w.s3));
    if (skipped.length > 0) notes.push(`with --s3, workloads ${skipped.join(', ')} do not run (they seed the filesystem tree directly).`);
  }
  const parent = values.tmp ? resolve(values.tmp) : tmpdir();
  const work = await mkdtemp(join(parent, 'wharf-bench-work-'));
  const shared: Shared = { work, sizes: sizesFrom(values), files: new Map(), notes };
  const rows: Row[] = [];
  // One S3 server for the whole run, big enough for every blob the servers push (memstore keeps them in RAM).
  const s3Servers = variants.length;
  const s3Server = s3 ? await startS3TestServer({ memoryBytes: s3Capacity(shared.sizes, reps, s3Servers) }) : undefined;
  try {
    for (const workload of workloads) {
      process.stderr.write(`workload ${workload.id}: ${workload.title}\n`);
      await runWorkload(workload, variants, shared, reps, {
        accessLogOff: values['no-access-log'] === true,
        cpuProf: values['cpu-prof'] ? resolve(values['cpu-prof']) : undefined,
        tmp: parent,
        s3: s3Server?.storageConfig(),
        floor,
      }, rows);
    }
  } finally {
    await s3Server?.stop();
    await rm(work, { recursive: true, force: true });
  }
  const meta = {
    date: new Date().toISOString(), node: process.versions.node, cpus: cpus().length, cpu: cpus()[0]?.model.trim(),
    reps, sizes: shared.sizes, servers: variants, accessLog: values['no-access-log'] !== true,
    storage: s3 ? 'S3 (throw-away Ceph RGW on loopback, redirects off)' : 'filesystem',
  };
  const table = markdown(rows, variants, meta, notes);
  const out = resolve(values.out ?? 'bench/results');
  await mkdir(out, { recursive: true });
  await writeFile(join(out, 'latest.md'), table);
  const json = rows.map((r) => ({
    ...r,
    ratios: Object.fromEntries(variants.filter((v) => v.kind === 'wharf').map((v) => [v.key, {
      registry2: speedRatio(r, v.key, 'registry2'), floor: speedRatio(r, v.key, 'floor'), met: verdict(r, v.key) || undefined,
      pairedRegistry2: pairedSpeedRatio(r, v.key, 'registry2'), pairedFloor: pairedSpeedRatio(r, v.key, 'floor'),
    }])),
  }));
  await writeFile(join(out, 'latest.json'), `${JSON.stringify({ meta, notes, rows: json }, null, 2)}\n`);
  process.stdout.write(`\n${table}\nwritten to ${join(out, 'latest.md')} and latest.json\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
