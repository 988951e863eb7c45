import test from 'ava';
import { PassThrough } from 'node:stream';
import { parseConfig } from './config/index.js';
import { createLogger, toLogfmt } from './logging.js';

function capture(formatter: 'json' | 'text') {
  const { config } = parseConfig(`version: 0.1\nlog: {level: debug, formatter: ${formatter}, fields: {env: test}}\nstorage: {inmemory: {}}\n`, {}, 'test');
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => { text += d.toString('utf8'); });
  return { logger: createLogger(config, out), text: () => text };
}

async function settled(read: () => string): Promise<string> {
  for (let i = 0; i < 100 && !read().endsWith('\n'); i++) await new Promise((r) => setImmediate(r));
  return read();
}

test('json lines carry the level name, static fields, and never an Authorization header', async (t) => {
  const { logger, text } = capture('json');
  logger.info({ headers: { authorization: 'Basic c2VjcmV0OnNlY3JldA==' }, password: 'hunter2', repo: 'a/b' }, 'hello');
  const line = await settled(text);
  const record = JSON.parse(line);
  t.is(record.level, 'info');
  t.is(record.msg, 'hello');
  t.is(record.env, 'test');
  t.is(record.repo, 'a/b');
  t.false(line.includes('c2VjcmV0'));
  t.false(line.includes('hunter2'));
});

test('text format writes logfmt lines', async (t) => {
  const { logger, text } = capture('text');
  logger.warn({ url: 'http://127.0.0.1:5000', note: 'two words' }, 'listening now');
  const line = await settled(text);
  t.regex(line, /^time=\S+ level=warn msg="listening now" /);
  t.true(line.includes('url=http://127.0.0.1:5000'));
  t.true(line.includes('note="two words"'));
  t.is(toLogfmt('not json'), 'not json');
});

test('without log.formatter, a terminal gets text lines and anything else JSON', async (t) => {
  const { config } = parseConfig('version: 0.1\nstorage: {inmemory: {}}\n', {}, 'test');
  t.is(config.log.formatter, 'auto');
  for (const tty of [true, false]) {
    const out = Object.assign(new PassThrough(), { isTTY: tty });
    let text = '';
    out.on('data', (d: Buffer) => { text += d.toString('utf8'); });
    createLogger(config, out).info('hello');
    const line = await settled(() => text);
    if (tty) t.regex(line, /^time=\S+ level=info msg=hello/);
    else t.is(JSON.parse(line).msg, 'hello');
  }
});

test('lines logged in one turn leave in one write, after it', async (t) => {
  const { config } = parseConfig('version: 0.1\nlog: {formatter: json}\nstorage: {inmemory: {}}\n', {}, 'test');
  const writes: string[] = [];
  const out = new PassThrough();
  out.on('data', (d: Buffer) => writes.push(d.toString('utf8')));
  const logger = createLogger(config, out);
  for (const msg of ['one', 'two', 'three']) logger.info(msg);
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.is(writes.length, 1);
  t.deepEqual(writes[0]!.trim().split('\n').map((l) => JSON.parse(l).msg), ['one', 'two', 'three']);
});
