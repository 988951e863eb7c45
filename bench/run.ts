/**
 * `npm run bench [-- options]`: Wharf and registry:2 side by side (issue 8).
 *
 * For each selected workload both servers are started fresh (loopback, empty storage, equivalent config); the
 * unmeasured setup runs on each, then the repetitions alternate between the servers (W R, R W, W R, ...). Figures
 * are medians over the repetitions; the speed ratio is Wharf/registry:2 for throughput and registry:2/Wharf for
 * times, so above 1 always means Wharf is faster. Peak RSS is the kernel's high-water mark (VmHWM) of each server
 * process over its whole workload, setup included. Server CPU time (user + system, from /proc) is reported too: on a
 * busy machine it is steadier than the rates, so it is the figure to compare two builds by.
 * Results go to bench/results/latest.{md,json}.
 *
 * Without registry:2 installed (or with --no-registry2) only Wharf's figures are reported. With --s3 both servers
 * store in one throw-away S3 server (the Ceph RGW of testing/s3-test-server.ts) and only the workloads that
 * go through the registry API run.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { median, MB } from './client.js';
import { cpuSeconds, peakRss, registry2Available, startServer, type BenchServer, type ServerKind } from './servers.js';
import { WORKLOADS, type Figure, type Shared, type Sizes, type Workload } from './workloads.js';
import { startS3TestServer } from '../testing/s3-test-server.js';

const HELP = `usage: npm run bench -- [options]
  --workloads 1,2,4     run only these workloads (default: all, 1-8)
  --reps N              repetitions per server (default 3; 2 with --quick)
  --quick               small sizes for a fast check (32 MB blob, 2 MB x 20, 1,000 tags, 3 s load, 10,000 GC blobs)
  --blob-mb N           size of the big blob of workloads 1-2 (default 200)
  --small-mb N          size of each of the 20 concurrent blobs of workload 3 (default 10)
  --seconds N           load duration per repetition of workload 4 (default 10)
  --gc-blobs N          blobs in the registry for workload 7 (default 100000)
  --workers N           run Wharf with N worker processes (wharf serve --workers N)
  --no-access-log       turn the access log off on both servers
  --no-registry2        Wharf only
  --cpu-prof DIR        run Wharf under node --cpu-prof, profiles into DIR (summarise: node dist/bench/profile.js DIR)
  --s3                  both servers store in S3: a throw-away Ceph RGW (testing/s3-test-server.ts, needs
                        ceph-mon, ceph-osd, radosgw); runs workloads 1-4 only, redirects off
  --tmp DIR             parent of the servers' storage and the input files (default: the OS temp dir;
                        /dev/shm takes the disk out of the figures)
  --out DIR             where to write latest.md and latest.json (default bench/results)
`;

interface Cell { wharf?: number; registry2?: number; samples: { wharf: number[]; registry2: number[] } }

interface Row extends Figure { workload: number; title: string; cell: Cell; error?: string }

function speedRatio(row: Row): number | undefined {
  const { wharf, registry2 } = row.cell;
  if (wharf === undefined || registry2 === undefined || wharf === 0 || registry2 === 0) return undefined;
  return row.better === 'higher' ? wharf / registry2 : registry2 / wharf;
}

function verdict(row: Row): string {
  if (!row.target || row.cell.wharf === undefined) return '';
  if ('max' in row.target) return row.cell.wharf <= row.target.max ? 'yes' : 'NO';
  const ratio = speedRatio(row);
  return ratio === undefined ? '' : ratio >= row.target.ratio ? 'yes' : 'NO';
}

function fmt(value: number | undefined, unit: string): string {
  if (value === undefined || Number.isNaN(value)) return '–';
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits })} ${unit}`;
}

function targetText(row: Row): string {
  if (!row.target) return '';
  return 'max' in row.target ? `≤ ${row.target.max} ${row.unit}` : `≥ ${row.target.ratio}×`;
}

function markdown(rows: Row[], meta: Record<string, unknown>, notes: string[]): string {
  const lines = [
    `Run ${meta.date} on ${meta.cpus} × ${meta.cpu}, Node ${meta.node}; ${meta.reps} repetitions per server, medians; ` +
      `storage: ${meta.storage}.`,
    `Speed ratio: Wharf/registry:2 for rates, registry:2/Wharf for times (above 1 = Wharf faster).`,
    '',
    '| # | Figure | Wharf | registry:2 | Speed ratio | Target | Met |',
    '|---|---|---:|---:|---:|---|---|',
  ];
  for (const row of rows) {
    const ratio = speedRatio(row);
    const wharf = row.error ? `error: ${row.error.split('\n')[0]!.slice(0, 80)}` : fmt(row.cell.wharf, row.unit);
    lines.push(`| ${row.workload} | ${row.label} | ${wharf} | ${fmt(row.cell.registry2, row.unit)} | ` +
      `${ratio === undefined ? '–' : `${ratio.toFixed(2)}×`} | ${targetText(row)} | ${verdict(row)} |`);
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
  };
}

/**
 * Bytes the S3 server must hold for a run: per server, the big blob (workload 1), two pushes of it per repetition
 * plus the warm-up (workload 2) and the concurrent blobs per repetition (workload 3), with room for upload copies.
 */
function s3Capacity(sizes: Sizes, reps: number): number {
  const perServer = sizes.blobBytes * (1 + 2 * reps) + sizes.smallBlobBytes * sizes.concurrentPushes * reps + 32 * MB;
  return Math.max(1 << 30, Math.ceil(2 * 2 * perServer));
}

async function runWorkload(workload: Workload, kinds: ServerKind[], shared: Shared, reps: number, options: {
  accessLogOff: boolean; workers?: number; cpuProf?: string; tmp: string; s3?: Record<string, unknown>;
}, rows: Row[]): Promise<void> {
  const figures = workload.figures(shared.sizes).map((f): Row => ({
    ...f, workload: workload.id, title: workload.title, cell: { samples: { wharf: [], registry2: [] } },
  }));
  const cpu: Row = {
    id: `cpu-${workload.id}`, label: `server CPU time per repetition of workload ${workload.id}`, unit: 's',
    better: 'lower', workload: workload.id, title: workload.title, cell: { samples: { wharf: [], registry2: [] } },
  };
  const rss: Row = {
    id: `rss-${workload.id}`, label: `peak RSS during workload ${workload.id}`, unit: 'MB', better: 'lower',
    target: { max: 150 }, workload: workload.id, title: workload.title, cell: { samples: { wharf: [], registry2: [] } },
  };
  rows.push(...figures, cpu, rss);
  const running = workload.wharfOnly ? kinds.filter((k) => k === 'wharf') : kinds;
  const servers: BenchServer[] = [];
  try {
    for (const kind of running) {
      servers.push(await startServer(kind, {
        accessLogOff: options.accessLogOff,
        tmp: options.tmp,
        s3: options.s3,
        wharfWorkers: options.workers,
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
        cpu.cell.samples[server.kind].push(cpuUsed);
        for (const row of figures) {
          if (values[row.id] !== undefined) row.cell.samples[server.kind].push(values[row.id]!);
        }
        process.stderr.write(`  ${workload.id} ${server.kind.padEnd(9)} rep ${rep + 1}: ${
          Object.entries(values).map(([k, v]) => `${k}=${v.toFixed(2)}`).join(' ')} cpu=${cpuUsed.toFixed(2)}s\n`);
      }
    }
    for (const server of servers) {
      const peak = await peakRss(server.pid);
      rss.cell.samples[server.kind].push(peak.total / MB);
    }
  } catch (err) {
    const message = (err as Error).message;
    for (const row of [...figures, cpu, rss]) row.error = message;
    shared.notes.push(`workload ${workload.id} (${workload.title}) failed: ${message.split('\n')[0]}`);
    process.stderr.write(`  workload ${workload.id} failed: ${message}\n`);
  } finally {
    for (const server of servers) await server.stop();
  }
  for (const row of [...figures, cpu, rss]) {
    for (const kind of ['wharf', 'registry2'] as const) {
      if (row.cell.samples[kind].length > 0) row.cell[kind] = median(row.cell.samples[kind]);
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      workloads: { type: 'string' }, reps: { type: 'string' }, quick: { type: 'boolean' },
      'blob-mb': { type: 'string' }, 'small-mb': { type: 'string' }, seconds: { type: 'string' },
      'gc-blobs': { type: 'string' }, workers: { type: 'string' }, 'no-access-log': { type: 'boolean' },
      'no-registry2': { type: 'boolean' }, s3: { type: 'boolean' }, 'cpu-prof': { type: 'string' }, tmp: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' },
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
  const kinds: ServerKind[] = ['wharf'];
  const notes: string[] = [];
  if (!values['no-registry2']) {
    if (registry2Available()) kinds.push('registry2');
    else notes.push('registry:2 (docker-registry) is not installed: Wharf figures only.');
  }
  if (s3 && selected) {
    const skipped = [...selected].filter((id) => !WORKLOADS.some((w) => w.id === id && w.s3));
    if (skipped.length > 0) notes.push(`with --s3, workloads ${skipped.join(', ')} do not run (they seed the filesystem tree directly).`);
  }
  const parent = values.tmp ? resolve(values.tmp) : tmpdir();
  const work = await mkdtemp(join(parent, 'wharf-bench-work-'));
  const shared: Shared = { work, sizes: sizesFrom(values), files: new Map(), notes };
  const rows: Row[] = [];
  // One S3 server for the whole run, big enough for every blob both servers push (memstore keeps them in RAM).
  const s3Server = s3 ? await startS3TestServer({ memoryBytes: s3Capacity(shared.sizes, reps) }) : undefined;
  try {
    for (const workload of workloads) {
      process.stderr.write(`workload ${workload.id}: ${workload.title}\n`);
      await runWorkload(workload, kinds, shared, reps, {
        accessLogOff: values['no-access-log'] === true,
        workers: values.workers ? Number(values.workers) : undefined,
        cpuProf: values['cpu-prof'] ? resolve(values['cpu-prof']) : undefined,
        tmp: parent,
        s3: s3Server?.storageConfig(),
      }, rows);
    }
  } finally {
    await s3Server?.stop();
    await rm(work, { recursive: true, force: true });
  }
  const meta = {
    date: new Date().toISOString(), node: process.versions.node, cpus: cpus().length, cpu: cpus()[0]?.model.trim(),
    reps, sizes: shared.sizes, servers: kinds, accessLog: values['no-access-log'] !== true,
    workers: values.workers ? Number(values.workers) : 1,
    storage: s3 ? 'S3 (throw-away Ceph RGW on loopback, redirects off)' : 'filesystem',
  };
  const table = markdown(rows, meta, notes);
  const out = resolve(values.out ?? 'bench/results');
  await mkdir(out, { recursive: true });
  await writeFile(join(out, 'latest.md'), table);
  await writeFile(join(out, 'latest.json'), `${JSON.stringify({ meta, notes, rows: rows.map((r) => ({ ...r, ratio: speedRatio(r) })) }, null, 2)}\n`);
  process.stdout.write(`\n${table}\nwritten to ${join(out, 'latest.md')} and latest.json\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
