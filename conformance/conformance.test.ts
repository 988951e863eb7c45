/**
 * Wharf against its own conformance suite, with --strict: every check is one ava test, so a failure names the check,
 * its spec section and what the server answered.
 *
 * A second Wharf with deletion disabled (storage.delete.enabled: false, as in registry:2) runs the checks that
 * verify how a registry refuses deletes; a third with sparse indexes accepted
 * (validation.manifests.indexes.platforms: none) runs the opt-in sparse-index checks (--sparse-index).
 */
import test from 'ava';
import { startWharf, type RunningWharf } from '../testing/harness.js';
import { checks, createContext, runCheck, skipReason, type SuiteOptions } from './suite.js';
import type { Context } from './check.js';

let wharf: RunningWharf | undefined;
let ctx: Context | undefined;
let noDelete: RunningWharf | undefined;
let noDeleteCtx: Context | undefined;
let sparse: RunningWharf | undefined;
let sparseCtx: Context | undefined;

test.before(async () => {
  // ava runs every check of this file at once: well over the default http.maxconnectionsperaddress from one address.
  const http = { maxconnectionsperaddress: 0 };
  [wharf, noDelete, sparse] = await Promise.all([
    startWharf({ config: { http } }),
    startWharf({ config: { http, storage: { delete: { enabled: false } } } }),
    startWharf({ config: { http, validation: { manifests: { indexes: { platforms: 'none' } } } } }),
  ]);
  ctx = createContext({ url: wharf.url });
  noDeleteCtx = createContext({ url: noDelete.url });
  sparseCtx = createContext({ url: sparse.url });
});

test.after.always(async () => {
  await Promise.all([wharf?.stop(), noDelete?.stop(), sparse?.stop()]);
});

const full: SuiteOptions = { url: '', strict: true };
const deleteDisabled: SuiteOptions = { url: '', strict: true, skipFeatures: ['delete'] };
const sparseIndexes: SuiteOptions = { url: '', strict: true, features: ['sparse-index'] };

for (const check of checks) {
  const title = `${check.area} › ${check.name} (${check.level})`;
  if (!skipReason(check, full)) {
    test(title, async (t) => {
      const result = await runCheck(check, ctx!);
      if (result.status === 'fail') t.fail(`${check.spec}\n${result.message}\n\nserver output:\n${tail(wharf!.output())}`);
      else t.pass();
    });
  } else if (!skipReason(check, deleteDisabled)) {
    test(`${title} [delete disabled]`, async (t) => {
      const result = await runCheck(check, noDeleteCtx!);
      if (result.status === 'fail') t.fail(`${check.spec}\n${result.message}\n\nserver output:\n${tail(noDelete!.output())}`);
      else t.pass();
    });
  } else if (!skipReason(check, sparseIndexes)) {
    test(`${title} [sparse indexes]`, async (t) => {
      const result = await runCheck(check, sparseCtx!);
      if (result.status === 'fail') t.fail(`${check.spec}\n${result.message}\n\nserver output:\n${tail(sparse!.output())}`);
      else t.pass();
    });
  } else {
    throw new Error(`check ${check.name} runs in no configuration`);
  }
}

/** The last lines the server logged, to put next to a failure. */
function tail(output: string, lines = 15): string {
  return output.trimEnd().split('\n').slice(-lines).join('\n') || '(nothing)';
}
