/**
 * `npm run bench:floor [-- options]`: how fast a push can be on this machine at all, beside Wharf and registry:2.
 *
 * The same curl pushes the same size of blob into minimal Node servers (bench/floor-server.ts) that do less and
 * less of a push's work: durable (hash, write, flush to disk), write (hash and write), hash, discard. What they
 * reach bounds what any registry written for Node can reach here, and shows which step costs what; Wharf and,
 * when installed, registry:2 are measured in the same run with fresh content for every push. Medians of the
 * repetitions, and the server's CPU time per push.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MB, makeBlobFile, median, pushMonolithic, runProcess } from './client.js';
import { cpuSeconds, registry2Available, startServer, type ServerKind } from './servers.js';
import { freePort } from '../conformance/harness.js';

const HELP = `usage: npm run bench:floor -- [options]
  --mb N      blob size in MB (default 200)
  --reps N    pushes per server (default 5)
  --tmp DIR   where the blobs and the servers' storage go (default: the OS temp dir)
`;

const FLOOR_SERVER = join(dirname(fileURLToPath(import.meta.url)), 'floor-server.js');
const MODES = ['durable', 'write', 'hash', 'discard'] as const;

interface Result { server: string; rate: number; cpu: number }

async function startFloorServer(mode: string, dir: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(process.execPath, [FLOOR_SERVER, mode, String(port), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((ready, fail) => {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { if (d.includes('ready')) ready(); });
    child.once('exit', (code) => fail(new Error(`floor server ${mode} exited with ${code}`)));
  });
  return { url: `http://127.0.0.1:${port}/`, child };
}

/** PUT `file` to a floor server with curl; checks the digest it answers (modes that hash). */
async function floorPush(url: string, file: { path: string; digest: string }, hashes: boolean): Promise<void> {
  const r = await runProcess('curl', ['-sS', '-H', 'Expect:', '-T', file.path, '-w', '\n%{http_code}', url]);
  const [body, status] = r.stdout.split('\n');
  if (r.code !== 0 || status !== '201') throw new Error(`floor push: curl exit ${r.code}, status ${status} ${r.stderr}`);
  if (hashes && `sha256:${body}` !== file.digest) throw new Error(`floor push: digest ${body}, expected ${file.digest}`);
}

async function measure(server: string, pid: number, reps: number, push: (rep: number) => Promise<number>): Promise<Result> {
  await push(-1); // warm-up, not measured
  const rates: number[] = [];
  const cpus: number[] = [];
  for (let rep = 0; rep < reps; rep++) {
    const cpuBefore = await cpuSeconds(pid);
    const started = process.hrtime.bigint();
    const bytes = await push(rep);
    rates.push(bytes / MB / (Number(process.hrtime.bigint() - started) / 1e9));
    cpus.push((await cpuSeconds(pid)) - cpuBefore);
  }
  const result = { server, rate: median(rates), cpu: median(cpus) };
  process.stdout.write(`  ${server}: ${result.rate.toFixed(0)} MB/s, ${result.cpu.toFixed(2)} s CPU per push\n`);
  return result;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { mb: { type: 'string' }, reps: { type: 'string' }, tmp: { type: 'string' }, help: { type: 'boolean' } },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const size = Number(values.mb ?? 200) * MB;
  const reps = Number(values.reps ?? 5);
  const parent = values.tmp ? resolve(values.tmp) : tmpdir();
  const work = await mkdtemp(join(parent, 'wharf-floor-'));
  try {
    // Fresh content for every push into a registry (one that already has a blob skips storing it); the floor
    // servers store nothing, so they take the first file every time.
    const files: Array<{ path: string; digest: string; size: number }> = [];
    for (let i = 0; i <= reps; i++) {
      const path = join(work, `blob-${i}.bin`);
      files.push({ path, size, digest: await makeBlobFile(path, size, 50_000 + i) });
    }
    const fileFor = (rep: number) => files[rep + 1]!;
    const results: Result[] = [];

    for (const mode of MODES) {
      const { url, child } = await startFloorServer(mode, work);
      try {
        results.push(await measure(`Node floor: ${mode}`, child.pid!, reps, async () => {
          await floorPush(url, files[0]!, mode !== 'discard');
          return size;
        }));
      } finally {
        child.kill('SIGTERM');
      }
    }

    const kinds: ServerKind[] = registry2Available() ? ['wharf', 'registry2'] : ['wharf'];
    for (const kind of kinds) {
      const server = await startServer(kind, { tmp: work });
      try {
        results.push(await measure(kind === 'wharf' ? 'Wharf' : 'registry:2', server.pid, reps, async (rep) => {
          const file = fileFor(rep);
          await pushMonolithic(server.url, `floor/push-${rep + 1}`, file.path, file.size, file.digest);
          return file.size;
        }));
      } finally {
        await server.stop();
      }
    }

    const reference = results.find((r) => r.server === 'registry:2');
    const lines = [
      `Push of a ${Math.round(size / MB)} MB blob with curl (monolithic PUT), ${reps} pushes each, medians.`,
      '',
      '| Server | Rate | CPU per push | Rate / registry:2 |',
      '|---|---:|---:|---:|',
      ...results.map((r) => `| ${r.server} | ${r.rate.toFixed(0)} MB/s | ${r.cpu.toFixed(2)} s | ${
        reference ? `${(r.rate / reference.rate).toFixed(2)}×` : '–'} |`),
    ];
    process.stdout.write(`\n${lines.join('\n')}\n`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
