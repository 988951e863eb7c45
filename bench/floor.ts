/**
 * `npm run bench:floor [-- options]`: how fast a push can be on this machine at all, beside Wharf and registry:2.
 *
 * The same curl pushes the same blobs (one large one, then many small ones at once) into minimal Node servers
 * (bench/floor-server.ts) that do less and less of a push's work: layout (durable, plus what a push into registry:2's
 * storage layout does on disk: the session's folder, the rename into the content store, the repository's link
 * written and flushed; pushed through the registry API, as Wharf is), durable (hash, write, flush to disk), write
 * (hash and write), hash, discard. What they reach bounds what any registry written for Node can reach here (they
 * run with the same Node flags as Wharf), and shows which step costs what. Wharf and, when installed, registry:2
 * are measured in the same run, with content new to them in every repetition. All servers run at once and push in
 * turn, the order reversed every other repetition (see measureAlternating). Medians of the repetitions, and the
 * server's CPU time per repetition.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { MB, makeBlobFile, median, pushConcurrently, pushMonolithic, runProcess } from './client.js';
import { pairedRatio } from './ratios.js';
import { cpuSeconds, registry2Available, startServer, type ServerKind } from './servers.js';

const HELP = `usage: npm run bench:floor -- [options]
  --mb N          size of the single pushed blob in MB (default 200)
  --concurrent N  concurrent pushes (default 20)
  --small-mb N    size of each concurrent blob in MB (default 10)
  --reps N        repetitions per server (default 5)
  --tmp DIR       where the blobs and the servers' storage go (default: the OS temp dir)
`;

const MODES = ['layout', 'durable', 'write', 'hash', 'discard'] as const;

/** A server's medians, and its rate in each repetition (in order) for the paired ratios. */
interface Result { server: string; rate: number; cpu: number; rates: number[] }


/** PUT `file` to a floor server with curl; checks the digest it answers (modes that hash). */
async function floorPush(url: string, file: { path: string; digest: string }, hashes: boolean): Promise<void> {
  const r = await runProcess('curl', ['-sS', '-H', 'Expect:', '-T', file.path, '-w', '\n%{http_code}', url]);
  const [body, status] = r.stdout.split('\n');
  if (r.code !== 0 || status !== '201') throw new Error(`floor push: curl exit ${r.code}, status ${status} ${r.stderr}`);
  if (hashes && `sha256:${body}` !== file.digest) throw new Error(`floor push: digest ${body}, expected ${file.digest}`);
}

/** A server under measurement: its name, its process (for CPU time) and one push of repetition `rep` (-1: warm-up). */
interface Contender {
  server: string;
  pid: number;
  push(rep: number): Promise<number>;
}

/**
 * Every contender pushes once per repetition, in turn, the order reversed every other repetition, after one
 * unmeasured warm-up each: the state of the machine (its page cache and write-back, other load) then weighs on all
 * of them alike. Run one after the other, the same servers measured 0.80x where alternating measured 0.94x.
 */
async function measureAlternating(contenders: Contender[], reps: number): Promise<Result[]> {
  for (const c of contenders) await c.push(-1);
  const rates = contenders.map((): number[] => []);
  const cpus = contenders.map((): number[] => []);
  for (let rep = 0; rep < reps; rep++) {
    const order = contenders.map((_, i) => i);
    if (rep % 2 === 1) order.reverse();
    for (const i of order) {
      const c = contenders[i]!;
      const cpuBefore = await cpuSeconds(c.pid);
      const started = process.hrtime.bigint();
      const bytes = await c.push(rep);
      rates[i]!.push(bytes / MB / (Number(process.hrtime.bigint() - started) / 1e9));
      cpus[i]!.push((await cpuSeconds(c.pid)) - cpuBefore);
    }
  }
  return contenders.map((c, i) => {
    const result = { server: c.server, rate: median(rates[i]!), cpu: median(cpus[i]!), rates: rates[i]! };
    process.stdout.write(`  ${c.server}: ${result.rate.toFixed(0)} MB/s, ${result.cpu.toFixed(2)} s CPU per repetition\n`);
    return result;
  });
}

interface BlobFile { path: string; digest: string; size: number }

/** One kind of push, measured on every server: `files[set]` are the blobs of one push (a set per repetition). */
interface PushCase {
  title: string;
  files: BlobFile[][];
}

/** PUT every file of `files` at once to a floor server, with one curl. */
async function floorPushAll(url: string, files: BlobFile[]): Promise<void> {
  const args = ['-sS', '-H', 'Expect:', '-Z', '--parallel-max', String(files.length), '-w', '%{http_code}\n'];
  for (const f of files) args.push('-T', f.path, '-o', '/dev/null', url);
  const r = await runProcess('curl', args);
  const statuses = r.stdout.trim().split('\n');
  if (r.code !== 0 || statuses.length !== files.length || statuses.some((s) => s !== '201')) {
    throw new Error(`floor pushes: curl exit ${r.code}, statuses ${statuses.join(' ')} ${r.stderr}`);
  }
}

async function makeFiles(work: string, name: string, count: number, size: number, seed: number): Promise<BlobFile[]> {
  const files: BlobFile[] = [];
  for (let i = 0; i < count; i++) {
    const path = join(work, `${name}-${i}.bin`);
    files.push({ path, size, digest: await makeBlobFile(path, size, seed + i) });
  }
  return files;
}

async function measureCase(pushCase: PushCase, reps: number, work: string): Promise<Result[]> {
  process.stdout.write(`${pushCase.title}\n`);
  const bytes = pushCase.files[0]!.reduce((a, f) => a + f.size, 0);
  // The files of set 0 warm every server up; registries (and the layout floor) get a fresh set per repetition (one
  // that already has a blob skips storing it), while the other floor servers store nothing and take set 0 every time.
  const registryPush = (base: string, files: BlobFile[], rep: number) => files.length === 1
    ? pushMonolithic(base, `floor/push-${rep + 1}`, files[0]!.path, files[0]!.size, files[0]!.digest)
    : pushConcurrently(base, `floor/many-${rep + 1}`, files);
  const stops: Array<() => Promise<void> | void> = [];
  try {
    const contenders: Contender[] = [];
    for (const mode of MODES) {
      const server = await startServer('floor', { tmp: work, floorMode: mode });
      stops.push(() => server.stop());
      contenders.push({
        server: `Node floor: ${mode}`,
        pid: server.pid,
        push: async (rep) => {
          if (mode === 'layout') {
            // Through the registry API into the layout, as Wharf is pushed.
            await registryPush(server.url, pushCase.files[rep + 1]!, rep);
            return bytes;
          }
          // Any path outside /v2/: the plain push, answered with the digest.
          const files = pushCase.files[0]!;
          if (files.length === 1) await floorPush(`${server.url}/`, files[0]!, mode !== 'discard');
          else await floorPushAll(`${server.url}/`, files);
          return bytes;
        },
      });
    }
    const kinds: ServerKind[] = registry2Available() ? ['wharf', 'registry2'] : ['wharf'];
    for (const kind of kinds) {
      const server = await startServer(kind, { tmp: work });
      stops.push(() => server.stop());
      contenders.push({
        server: kind === 'wharf' ? 'Wharf' : 'registry:2',
        pid: server.pid,
        push: async (rep) => {
          await registryPush(server.url, pushCase.files[rep + 1]!, rep);
          return bytes;
        },
      });
    }
    return await measureAlternating(contenders, reps);
  } finally {
    for (const stop of stops) await stop();
  }
}

/** Wharf's rate against `other`'s, repetition by repetition (bench/ratios.ts): `median× (min–max)`. */
function pairedAgainst(wharf: Result | undefined, other: Result): string {
  if (!wharf || wharf === other) return '–';
  const rounds = (r: Result) => r.rates.map((value, round) => ({ round, value }));
  const paired = pairedRatio(rounds(wharf), rounds(other), 'higher');
  return paired ? `${paired.median.toFixed(2)}× (${paired.min.toFixed(2)}–${paired.max.toFixed(2)})` : '–';
}

function table(pushCase: PushCase, results: Result[]): string[] {
  const reference = results.find((r) => r.server === 'registry:2');
  const wharf = results.find((r) => r.server === 'Wharf');
  return [
    `${pushCase.title}, medians; the last column is Wharf's rate over this server's within each repetition:`,
    '',
    '| Server | Rate | Server CPU per repetition | Rate / registry:2 | Wharf / this server, paired |',
    '|---|---:|---:|---:|---:|',
    ...results.map((r) => `| ${r.server} | ${r.rate.toFixed(0)} MB/s | ${r.cpu.toFixed(2)} s | ${
      reference ? `${(r.rate / reference.rate).toFixed(2)}×` : '–'} | ${pairedAgainst(wharf, r)} |`),
    '',
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      mb: { type: 'string' }, 'small-mb': { type: 'string' }, concurrent: { type: 'string' }, reps: { type: 'string' },
      tmp: { type: 'string' }, help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const size = Number(values.mb ?? 200) * MB;
  const smallSize = Number(values['small-mb'] ?? 10) * MB;
  const concurrent = Number(values.concurrent ?? 20);
  const reps = Number(values.reps ?? 5);
  const parent = values.tmp ? resolve(values.tmp) : tmpdir();
  const work = await mkdtemp(join(parent, 'wharf-floor-'));
  try {
    const sets = Array.from({ length: reps + 1 }, (_, i) => i);
    const cases: PushCase[] = [
      {
        title: `One push of a ${Math.round(size / MB)} MB blob with curl (monolithic PUT), ${reps} repetitions`,
        files: await Promise.all(sets.map((i) => makeFiles(work, `big-${i}`, 1, size, 50_000 + i))),
      },
      {
        title: `${concurrent} concurrent pushes of ${Math.round(smallSize / MB)} MB blobs with one curl, ${reps} repetitions`,
        files: await Promise.all(sets.map((i) => makeFiles(work, `small-${i}`, concurrent, smallSize, 60_000 + i * 1000))),
      },
    ];
    const lines: string[] = [];
    for (const pushCase of cases) lines.push(...table(pushCase, await measureCase(pushCase, reps, work)));
    process.stdout.write(`\n${lines.join('\n')}`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
