#!/usr/bin/env node
/**
 * Command line for the conformance suite:
 *
 *   node dist/conformance/cli.js <registry-url> [flags]      (npm run conformance -- <registry-url> [flags])
 *
 * Prints one line per check as it runs (with --verbose) and a per-area summary with every failure at the end.
 * Exit code: 0 when no selected check failed, 1 when one did, 2 on bad usage.
 */
import { parseArgs } from 'node:util';
import { AREAS, FEATURES, formatReport, runSuite, type Area, type Feature, type SuiteOptions } from './suite.js';

const USAGE = `usage: node dist/conformance/cli.js <registry-url> [flags]

  --only <area>          run one area (repeatable or comma-separated): ${AREAS.join(', ')}
  --check <name>         run one check by name (repeatable)
  --strict               also run wharf-strict checks (stricter than the spec)
  --skip-optional        skip SHOULD/MAY checks
  --skip-delete          the registry has deletion disabled: skip delete checks, verify it refuses with 400/405
  --skip-referrers       the registry has no referrers API
  --skip-catalog         the registry has no catalog
  --skip <feature>       skip a feature (repeatable): ${FEATURES.filter((f) => f !== 'delete-disabled').join(', ')}
  --sparse-index         the registry accepts indexes whose children are absent: run the sparse-index checks
                         (and skip the check that such an index is refused)
  --name <prefix>        repository name prefix (default "conformance")
  --user <u> --password <p>   credentials (Basic, or for the Bearer token flow)
  --timeout <seconds>    per-request timeout (default 60)
  --verbose              print each check as it finishes
  --json                 print results as JSON instead of text

For HTTPS with a self-signed certificate, set NODE_EXTRA_CA_CERTS=<ca.pem>.`;

function usage(message?: string): never {
  if (message) console.error(`error: ${message}\n`);
  console.error(USAGE);
  process.exit(2);
}

function list(values: string[] | undefined): string[] {
  return (values ?? []).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        only: { type: 'string', multiple: true },
        check: { type: 'string', multiple: true },
        strict: { type: 'boolean' },
        'skip-optional': { type: 'boolean' },
        'skip-delete': { type: 'boolean' },
        'skip-referrers': { type: 'boolean' },
        'skip-catalog': { type: 'boolean' },
        'sparse-index': { type: 'boolean' },
        skip: { type: 'string', multiple: true },
        name: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        timeout: { type: 'string' },
        verbose: { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    usage((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) usage();
  if (positionals.length !== 1) usage('expected exactly one registry URL');
  const url = positionals[0]!;
  if (!/^https?:\/\//.test(url)) usage(`registry URL must start with http:// or https://, got ${url}`);

  const only = list(values.only);
  for (const a of only) if (!AREAS.includes(a as Area)) usage(`unknown area ${a}`);
  const skipFeatures = list(values.skip);
  for (const f of skipFeatures) if (!FEATURES.includes(f as Feature)) usage(`unknown feature ${f}`);
  if (values['skip-delete']) skipFeatures.push('delete');
  if (values['skip-referrers']) skipFeatures.push('referrers');
  if (values['skip-catalog']) skipFeatures.push('catalog');
  const timeout = values.timeout === undefined ? undefined : Number(values.timeout);
  if (timeout !== undefined && !(timeout > 0)) usage('--timeout must be a positive number of seconds');

  const options: SuiteOptions = {
    url,
    only: only as Area[],
    checks: list(values.check),
    strict: values.strict ?? false,
    skipOptional: values['skip-optional'] ?? false,
    skipFeatures: skipFeatures as Feature[],
    features: values['sparse-index'] ? ['sparse-index'] : [],
    namePrefix: values.name,
    user: values.user,
    password: values.password,
    timeoutMs: timeout === undefined ? undefined : timeout * 1000,
  };

  const results = await runSuite(options, (r) => {
    if (!values.verbose || values.json) return;
    const mark = r.status === 'pass' ? '✓' : r.status === 'fail' ? '✗' : '-';
    const note = r.status === 'skip' ? `  (${r.message})` : r.status === 'fail' ? `\n      ${r.message}` : '';
    console.log(`${mark} [${r.check.area}] ${r.check.name} (${r.check.level})${note}`);
  });

  if (values.json) {
    console.log(JSON.stringify(results.map((r) => ({
      name: r.check.name, area: r.check.area, level: r.check.level, spec: r.check.spec, status: r.status,
      message: r.message, durationMs: Math.round(r.durationMs),
    })), null, 2));
  } else {
    if (values.verbose) console.log('');
    console.log(`OCI distribution conformance: ${url}`);
    console.log(formatReport(results));
  }
  if (!results.length) usage('no check matches --only/--check');
  process.exitCode = results.some((r) => r.status === 'fail') ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
