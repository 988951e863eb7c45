/** The batched log lines of a process that ends: they are written as it exits, not lost with its last turn. */
import test from 'ava';
import { spawn } from 'node:child_process';

test('a process that exits right after logging, or dies of an uncaught exception, still writes its lines', async (t) => {
  const logging = new URL('./logging.js', import.meta.url).href;
  const configModule = new URL('./config/index.js', import.meta.url).href;
  const run = (end: string) => new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
    const script = `
      const { createLogger } = await import(${JSON.stringify(logging)});
      const { parseConfig } = await import(${JSON.stringify(configModule)});
      const { config } = parseConfig('version: 0.1\\nlog: {formatter: json}\\nstorage: {inmemory: {}}\\n', {}, 'test');
      const logger = createLogger(config);
      logger.info('first');
      logger.error('last words');
      ${end}`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString('utf8'); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout }));
  });
  for (const [end, code] of [['process.exit(3);', 3], ["throw new Error('boom');", 1]] as const) {
    const result = await run(end);
    t.is(result.code, code, end);
    t.deepEqual(result.stdout.trim().split('\n').map((l) => JSON.parse(l).msg), ['first', 'last words'], end);
  }
});
