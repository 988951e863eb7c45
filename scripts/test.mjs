#!/usr/bin/env node
// Runs the test suite (ava, TAP output) and ends with one plain summary line: "N passed, N failed[, N skipped]".
// Extra arguments go to ava (e.g. a file glob: `npm test -- dist/storage-drivers/`).
// `--unit` runs only the unit set (scripts/unit-tests.mjs, `npm run test:unit`).
// Exit code: non-zero when any test failed, when ava itself failed, or when no test ran at all.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { UNIT_TESTS } from './unit-tests.mjs';

const args = process.argv.slice(2);
const unit = args.indexOf('--unit');
if (unit >= 0) args.splice(unit, 1, ...UNIT_TESTS.map((f) => `dist/${f.replace(/\.ts$/, '.js')}`));

const avaCli = fileURLToPath(new URL('../node_modules/ava/entrypoints/cli.mjs', import.meta.url));
const child = spawn(process.execPath, [avaCli, '--tap', ...args], {
  stdio: ['ignore', 'pipe', 'inherit'],
});

let passed = 0;
let failed = 0;
let skipped = 0;
const lines = createInterface({ input: child.stdout });
lines.on('line', (line) => {
  process.stdout.write(`${line}\n`);
  const directive = /#\s*(SKIP|TODO)\b/i.exec(line);
  if (/^ok \d+/.test(line)) {
    if (directive) skipped++;
    else passed++;
  } else if (/^not ok \d+/.test(line)) {
    if (directive?.[1].toUpperCase() === 'TODO') skipped++;
    else failed++;
  }
});

child.on('close', (code, signal) => {
  let summary = `${passed} passed, ${failed} failed`;
  if (skipped > 0) summary += `, ${skipped} skipped`;
  process.stdout.write(`\n${summary}\n`);
  if (signal) process.exit(1);
  if (failed > 0 || passed === 0) process.exit(code || 1);
  process.exit(code ?? 1);
});
