/**
 * Summarise V8 CPU profiles (`node --cpu-prof`, as `npm run bench -- --cpu-prof DIR` writes them): self time per
 * function, and time per package or source area, so the hot spots of a workload can be read without a browser.
 *
 *   node dist/bench/profile.js DIR|FILE.cpuprofile [--top 30]
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

function area(url: string): string {
  if (url === '') return '(native/V8)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return url.split('/')[0]!;
  const dist = /dist\/(.*)$/.exec(url);
  return dist ? dist[1]!.replace(/\.js$/, '') : url;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string' } } });
  const top = Number(values.top ?? 30);
  const target = positionals[0];
  if (!target) throw new Error('usage: profile.js DIR|FILE.cpuprofile');
  const files = (await stat(target)).isDirectory()
    ? (await readdir(target)).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(target, f))
    : [target];
  const selfByFn = new Map<string, number>();
  const selfByArea = new Map<string, number>();
  let total = 0;
  for (const file of files) {
    const profile = JSON.parse(await readFile(file, 'utf8')) as Profile;
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    profile.samples.forEach((id, i) => {
      const node = byId.get(id)!;
      const dt = profile.timeDeltas[i] ?? 0;
      const { functionName, url, lineNumber } = node.callFrame;
      const key = `${functionName || '(anonymous)'} ${area(url)}:${lineNumber + 1}`;
      selfByFn.set(key, (selfByFn.get(key) ?? 0) + dt);
      selfByArea.set(area(url), (selfByArea.get(area(url)) ?? 0) + dt);
      total += dt;
    });
  }
  const show = (title: string, map: Map<string, number>) => {
    process.stdout.write(`\n${title}\n`);
    for (const [key, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      process.stdout.write(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}\n`);
    }
  };
  process.stdout.write(`${files.length} profile(s), ${(total / 1e6).toFixed(1)} s sampled`);
  show('self time by area', selfByArea);
  show('self time by function', selfByFn);
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
