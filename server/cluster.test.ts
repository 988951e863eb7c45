import test from 'ava';
import { readFile } from 'node:fs/promises';
import { startWharf } from '../testing/harness.js';
import { parseWorkers } from './cluster.js';

test('parseWorkers takes a positive integer or auto', (t) => {
  t.is(parseWorkers('3'), 3);
  t.true(parseWorkers('auto') >= 1);
  for (const bad of ['0', '-1', '1.5', 'two', '']) t.throws(() => parseWorkers(bad));
});

test('with WHARF_WORKERS=2 the primary runs two serving workers on one port, and SIGTERM stops them all', async (t) => {
  const wharf = await startWharf({ env: { WHARF_WORKERS: '2' } });
  try {
    const pid = wharf.process.pid!;
    const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/);
    t.is(children.length, 2);
    // Several fresh connections, so both workers get some; every one must answer like a single server.
    const blob = Buffer.from('cluster test blob');
    const { createHash } = await import('node:crypto');
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const put = await fetch(`${wharf.url}/v2/cluster/test/blobs/uploads/?digest=${digest}`, {
      method: 'POST', body: blob, headers: { 'Content-Type': 'application/octet-stream', Connection: 'close' },
    });
    t.is(put.status, 201);
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${wharf.url}/v2/cluster/test/blobs/${digest}`, { headers: { Connection: 'close' } });
      t.is(res.status, 200);
      t.deepEqual(Buffer.from(await res.arrayBuffer()), blob);
    }
  } finally {
    t.is(await wharf.stop(), 0);
  }
});
