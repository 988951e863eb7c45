/**
 * Checks of the Helm chart (helm/wharf) and the container image files that need no cluster and no Docker engine:
 *
 * - every YAML file of the chart parses; values.schema.json compiles, accepts values.yaml and the shipped examples,
 *   and rejects bad values;
 * - every template is well-formed (a static pass: balanced delimiters, strings, parentheses and blocks; every included
 *   template defined); every `.Values` path a template reads exists in values.yaml, and every key of values.yaml is
 *   read by a template and documented by a comment;
 * - rendering: with `helm` on PATH it is used (`helm lint`, `helm template`); otherwise, when Go is installed with
 *   Debian's sprig package, helm/render/main.go renders the chart the way Helm does. The rendered manifests are then
 *   checked (security context, probes, CronJob, Ingress annotations, the replica/storage refusal) and the rendered
 *   config.yml goes through `wharf config check`. Without either renderer those tests are skipped, and say so;
 * - Dockerfile and .dockerignore: multi-stage, LTS Node base, production-only dependencies at run time, non-root
 *   user, HEALTHCHECK, the default command, and a default config that `wharf config check` accepts.
 */
import test from 'ava';
import { Ajv } from 'ajv';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { analyze, leafPaths, missingPath, tokenize } from '../testing/gotemplate.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const chartDir = join(root, 'helm', 'wharf');
const templatesDir = join(chartDir, 'templates');
const examplesDir = join(chartDir, 'examples');
const cli = join(root, 'dist', 'server', 'cli.js');

type Values = Record<string, unknown>;
const read = (path: string) => readFileSync(path, 'utf8');
const values = parse(read(join(chartDir, 'values.yaml'))) as Values;
const schema = JSON.parse(read(join(chartDir, 'values.schema.json'))) as object;
const exampleFiles = readdirSync(examplesDir).filter((f) => f.endsWith('.yaml')).sort();
const templateFiles = readdirSync(templatesDir).sort();

function isMap(v: unknown): v is Values {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Helm's value coalescing: maps merge key by key, null removes a key, anything else replaces. */
function mergeValues(base: Values, over: Values): Values {
  const out: Values = structuredClone(base);
  for (const [key, value] of Object.entries(over)) {
    if (value === null) delete out[key];
    else if (isMap(value) && isMap(out[key])) out[key] = mergeValues(out[key] as Values, value);
    else out[key] = structuredClone(value);
  }
  return out;
}

const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile(schema);
const schemaErrors = (v: unknown) => (validate(v) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));

// ---------------------------------------------------------------------------------------------------------------
// YAML and schema

test('Chart.yaml, values.yaml and the examples parse, and Chart.yaml names the chart', (t) => {
  const chart = parse(read(join(chartDir, 'Chart.yaml'))) as Values;
  t.is(chart.apiVersion, 'v2');
  t.is(chart.name, 'wharf');
  t.regex(String(chart.version), /^\d+\.\d+\.\d+/);
  t.truthy(chart.appVersion);
  t.true(isMap(values));
  t.true(exampleFiles.length >= 3, `examples: ${exampleFiles.join(', ')}`);
  for (const file of exampleFiles) t.true(isMap(parse(read(join(examplesDir, file)))), file);
});

test('the schema accepts values.yaml as shipped', (t) => {
  t.deepEqual(schemaErrors(values), []);
});

test('the schema accepts every documented example, and the chart README installs each of them', (t) => {
  const readme = read(join(chartDir, 'README.md'));
  t.deepEqual(
    exampleFiles.sort(),
    ['dockerhub-mirror.yaml', 's3-redis-ha.yaml', 'single-node-filesystem.yaml'],
    'the three set-ups the issue asks for',
  );
  for (const file of exampleFiles) {
    const example = parse(read(join(examplesDir, file))) as Values;
    t.deepEqual(schemaErrors(mergeValues(values, example)), [], file);
    t.true(readme.includes(`examples/${file}`), `README.md uses examples/${file}`);
  }
});

const badValues: [string, Values, RegExp][] = [
  ['unknown storage driver', { storage: { driver: 'gcs' } }, /storage\/driver/],
  ['negative replicas', { replicaCount: -1 }, /replicaCount/],
  ['replicas as a string', { replicaCount: 'three' }, /replicaCount/],
  ['a typo at the top level', { replicas: 3 }, /additional properties/],
  ['a typo in a section', { ingress: { enabeld: true } }, /additional properties/],
  ['bad pull policy', { image: { pullPolicy: 'Sometimes' } }, /image\/pullPolicy/],
  ['s3 without a bucket', { storage: { driver: 's3', s3: { region: 'eu-west-1', bucket: '' } } }, /storage\/s3\/bucket/],
  ['s3 keys in config.yml', { storage: { s3: { accesskey: 'AKIA' } } }, /storage\/s3\/accesskey/],
  ['a driver under config.storage', { config: { storage: { filesystem: { rootdirectory: '/x' } } } }, /config\/storage/],
  ['http.addr set by hand', { config: { http: { addr: ':8080' } } }, /config\/http\/addr/],
  ['an unknown log level', { config: { log: { level: 'verbose' } } }, /config\/log\/level/],
  ['a duration without a unit', { config: { http: { draintimeout: '60 seconds' } } }, /config\/http\/draintimeout/],
  ['a bad GC grace', { garbageCollect: { grace: 'two hours' } }, /garbageCollect\/grace/],
  ['a bad access mode', { storage: { filesystem: { persistence: { accessModes: ['ReadWriteSometimes'] } } } }, /accessModes/],
  ['a bad volume size', { storage: { filesystem: { persistence: { size: '20 gigabytes' } } } }, /size/],
  ['metrics on the API port', { metrics: { port: 5000 } }, /metrics\/port/],
  ['a service port out of range', { service: { port: 70000 } }, /service\/port/],
  ['an upper-case ingress host', { ingress: { host: 'Registry.Example.com' } }, /ingress\/host/],
  ['a Redis address without a port', { redis: { external: { addr: 'redis.example.com' } } }, /redis\/external\/addr/],
  ['a mirror URL without a scheme', { proxy: { remoteurl: 'registry-1.docker.io' } }, /proxy\/remoteurl/],
  ['a digest that is not sha256', { image: { digest: 'latest' } }, /image\/digest/],
  ['HPA target above 100 %', { autoscaling: { targetCPUUtilizationPercentage: 150 } }, /targetCPUUtilizationPercentage/],
];
for (const [name, bad, where] of badValues) {
  test(`the schema rejects ${name}`, (t) => {
    const errors = schemaErrors(mergeValues(values, bad));
    t.true(errors.length > 0, 'accepted');
    t.true(errors.some((e) => where.test(e)), errors.join('\n'));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Templates, statically

const infos = new Map(templateFiles.map((f) => [f, analyze(read(join(templatesDir, f)), f)]));

test('every template is well-formed: delimiters, strings, parentheses and blocks balance', (t) => {
  t.true(templateFiles.includes('_helpers.tpl'));
  t.true(templateFiles.includes('NOTES.txt'));
  for (const [file, info] of infos) {
    t.deepEqual(info.errors, [], file);
    t.true(info.actions.length > 0, `${file} has template actions`);
  }
});

test('the static template pass catches broken templates', (t) => {
  const broken: [string, RegExp][] = [
    ['{{ if .Values.a }}x', /never closed with end/],
    ['x{{ end }}', /end without an open block/],
    ['{{ .Values.a }', /never closed/],
    ['{{ .Values.a {{ .b }}', /inside an action/],
    ['a }} b', /without a matching/],
    ['{{ printf "%s" (include "x" .) ) }}', /"\)" without "\("/],
    ['{{ include "x" (dict "a" 1 }}', /unbalanced parentheses/],
    ['{{ printf "abc }}', /unterminated string/],
    ['{{ else }}', /else outside/],
    ['{{ if .a }}{{ define "x" }}{{ end }}{{ end }}', /define inside/],
    ['{{ .Values.a-}}', /right trim marker/],
    ['{{/* comment */ }}x', /comment must end/],
  ];
  for (const [source, message] of broken) {
    const errors = analyze(source, 't').errors;
    t.true(errors.some((e) => message.test(e)), `${source}: ${errors.join('; ') || 'no error'}`);
  }
  t.deepEqual(analyze('{{- if .a -}}{{ "}}" }}{{- else if .b }}{{/* c */}}{{- end }}', 't').errors, []);
  t.deepEqual(tokenize('{{- /* a */ -}}{{ `raw }}` }}').errors, []);
});

test('every template included is defined, and file includes name existing templates', (t) => {
  const defined = new Set([...infos.values()].flatMap((i) => i.defines));
  t.true(defined.has('wharf.config') && defined.has('wharf.validate'));
  for (const [file, info] of infos) {
    for (const name of info.includes) t.true(defined.has(name), `${file} includes undefined template "${name}"`);
    const source = read(join(templatesDir, file));
    for (const m of source.matchAll(/\$\.Template\.BasePath\s+"\/([^"]+)"/g)) {
      t.true(templateFiles.includes(m[1]), `${file} includes missing file ${m[1]}`);
    }
  }
});

test('every .Values path the templates read exists in values.yaml', (t) => {
  let count = 0;
  for (const [file, info] of infos) {
    for (const path of info.valuesPaths) {
      count++;
      const missing = missingPath(values, path);
      t.is(missing, undefined, `${file} reads .Values.${path.join('.')}, but values.yaml has no ${missing}`);
    }
  }
  t.true(count > 50, `${count} references found`);
  // the check itself sees a missing key
  t.is(missingPath(values, ['storage', 'filesystem', 'persistnce']), 'storage.filesystem.persistnce');
  t.is(missingPath(values, ['replicaCount', 'max']), 'replicaCount.max');
});

test('every key in values.yaml is read by a template', (t) => {
  const read = [...infos.values()].flatMap((i) => i.valuesPaths.map((p) => p.join('.')));
  const unused = leafPaths(values)
    .map((p) => p.join('.'))
    .filter((leaf) => !read.some((r) => leaf === r || leaf.startsWith(`${r}.`)));
  t.deepEqual(unused, []);
});

test('every key in values.yaml is documented by a comment (itself, a parent, or all of its children)', (t) => {
  const lines = read(join(chartDir, 'values.yaml')).split('\n');
  interface Key {
    path: string;
    commented: boolean;
    children: Key[];
  }
  const top: Key = { path: '', commented: false, children: [] };
  const stack: { indent: number; key: Key }[] = [{ indent: -1, key: top }];
  lines.forEach((line, n) => {
    const m = /^(\s*)([A-Za-z0-9_.-]+):(\s|$)/.exec(line);
    if (!m) return;
    const indent = m[1].length;
    while (stack[stack.length - 1].indent >= indent) stack.pop();
    const parent = stack[stack.length - 1].key;
    const key: Key = { path: parent.path ? `${parent.path}.${m[2]}` : m[2], commented: /^\s*#/.test(lines[n - 1] ?? ''), children: [] };
    parent.children.push(key);
    stack.push({ indent, key });
  });
  const documented = (key: Key): boolean =>
    key.commented || (key.children.length > 0 && key.children.every(documented));
  const undocumented: string[] = [];
  const walk = (key: Key) => {
    if (documented(key)) return;
    if (key.children.length === 0) undocumented.push(key.path);
    key.children.forEach(walk);
  };
  top.children.forEach(walk);
  t.true(top.children.length > 15);
  t.deepEqual(undocumented, []);
});

test('the replica/storage refusal and the chart-managed secrets are in the templates', (t) => {
  const helpers = read(join(templatesDir, '_helpers.tpl'));
  t.regex(helpers, /fail \(printf "wharf: storage\.driver=filesystem with %d replicas needs .*ReadWriteMany/);
  for (const file of ['deployment.yaml', 'configmap.yaml']) {
    t.regex(read(join(templatesDir, file)), /include "wharf\.validate"/, file);
  }
  t.regex(read(join(templatesDir, 'cronjob-gc.yaml')), /concurrencyPolicy: Forbid/);
});

// ---------------------------------------------------------------------------------------------------------------
// Rendering (helm, or the Go stand-in)

interface Rendered {
  ok: boolean;
  error: string;
  /** Rendered files by template name (wharf/templates/x.yaml). */
  files: Map<string, string>;
  docs: Values[];
}

type Render = (overrides: Values[], options?: { strict?: boolean; chart?: string }) => Rendered;

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const workDir = mkdtempSync(join(tmpdir(), 'wharf-chart-'));

function valuesFiles(overrides: Values[]): string[] {
  return overrides.flatMap((o, n) => {
    const file = join(workDir, `values-${createHash('sha256').update(JSON.stringify(o)).digest('hex').slice(0, 12)}-${n}.json`);
    writeFileSync(file, JSON.stringify(o));
    return ['-f', file];
  });
}

function finish(files: Map<string, string>, error: string): Rendered {
  const docs: Values[] = [];
  for (const [name, text] of files) {
    if (!name.endsWith('.yaml')) continue;
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length > 0) throw new Error(`${name}: ${doc.errors.map((e) => e.message).join('; ')}\n${text}`);
      const js = doc.toJS() as unknown;
      if (js !== null && js !== undefined) docs.push(js as Values);
    }
  }
  return { ok: !error, error, files, docs };
}

function helmRenderer(): Render {
  return (overrides, options = {}) => {
    const chart = options.chart ?? chartDir;
    if (options.strict) {
      // helm template has no strict mode; helm lint --strict renders with missing keys as errors
      const lint = spawnSync('helm', ['lint', chart, '--strict', ...valuesFiles(overrides)], { encoding: 'utf8' });
      if (lint.status !== 0) return finish(new Map(), `${lint.stdout}${lint.stderr}`);
    }
    const r = spawnSync('helm', ['template', 'wharf', chart, '--namespace', 'registry', ...valuesFiles(overrides)], {
      encoding: 'utf8',
    });
    const files = new Map<string, string>();
    if (r.status === 0) {
      for (const part of r.stdout.split(/^---\s*$/m)) {
        const source = /^# Source: (\S+)/m.exec(part)?.[1];
        if (source) files.set(source, (files.get(source) ?? '') + `---\n${part}`);
      }
    }
    return finish(files, r.status === 0 ? '' : r.stderr);
  };
}

function goRenderer(): Render | undefined {
  const source = join(root, 'helm', 'render', 'main.go');
  const hash = createHash('sha256').update(read(source)).digest('hex').slice(0, 12);
  const binary = join(tmpdir(), `wharf-helm-render-${hash}`);
  if (!existsSync(binary)) {
    const env = { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOCACHE: join(tmpdir(), 'wharf-helm-render-gocache'), GOFLAGS: '' };
    const r = spawnSync('go', ['build', '-o', binary, source], { env, encoding: 'utf8' });
    if (r.status !== 0) return undefined;
  }
  return (overrides, options = {}) => {
    const args = [options.chart ?? chartDir, ...valuesFiles(overrides), ...(options.strict ? ['--strict'] : [])];
    const r = spawnSync(binary, args, { encoding: 'utf8' });
    const out = JSON.parse(r.stdout) as { files?: Record<string, string>; error?: string };
    return finish(new Map(Object.entries(out.files ?? {})), out.error ?? (r.status === 0 ? '' : r.stderr || 'failed'));
  };
}

const renderer: { render?: Render; name: string } = which('helm')
  ? { render: helmRenderer(), name: 'helm' }
  : which('go')
    ? { render: goRenderer(), name: 'helm/render/main.go' }
    : { name: 'none' };
// Without a renderer the rendering tests are registered as skipped (counted as skipped, never as passed), and the
// reason goes to the output once.
const renderTest = renderer.render ? test : test.skip;
const helmTest = renderer.name === 'helm' ? test : test.skip;
if (!renderer.render) {
  console.error(
    'helm/chart.test.ts: rendering tests skipped: they need helm, or Go with Debian golang-github-masterminds-sprig-dev ' +
      '(apt-get install golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev)',
  );
}
const render = (...overrides: Values[]) => renderer.render!(overrides);
const example = (file: string) => parse(read(join(examplesDir, file))) as Values;
const kinds = (r: Rendered, kind: string) => r.docs.filter((d) => d.kind === kind);
const one = (r: Rendered, kind: string, suffix = '') => {
  const found = kinds(r, kind).filter((d) => String((d.metadata as Values).name).endsWith(suffix));
  if (found.length !== 1) throw new Error(`expected one ${kind}${suffix ? ` named *${suffix}` : ''}, got ${found.length}`);
  return found[0];
};
const at = (v: unknown, path: string): any =>
  path.split('.').reduce<any>((node, key) => (node === undefined || node === null ? undefined : node[key]), v);

function configYml(r: Rendered): string {
  const cm = one(r, 'ConfigMap', '-config');
  return String((cm.data as Values)['config.yml']);
}

function configCheck(yml: string, env: Record<string, string> = {}): { status: number | null; output: string } {
  const file = join(workDir, `config-${createHash('sha256').update(yml).digest('hex').slice(0, 12)}.yml`);
  writeFileSync(file, yml);
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
  const r = spawnSync(process.execPath, [cli, 'config', 'check', file], { encoding: 'utf8', env: { ...clean, ...env } });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

helmTest('helm lint passes (only with a real helm; skipped otherwise)', (t) => {
  const out = execFileSync('helm', ['lint', chartDir, '--strict'], { encoding: 'utf8' });
  t.regex(out, /0 chart\(s\) failed/);
});

renderTest('strict rendering (a missing key is an error, as in helm lint --strict) passes for the defaults and every example', (t) => {
  for (const [name, overrides] of [['defaults', []], ...exampleFiles.map((f) => [f, [example(f)]])] as [string, Values[]][]) {
    const r = renderer.render!(overrides, { strict: true });
    t.is(r.error, '', name);
  }
  // and strict mode does catch a template reading a key values.yaml lacks
  const copy = mkdtempSync(join(tmpdir(), 'wharf-chart-copy-'));
  cpSync(chartDir, copy, { recursive: true });
  writeFileSync(join(copy, 'templates', 'broken.yaml'), 'x: {{ .Values.image.nosuchkey }}\n');
  t.not(renderer.render!([], { strict: true, chart: copy }).error, '');
});

const setups: [string, Values[]][] = [
  ['the defaults', []],
  ...exampleFiles.map((f): [string, Values[]] => [f, [example(f)]]),
];
for (const [name, overrides] of setups) {
  renderTest(`renders ${name}: well-formed manifests, non-root, read-only root, probes, GC CronJob`, (t) => {
    const r = render(...overrides);
    t.is(r.error, '');
    for (const doc of r.docs) {
      t.truthy(doc.apiVersion, JSON.stringify(doc).slice(0, 200));
      t.truthy(doc.kind);
      t.regex(String(at(doc, 'metadata.name')), /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    const deployment = one(r, 'Deployment');
    const pod = at(deployment, 'spec.template.spec');
    const container = pod.containers[0];
    t.true(pod.securityContext.runAsNonRoot);
    t.not(pod.securityContext.runAsUser, 0);
    t.true(container.securityContext.readOnlyRootFilesystem);
    t.false(container.securityContext.allowPrivilegeEscalation);
    t.deepEqual(container.securityContext.capabilities.drop, ['ALL']);
    t.deepEqual(container.args, ['serve', '/etc/wharf/config.yml']);
    t.is(container.livenessProbe.httpGet.path, '/healthz');
    t.is(container.readinessProbe.httpGet.path, '/readyz');
    const mounts = new Map<string, string>(container.volumeMounts.map((m: Values) => [m.mountPath, m.name]));
    t.true(mounts.has('/tmp'), 'writable /tmp');
    t.true(mounts.has('/etc/wharf/config.yml'));
    t.true(Array.isArray(pod.topologySpreadConstraints) && pod.topologySpreadConstraints.length > 0);
    for (const c of pod.topologySpreadConstraints) {
      t.is(c.labelSelector.matchLabels['app.kubernetes.io/component'], 'registry');
    }
    t.truthy(container.resources.requests);

    const cron = one(r, 'CronJob', '-gc');
    t.is(at(cron, 'spec.concurrencyPolicy'), 'Forbid');
    const gcPod = at(cron, 'spec.jobTemplate.spec.template.spec');
    const gc = gcPod.containers[0];
    t.is(gc.image, container.image, 'the GC runs the same image');
    t.deepEqual(gc.args.slice(0, 2), ['garbage-collect', '/etc/wharf/config.yml']);
    t.deepEqual(gc.volumeMounts, container.volumeMounts, 'the GC sees the same config and storage');
    t.deepEqual(gc.env, container.env, 'the GC gets the same credentials');
    t.true(gc.securityContext.readOnlyRootFilesystem);

    // the registry Service selects registry pods only (not Redis, not GC jobs)
    const service = one(r, 'Service', 'wharf');
    t.is(at(service, 'spec.selector')['app.kubernetes.io/component'], 'registry');
    t.deepEqual(at(deployment, 'spec.selector.matchLabels'), at(service, 'spec.selector'));

    // config.yml is registry:2 YAML that Wharf's own loader accepts
    const yml = configYml(r);
    const config = parse(yml) as Values;
    t.is(config.version, '0.1');
    t.is(at(config, 'http.addr'), ':5000');
    // ...with the REGISTRY_* variables the pod gets from Secrets (dummy values), which must name keys Wharf knows
    const env = Object.fromEntries(
      (container.env ?? []).filter((e: Values) => String(e.name).startsWith('REGISTRY_')).map((e: Values) => [e.name, 'x']),
    );
    const check = configCheck(yml, env);
    if (check.status !== 0 && /storage\.s3: this storage driver is not supported/.test(check.output)) {
      // a Wharf build from before the S3 driver's config: it refuses storage.s3 and nothing else
      t.notRegex(check.output.replace(/.*storage\.s3: this storage driver is not supported.*/, ''), /invalid|error/i);
      t.log(`config check: ${check.output.trim()}`);
    } else {
      t.is(check.status, 0, check.output);
    }
    t.notRegex(check.output, /unknown key|unrecognised|ignored/i, check.output);
    const warnings = check.output.split('\n').filter((l) => l.startsWith('warning:'));
    if (warnings.length > 0) t.log(`config check: ${warnings.join('; ')}`);
    t.regex(r.files.get('wharf/templates/NOTES.txt') ?? 'docker push', /docker (push|pull)/);
  });
}

renderTest('single node filesystem: a ReadWriteOnce claim, Recreate, htpasswd from the existing Secret, Ingress', (t) => {
  const r = render(example('single-node-filesystem.yaml'));
  t.is(r.error, '');
  const pvc = one(r, 'PersistentVolumeClaim');
  t.deepEqual(at(pvc, 'spec.accessModes'), ['ReadWriteOnce']);
  t.is(at(pvc, 'spec.resources.requests.storage'), '50Gi');
  t.is(at(pvc, 'metadata.annotations')['helm.sh/resource-policy'], 'keep');
  const deployment = one(r, 'Deployment');
  t.is(at(deployment, 'spec.replicas'), 1);
  t.is(at(deployment, 'spec.strategy.type'), 'Recreate');
  const pod = at(deployment, 'spec.template.spec');
  t.true(pod.volumes.some((v: Values) => at(v, 'secret.secretName') === 'wharf-htpasswd'));
  t.true(pod.volumes.some((v: Values) => at(v, 'persistentVolumeClaim.claimName') === at(pvc, 'metadata.name')));
  const config = parse(configYml(r)) as Values;
  t.deepEqual(at(config, 'auth.htpasswd'), { realm: 'Registry Realm', path: '/etc/wharf/auth/htpasswd' });
  t.is(at(config, 'storage.filesystem.rootdirectory'), '/var/lib/registry');
  t.is(at(config, 'storage.delete.enabled'), true);
  t.is(at(config, 'http.host'), 'https://registry.example.com');
  // Behind the Ingress, the controller's forwarded headers are believed (and it is not capped per address).
  t.true((at(config, 'http.trustedproxies') as string[]).includes('10.0.0.0/8'));
  const ingress = one(r, 'Ingress');
  const annotations = at(ingress, 'metadata.annotations');
  t.is(annotations['nginx.ingress.kubernetes.io/proxy-body-size'], '0');
  t.is(annotations['nginx.ingress.kubernetes.io/proxy-request-buffering'], 'off');
  t.is(annotations['nginx.ingress.kubernetes.io/proxy-read-timeout'], '900');
  t.is(annotations['cert-manager.io/cluster-issuer'], 'letsencrypt');
  // the GC job must land on the node that holds the ReadWriteOnce volume
  const gcPod = at(one(r, 'CronJob'), 'spec.jobTemplate.spec.template.spec');
  t.is(gcPod.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey, 'kubernetes.io/hostname');
  t.is(kinds(r, 'PodDisruptionBudget').length, 0, 'no PDB that would block node drains with one replica');
  t.is(kinds(r, 'HorizontalPodAutoscaler').length, 0);
});

renderTest('S3 + Redis, 3 replicas: HPA, PDB, Redis, ServiceMonitor, credentials only from the Secret', (t) => {
  const r = render(example('s3-redis-ha.yaml'));
  t.is(r.error, '');
  const config = parse(configYml(r)) as Values;
  t.is(at(config, 'storage.s3.bucket'), 'example-registry');
  t.is(at(config, 'storage.s3.accesskey'), undefined);
  t.is(at(config, 'redis.addr'), 'wharf-redis:6379');
  t.is(at(config, 'storage.cache.blobdescriptor'), 'redis');
  t.is(at(config, 'http.debug.addr'), ':5001');
  t.is(at(config, 'http.debug.prometheus.path'), '/metrics');
  t.is(kinds(r, 'PersistentVolumeClaim').length, 0);
  const container = at(one(r, 'Deployment'), 'spec.template.spec.containers')[0];
  const env = new Map<string, Values>(container.env.map((e: Values) => [e.name, e]));
  t.is(at(env.get('REGISTRY_STORAGE_S3_ACCESSKEY'), 'valueFrom.secretKeyRef.name'), 'wharf-s3');
  t.is(at(env.get('REGISTRY_STORAGE_S3_SECRETKEY'), 'valueFrom.secretKeyRef.key'), 'secretkey');
  t.is(at(one(r, 'Deployment'), 'spec.replicas'), undefined, 'the HPA owns the replica count');
  const hpa = one(r, 'HorizontalPodAutoscaler');
  t.is(at(hpa, 'spec.minReplicas'), 3);
  t.is(at(hpa, 'spec.maxReplicas'), 10);
  t.is(at(one(r, 'PodDisruptionBudget'), 'spec.minAvailable'), 2);
  const redis = one(r, 'StatefulSet', '-redis');
  t.is(at(redis, 'spec.template.metadata.labels')['app.kubernetes.io/component'], 'redis');
  t.true(at(redis, 'spec.template.spec.containers')[0].securityContext.readOnlyRootFilesystem);
  const sm = one(r, 'ServiceMonitor');
  t.is(at(sm, 'metadata.labels').release, 'prometheus');
  t.is(at(sm, 'spec.endpoints')[0].port, 'metrics');
  const metricsService = one(r, 'Service', '-metrics');
  t.deepEqual(at(sm, 'spec.selector.matchLabels'), Object.fromEntries(
    Object.entries(at(metricsService, 'metadata.labels') as Values).filter(([k]) => k in at(sm, 'spec.selector.matchLabels')),
  ));
  t.is(at(metricsService, 'spec.ports')[0].port, 5001);
  const gc = at(one(r, 'CronJob'), 'spec.jobTemplate.spec.template.spec.containers')[0];
  t.deepEqual(gc.args, ['garbage-collect', '/etc/wharf/config.yml', '--delete-untagged', '--grace', '2h']);
});

renderTest('Docker Hub mirror: registry:2 proxy keys, upstream credentials from the Secret', (t) => {
  const r = render(example('dockerhub-mirror.yaml'));
  t.is(r.error, '');
  const config = parse(configYml(r)) as Values;
  t.deepEqual(at(config, 'proxy'), { remoteurl: 'https://registry-1.docker.io', ttl: '168h' });
  const container = at(one(r, 'Deployment'), 'spec.template.spec.containers')[0];
  const env = new Map<string, Values>(container.env.map((e: Values) => [e.name, e]));
  t.is(at(env.get('REGISTRY_PROXY_USERNAME'), 'valueFrom.secretKeyRef.name'), 'dockerhub');
  t.is(at(env.get('REGISTRY_PROXY_PASSWORD'), 'valueFrom.secretKeyRef.key'), 'password');
  t.regex(r.files.get('wharf/templates/NOTES.txt') ?? '', /registry-mirrors/);
});

renderTest('secrets given as values go to a Secret and reach Wharf as REGISTRY_* variables, never into config.yml', (t) => {
  const r = render({
    storage: { driver: 's3', s3: { region: 'us-east-1', bucket: 'b' }, s3Credentials: { accessKey: 'AKIAEXAMPLEKEY', secretKey: 'very-secret-value' } },
    auth: { htpasswd: { enabled: true, htpasswd: 'alice:$2y$05$abcdefghijklmnopqrstuv' } },
    redis: { enabled: true, password: 'redis-pass-123' },
    replicaCount: 2,
  });
  t.is(r.error, '');
  const yml = configYml(r);
  for (const secret of ['AKIAEXAMPLEKEY', 'very-secret-value', 'redis-pass-123', '$2y$05$']) t.false(yml.includes(secret), secret);
  const secret = one(r, 'Secret');
  const data = secret.data as Record<string, string>;
  t.is(Buffer.from(data['s3-accesskey'], 'base64').toString(), 'AKIAEXAMPLEKEY');
  t.is(Buffer.from(data['redis-password'], 'base64').toString(), 'redis-pass-123');
  t.is(Buffer.from(data.htpasswd, 'base64').toString(), 'alice:$2y$05$abcdefghijklmnopqrstuv');
  const container = at(one(r, 'Deployment'), 'spec.template.spec.containers')[0];
  const names = container.env.map((e: Values) => e.name).sort();
  t.deepEqual(names, ['REGISTRY_REDIS_PASSWORD', 'REGISTRY_STORAGE_S3_ACCESSKEY', 'REGISTRY_STORAGE_S3_SECRETKEY']);
  const redis = at(one(r, 'StatefulSet'), 'spec.template.spec.containers')[0];
  t.true(redis.args.includes('--requirepass'));
});

const refusals: [string, Values, RegExp][] = [
  ['filesystem on ReadWriteOnce with 3 replicas', { replicaCount: 3, redis: { enabled: true } }, /storage\.driver=filesystem with 3 replicas needs .*ReadWriteMany/],
  ['filesystem on ReadWriteOnce under an HPA', { autoscaling: { enabled: true, maxReplicas: 4 }, redis: { enabled: true } }, /filesystem with 4 replicas/],
  ['filesystem without persistence with 2 replicas', { replicaCount: 2, redis: { enabled: true }, storage: { filesystem: { persistence: { enabled: false, accessModes: ['ReadWriteMany'] } } } }, /ReadWriteMany/],
  ['in-memory storage with 2 replicas', { replicaCount: 2, redis: { enabled: true }, storage: { driver: 'inmemory' } }, /inmemory keeps images in each pod/],
  ['several replicas without Redis', { replicaCount: 2, storage: { driver: 's3', s3: { bucket: 'b' } } }, /redis\.enabled: true .* redis\.external\.addr/],
  ['s3 without a bucket', { storage: { driver: 's3' } }, /storage\.s3\.bucket/],
  ['htpasswd without a file', { auth: { htpasswd: { enabled: true } } }, /auth\.htpasswd\.htpasswd/],
  ['two auth methods', { auth: { htpasswd: { enabled: true, htpasswd: 'a:b' }, token: { enabled: true } } }, /one auth method/],
  ['a driver under config.storage', { config: { storage: { inmemory: {} } } }, /storage\.driver/],
];
for (const [name, overrides, message] of refusals) {
  renderTest(`refuses ${name} with a clear message`, (t) => {
    const r = render(overrides);
    t.false(r.ok, 'rendered');
    t.regex(r.error, message);
  });
}

renderTest('filesystem with several replicas renders on a ReadWriteMany volume, with rolling updates and a PDB', (t) => {
  const r = render({ replicaCount: 3, redis: { enabled: true }, storage: { filesystem: { persistence: { accessModes: ['ReadWriteMany'], storageClass: 'nfs' } } } });
  t.is(r.error, '');
  t.deepEqual(at(one(r, 'PersistentVolumeClaim'), 'spec.accessModes'), ['ReadWriteMany']);
  t.is(at(one(r, 'PersistentVolumeClaim'), 'spec.storageClassName'), 'nfs');
  t.is(at(one(r, 'Deployment'), 'spec.strategy.type'), 'RollingUpdate');
  t.is(at(one(r, 'Deployment'), 'spec.replicas'), 3);
  t.is(at(one(r, 'PodDisruptionBudget'), 'spec.minAvailable'), 1);
  t.is(at(one(r, 'CronJob'), 'spec.jobTemplate.spec.template.spec.affinity'), undefined, 'no node pinning on RWX');
});

renderTest('long release names are shortened to what Kubernetes accepts, and references between objects still match', (t) => {
  const long = 'a'.repeat(30) + '-' + 'b'.repeat(32);
  const r = render({ fullnameOverride: long, redis: { enabled: true }, replicaCount: 2, storage: { driver: 's3', s3: { bucket: 'b' } }, ingress: { enabled: true, tls: { enabled: true } } });
  t.is(r.error, '');
  for (const doc of r.docs) {
    const name = String(at(doc, 'metadata.name'));
    const max = doc.kind === 'CronJob' || doc.kind === 'StatefulSet' ? 52 : 63;
    t.true(name.length <= max, `${doc.kind} ${name} is ${name.length} characters`);
    t.regex(name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  }
  const pod = at(one(r, 'Deployment'), 'spec.template.spec');
  const configMapName = at(one(r, 'ConfigMap'), 'metadata.name');
  t.true(pod.volumes.some((v: Values) => at(v, 'configMap.name') === configMapName));
  const redisService = kinds(r, 'Service').find((s) => at(s, 'metadata.labels')['app.kubernetes.io/component'] === 'redis');
  t.is(at(parse(configYml(r)), 'redis.addr'), `${at(redisService, 'metadata.name')}:6379`);
  t.is(at(one(r, 'StatefulSet'), 'spec.serviceName'), at(redisService, 'metadata.name'));
  const ingress = one(r, 'Ingress');
  t.is(at(ingress, 'spec.rules')[0].http.paths[0].backend.service.name, at(one(r, 'Deployment'), 'metadata.name'));
});

renderTest('http.trustedproxies: none without an Ingress; the configured list wins over the Ingress default', (t) => {
  t.deepEqual(at(parse(configYml(render({}))), 'http.trustedproxies'), []);
  const r = render({ ingress: { enabled: true }, config: { http: { trustedproxies: ['10.42.0.0/16'] } } });
  t.is(r.error, '');
  t.deepEqual(at(parse(configYml(r)), 'http.trustedproxies'), ['10.42.0.0/16']);
});

renderTest('numbers keep their integer form in config.yml and manifests (no 4.194304e+06)', (t) => {
  const r = render({
    config: { validation: { manifests: { maxsize: 4194304 } } },
    garbageCollect: { activeDeadlineSeconds: 1209600 },
  });
  t.is(r.error, '');
  t.regex(configYml(r), /maxsize: 4194304\b/);
  t.is(at(one(r, 'CronJob'), 'spec.jobTemplate.spec.activeDeadlineSeconds'), 1209600);
  t.is(configCheck(configYml(r)).status, 0);
});

renderTest('optional parts stay off: no Ingress, ServiceMonitor, Redis, Secret or metrics Service unless asked', (t) => {
  const r = render({ metrics: { enabled: false }, garbageCollect: { enabled: false } });
  t.is(r.error, '');
  for (const kind of ['Ingress', 'ServiceMonitor', 'StatefulSet', 'Secret', 'CronJob', 'HorizontalPodAutoscaler']) {
    t.is(kinds(r, kind).length, 0, kind);
  }
  t.is(kinds(r, 'Service').length, 1);
  t.is(at(parse(configYml(r)), 'http.debug'), undefined);
});

// ---------------------------------------------------------------------------------------------------------------
// Container image

interface Instruction {
  op: string;
  args: string;
  line: number;
}

function dockerfile(): Instruction[] {
  const text = read(join(root, 'Dockerfile')).replace(/\\\n/g, ' ');
  const out: Instruction[] = [];
  text.split('\n').forEach((line, n) => {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m || line.trim().startsWith('#')) return;
    out.push({ op: m[1].toUpperCase(), args: m[2].trim(), line: n + 1 });
  });
  return out;
}

function stages(instructions: Instruction[]): { from: string; name: string; body: Instruction[] }[] {
  const result: { from: string; name: string; body: Instruction[] }[] = [];
  for (const ins of instructions) {
    if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      result.push({ from: m?.[1] ?? '', name: m?.[2] ?? '', body: [] });
    } else if (result.length > 0) result[result.length - 1].body.push(ins);
  }
  return result;
}

test('Dockerfile: multi-stage on a Node LTS image, dev deps to build, production deps to run', (t) => {
  const all = dockerfile();
  const known = new Set(['FROM', 'ARG', 'ENV', 'WORKDIR', 'COPY', 'RUN', 'USER', 'VOLUME', 'EXPOSE', 'HEALTHCHECK', 'ENTRYPOINT', 'CMD', 'LABEL', 'STOPSIGNAL']);
  for (const ins of all) t.true(known.has(ins.op), `line ${ins.line}: unknown instruction ${ins.op}`);
  const nodeVersion = /^ARG NODE_VERSION=(\d+)$/m.exec(read(join(root, 'Dockerfile')))?.[1];
  t.truthy(nodeVersion);
  t.is(Number(nodeVersion) % 2, 0, 'an even Node major: the LTS lines');
  t.true(Number(nodeVersion) >= 22);
  const [build, runtime, ...rest] = stages(all);
  t.is(rest.length, 0);
  for (const stage of [build, runtime]) t.regex(stage.from, /^node:\$\{NODE_VERSION\}-(slim|bookworm-slim|trixie-slim|alpine)$/);
  t.truthy(build.name);
  const runs = (s: typeof build) => s.body.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  t.regex(runs(build), /npm ci(?![^\n]*--omit=dev)/, 'the build stage installs dev dependencies');
  t.regex(runs(build), /npm run build/);
  t.regex(runs(runtime), /npm ci --omit=dev/);
  t.notRegex(runs(runtime), /npm run build|npm install(?!\S)/);
  t.true(runtime.body.some((i) => i.op === 'COPY' && i.args.startsWith(`--from=${build.name} `) && /dist/.test(i.args)));
  t.false(runtime.body.some((i) => i.op === 'COPY' && /^\.\s/.test(i.args)), 'the runtime stage copies no sources');
});

test('Dockerfile: non-root user, HEALTHCHECK, wharf serve /etc/wharf/config.yml by default', (t) => {
  const runtime = stages(dockerfile())[1].body;
  const users = runtime.filter((i) => i.op === 'USER');
  t.true(users.length > 0);
  const user = users[users.length - 1].args;
  t.notRegex(user, /^(root|0)(:|$)/);
  t.regex(user, /^\d+(:\d+)?$/, 'numeric, so runAsNonRoot can verify it');
  const healthcheck = runtime.find((i) => i.op === 'HEALTHCHECK');
  t.truthy(healthcheck);
  t.regex(healthcheck!.args, /CMD/);
  const json = (op: string) => JSON.parse(runtime.filter((i) => i.op === op).pop()!.args) as string[];
  t.deepEqual([...json('ENTRYPOINT'), ...json('CMD')], ['wharf', 'serve', '/etc/wharf/config.yml']);
  const exposed = runtime.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/));
  t.true(exposed.includes('5000'));
  // the HEALTHCHECK command is valid JavaScript
  const cmd = JSON.parse(/CMD\s+(\[.*\])$/.exec(healthcheck!.args)![1]) as string[];
  t.is(cmd[0], 'node');
  t.deepEqual(cmd.slice(0, 2), ['node', '-e']);
  t.notThrows(() => new Function(cmd[2]), 'the health check script parses');
  t.regex(cmd[2], /process\.env\.WHARF_HEALTHCHECK_URL/);
});

test("Dockerfile: the image's default config.yml passes wharf config check", (t) => {
  const text = read(join(root, 'Dockerfile')).replace(/\\\n/g, ' ');
  const m = /printf '%s\\n'((?:\s+'[^']*')+)\s*>\s*\/etc\/wharf\/config\.yml/.exec(text);
  t.truthy(m, 'the Dockerfile writes /etc/wharf/config.yml with printf');
  const yml = [...m![1].matchAll(/'([^']*)'/g)].map((x) => x[1]).join('\n') + '\n';
  const config = parse(yml) as Values;
  t.is(at(config, 'storage.filesystem.rootdirectory'), '/var/lib/registry');
  t.is(at(config, 'http.addr'), ':5000');
  const check = configCheck(yml);
  t.is(check.status, 0, check.output);
});

test('.dockerignore keeps node_modules, dist, data and .git out, and nothing the build needs', (t) => {
  const patterns = read(join(root, '.dockerignore'))
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const p of ['node_modules', 'dist', 'data', '.git']) t.true(patterns.includes(p), p);
  const tsconfig = JSON.parse(read(join(root, 'tsconfig.json'))) as { include: string[] };
  const needed = ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'server', 'storage-drivers', 'auth'];
  for (const path of needed) t.false(patterns.includes(path), `${path} is needed by the build`);
  t.true(tsconfig.include.includes('server/**/*.ts'));
  // the image's build compiles the product only (no tests, no test helpers) and bundles the web UI's page
  const pkg = JSON.parse(read(join(root, 'package.json'))) as { scripts: Record<string, string> };
  t.is(pkg.scripts.build, 'tsc -p tsconfig.build.json && node scripts/build-ui.mjs');
  for (const path of ['scripts', 'server/ui/web']) t.false(patterns.includes(path), `${path} is needed by the build`);
  const build = JSON.parse(read(join(root, 'tsconfig.build.json'))) as { include: string[]; exclude: string[] };
  t.true(build.include.includes('server/**/*.ts'));
  for (const path of ['**/*.test.ts', 'testing/**']) t.true(build.exclude.includes(path), `tsconfig.build.json leaves out ${path}`);
  t.true(patterns.includes('testing'), '.dockerignore leaves testing/ out');
  // every COPY source from the build context exists
  for (const ins of dockerfile().filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))) {
    const sources = ins.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1);
    for (const s of sources) t.true(existsSync(join(root, s)), `COPY ${s}`);
  }
});
