/**
 * server/ui/static.ts on a build of its own (a temporary dist/ui): what it serves, with which headers, and that no
 * name reaches a file the build did not write under assets/. Koa contexts are made in memory (no port is opened).
 */
import test from 'ava';
import Koa from 'koa';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createUiStatic, UI_SECURITY_HEADERS } from './static.js';

const app = new Koa();

function context(headers: Record<string, string> = {}): Koa.Context {
  const req = new IncomingMessage(new Socket());
  req.method = 'GET';
  req.url = '/';
  req.headers = headers;
  return app.createContext(req, new ServerResponse(req));
}

let dir: string;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wharf-ui-static-'));
  await mkdir(join(dir, 'assets'));
  await writeFile(join(dir, 'index.html'), '<!doctype html><title>t</title>');
  await writeFile(join(dir, 'build.json'), '{"secret":true}');
  await writeFile(join(dir, 'assets', 'app-ABC123.js'), 'console.log(1)');
  await writeFile(join(dir, 'assets', 'app-ABC123.css'), 'body{}');
  await writeFile(join(dir, 'assets', '.hidden'), 'no');
  await writeFile(join(dir, 'assets', 'data.bin'), 'x');
});

test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('index.html: text/html, never cached, with the security headers', async (t) => {
  const ctx = context();
  await createUiStatic(dir).page(ctx);
  t.is(ctx.status, 200);
  t.is(ctx.response.get('Content-Type'), 'text/html; charset=utf-8');
  t.is(ctx.response.get('Cache-Control'), 'no-store');
  for (const [name, value] of Object.entries(UI_SECURITY_HEADERS)) t.is(ctx.response.get(name), value);
  t.regex(ctx.response.get('Content-Security-Policy'), /script-src 'self';/);
  t.is(String(ctx.body), '<!doctype html><title>t</title>');
});

test('an asset: its type, a year of immutable cache, an ETag answered with 304', async (t) => {
  const statics = createUiStatic(dir);
  const js = context();
  t.true(await statics.asset(js, 'app-ABC123.js'));
  t.is(js.status, 200);
  t.is(js.response.get('Content-Type'), 'text/javascript; charset=utf-8');
  t.is(js.response.get('Cache-Control'), 'public, max-age=31536000, immutable');
  t.is(String(js.body), 'console.log(1)');
  const etag = js.response.get('ETag');
  t.regex(etag, /^"[A-Za-z0-9_-]+"$/);

  const again = context({ 'if-none-match': etag });
  t.true(await statics.asset(again, 'app-ABC123.js'));
  t.is(again.status, 304);
  t.falsy(again.body);

  const css = context();
  t.true(await statics.asset(css, 'app-ABC123.css'));
  t.is(css.response.get('Content-Type'), 'text/css; charset=utf-8');
  const bin = context();
  t.true(await statics.asset(bin, 'data.bin'));
  t.is(bin.response.get('Content-Type'), 'application/octet-stream');
  t.is(bin.response.get('X-Content-Type-Options'), 'nosniff');
});

test('only the files the build wrote under assets/ are served: no traversal, no hidden file, no other name', async (t) => {
  const statics = createUiStatic(dir);
  for (const name of ['../index.html', '../build.json', '..', '.', '.hidden', 'assets/app-ABC123.js', '/etc/passwd',
    '%2e%2e%2fbuild.json', 'app-ABC123.js/', 'app-ABC123.js\0', 'missing.js', '', 'APP-ABC123.JS', 'a'.repeat(300)]) {
    const ctx = context();
    t.false(await statics.asset(ctx, name), JSON.stringify(name));
    t.is(ctx.body, undefined, JSON.stringify(name));
  }
});

test('a server without a built UI says so when the page is asked for, and serves no asset', async (t) => {
  const statics = createUiStatic(join(dir, 'nothing-here'));
  await t.throwsAsync(statics.page(context()), { message: /the web UI is not built/ });
  t.false(await statics.asset(context(), 'app-ABC123.js'));
});
