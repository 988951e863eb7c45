/** The key tables of docs/configuration.md and values.schema.json's `config` part are what the schema generates. */
import test from 'ava';
import { Ajv } from 'ajv';
import { readFileSync } from 'node:fs';
import { DOC, HELM_SCHEMA, durationText, helmConfigSchema, keyRows, renderDoc, renderHelmSchema, selectRows, selectors } from './docs.js';

const FIX = 'run `npm run docs:config` and commit the result';

test('docs/configuration.md has the key tables the schema generates', (t) => {
  const doc = readFileSync(DOC, 'utf8');
  t.true(doc === renderDoc(doc), `docs/configuration.md differs from the schema: ${FIX}`);
});

test('every key is in one of the tables of docs/configuration.md, and has a description', (t) => {
  const marked = selectors(readFileSync(DOC, 'utf8'));
  const rows = keyRows();
  const missing = rows.filter((row) => !marked.some((s) => selectRows(rows, s).includes(row))).map((r) => r.key);
  t.deepEqual(missing, [], 'add these keys to a <!-- config-keys: ... --> marker');
  t.deepEqual(rows.filter((r) => r.description === '').map((r) => r.key), []);
});

test('helm/wharf/values.schema.json has the config schema the schema generates', (t) => {
  const text = readFileSync(HELM_SCHEMA, 'utf8');
  t.true(text === renderHelmSchema(text), `values.schema.json differs from the schema: ${FIX}`);
});

test('a row names the key, its type, default and variable', (t) => {
  const rows = keyRows();
  t.like(rows.find((r) => r.key === 'storage.s3.multipartcopymaxconcurrency'), {
    type: 'integer ≥ 1', default: '`100`', env: '`REGISTRY_STORAGE_S3_MULTIPARTCOPYMAXCONCURRENCY`',
  });
  t.like(rows.find((r) => r.key === 'storage.s3.chunksize'), { type: 'integer, 5 MiB to 5 GiB', default: '`10485760` (10 MiB)' });
  t.like(rows.find((r) => r.key === 'http.timeouts.idle'), { type: 'duration > 0', default: '`75s`' });
  t.like(rows.find((r) => r.key === 'storage.s3.region'), { default: '**required**' });
  t.like(rows.find((r) => r.key === 'notifications.endpoints[].url'), { env: '`REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL`' });
  t.like(rows.find((r) => r.key === 'version'), { env: '' });
  t.true(rows.find((r) => r.key === 'http.secret')?.unsupported);
  t.is(rows.find((r) => r.key === 'auth.none'), undefined);
});

test('selectors take prefixes, leave out "-" prefixes, and "unsupported" lists the unimplemented keys', (t) => {
  const rows = keyRows();
  const http = selectRows(rows, 'http -http.timeouts').map((r) => r.key);
  t.true(http.includes('http.addr'));
  t.false(http.some((k) => k.startsWith('http.timeouts')));
  t.false(http.includes('http.secret'));
  t.true(selectRows(rows, 'unsupported').every((r) => r.unsupported));
  t.deepEqual(selectRows(rows, 'catalog').map((r) => r.key), ['catalog.maxentries']);
});

test('durations are written the way Go writes them', (t) => {
  t.is(durationText(168 * 3600_000), '168h');
  t.is(durationText(5 * 60_000), '5m');
  t.is(durationText(1500), '1500ms');
  t.is(durationText(0), '0ms');
});

test('the Helm schema checks config keys as Wharf reads them, and refuses what the chart sets', (t) => {
  const validate = new Ajv({ allErrors: true, strict: false }).compile(helmConfigSchema());
  t.true(validate({ log: { level: 'warning', fields: { a: 1 } }, http: { draintimeout: '60s', headers: { 'X-A': 'b' } }, health: { storagedriver: { interval: 10_000_000_000 } } }));
  for (const [bad, where] of [
    [{ http: { draintimeout: '60 seconds' } }, '/http/draintimeout'],
    [{ version: '0.1' }, '/version'],
    [{ storage: { filesystem: {} } }, '/storage'],
    [{ validation: { manifests: { maxsize: 0 } } }, '/validation/manifests/maxsize'],
  ] as const) {
    t.false(validate(bad), where);
    t.true((validate.errors ?? []).some((e) => e.instancePath === where), where);
  }
});
