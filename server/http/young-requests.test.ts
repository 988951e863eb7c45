/**
 * A registry that has served long transfers must not move its small requests into the old generation: measured on a
 * running server with V8's GC trace. Two things did (docs/performance.md, Memory): the stall watch's Set, whose
 * replaced tables kept later requests alive (./connections.ts), and V8's allocation-site pretenuring, which Wharf's
 * Node flags turn off (../node-flags.ts). With the Set this test saw 133 KB promoted per young collection, against
 * 12-13 KB now. The pretenuring half showed with the benchmark's clients (curl downloads, wrk) but not with these
 * fetch clients, so it is measured there, not here.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { startWharf } from '../../testing/harness.js';
import { pushBlob, sha256 } from '../../testing/helpers.js';

/** What V8's `--trace-gc-nvp` says of the young-generation collections after `marker` in `output`. */
function scavengesAfter(output: string, marker: string): { count: number; promoted: number } {
  const lines = output.slice(output.indexOf(marker)).split('\n').filter((l) => l.includes(' gc=s '));
  const promoted = lines.map((l) => Number(/ promoted=(\d+)/.exec(l)?.[1] ?? NaN));
  return { count: lines.length, promoted: promoted.reduce((a, b) => a + b, 0) };
}

async function drain(res: Response): Promise<number> {
  let bytes = 0;
  for await (const chunk of res.body!) bytes += (chunk as Uint8Array).length;
  return bytes;
}

test('after long blob downloads, the objects of small requests die young', async (t) => {
  // The access log marks where the load starts in the output.
  const wharf = await startWharf({ nodeArgs: ['--trace-gc-nvp'], config: { log: { level: 'info' } } });
  t.teardown(() => wharf.stop());
  const base = wharf.url;
  // Long transfers, several at once: their stream objects live for seconds (what made V8 pretenure them).
  const blob = randomBytes(128 * 1024 * 1024);
  const digest = await pushBlob(base, 'heap/big', blob);
  const sizes = await Promise.all(Array.from({ length: 8 }, async () => drain(await fetch(`${base}/v2/heap/big/blobs/${digest}`))));
  t.deepEqual(new Set(sizes), new Set([blob.length]));

  const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
  await pushBlob(base, 'heap/small', config);
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length }, layers: [],
  });
  const put = await fetch(`${base}/v2/heap/small/manifests/latest`, { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  t.is(put.status, 201, await put.text());

  const marker = 'heap-test-load-starts';
  await (await fetch(`${base}/v2/${marker}/tags/list`)).arrayBuffer();
  let left = 6_000;
  const statuses = new Set<number>();
  await Promise.all(Array.from({ length: 50 }, async () => {
    while (left-- > 0) {
      const res = await fetch(`${base}/v2/heap/small/manifests/latest`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
      await res.arrayBuffer();
      statuses.add(res.status);
    }
  }));
  t.deepEqual(statuses, new Set([200]));
  const { count, promoted } = scavengesAfter(wharf.output(), marker);
  t.log(`${count} young collections, ${(promoted / count / 1024).toFixed(1)} KB promoted each on average`);
  t.true(count >= 10, `only ${count} young collections ran: too few to judge`);
  // Measured: 12-13 KB now, 133 KB with the stall watch's Set.
  t.true(promoted / count < 50 * 1024, `${(promoted / count / 1024).toFixed(0)} KB promoted per young collection`);
});
