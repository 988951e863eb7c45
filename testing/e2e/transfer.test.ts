/**
 * Checks of the memory-test instruments: the generated stream is exact and reproducible, and the RSS sampler really
 * sees another process grow (so a passing memory test means the server stayed small, not that nothing was measured).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { GiB, MiB, PseudoRandomStream, RssSampler, residentBytes } from './transfer.js';
import { waitFor } from '../helpers.js';

async function consume(stream: PseudoRandomStream): Promise<{ bytes: number; digest: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, digest: 'sha256:' + hash.digest('hex') };
}

test('PseudoRandomStream yields exactly its size, reports its digest, and repeats per seed', async (t) => {
  const size = 3 * MiB + 123; // not a multiple of the chunk size
  const a = new PseudoRandomStream(size, 5);
  t.throws(() => a.digest, { message: /before the end/ });
  const first = await consume(a);
  t.is(first.bytes, size);
  t.is(a.digest, first.digest);
  t.is((await consume(new PseudoRandomStream(size, 5))).digest, first.digest, 'same seed, same bytes');
  t.not((await consume(new PseudoRandomStream(size, 6))).digest, first.digest, 'another seed, other bytes');
  t.not((await consume(new PseudoRandomStream(size, 5 + 256))).digest, first.digest, 'the whole seed counts, not its low byte');
  t.is((await consume(new PseudoRandomStream(0))).bytes, 0);
});

test('RssSampler sees another process allocate and touch 200 MiB', async (t) => {
  // The child waits for a line on stdin, then allocates and writes 200 MiB (so the pages are resident), reports,
  // and waits to be killed.
  const child = spawn(process.execPath, ['-e', `
    process.stdin.once('data', () => {
      globalThis.keep = Buffer.allocUnsafe(200 * 1024 * 1024).fill(1);
      console.log('grown');
    });
    console.log('ready');
  `], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => { child.kill(); });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  await waitFor('child ready', async () => (out.includes('ready') ? true : undefined));

  const baseline = await residentBytes(child.pid!);
  const sampler = new RssSampler(child.pid!, 10).start();
  child.stdin!.write('go\n');
  await waitFor('child grown', async () => (out.includes('grown') ? true : undefined));
  const peak = await sampler.stop();
  t.true(sampler.samples >= 1);
  t.true(peak - baseline >= 190 * MiB, `peak ${peak} baseline ${baseline}`);
  t.true(peak < 1 * GiB);

  child.kill();
  await once(child, 'exit');
});
