/**
 * Speed ratios between two servers of a benchmark run (bench/run.ts), oriented so that above 1 always means the
 * server under test is faster (a higher rate) or lighter (a lower time, CPU or memory).
 *
 * Two ways to compare repeated measurements:
 * - the ratio of the medians: each server's median over its repetitions, then one ratio;
 * - the paired ratio: a ratio per repetition, between the two samples taken in the same round (the servers run one
 *   after the other in each round, in alternating order), then the median and spread of those ratios.
 *
 * On a machine whose speed changes between rounds (other guests of a VM, a kernel that turns slower for a while) the
 * two differ: the ratio of the medians compares one server's fast rounds with the other's slow ones when the changes
 * fall unevenly, while a change that lasts a round moves both samples of a pair alike and drops out of their ratio.
 */

export type Better = 'higher' | 'lower';

export interface Spread {
  median: number;
  min: number;
  max: number;
  /** How many pairs the spread is over. */
  count: number;
}

/** `value` against `reference`, oriented by `better`; undefined unless both are positive. */
export function orientedRatio(value: number, reference: number, better: Better): number | undefined {
  if (!(value > 0) || !(reference > 0) || !Number.isFinite(value) || !Number.isFinite(reference)) return undefined;
  return better === 'higher' ? value / reference : reference / value;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * The paired ratio: for each round in which both servers have a sample, the oriented ratio of the two; their median
 * and spread, or undefined when no round has both. Samples are given with the round they were taken in.
 */
export function pairedRatio(
  samples: ReadonlyArray<{ round: number; value: number }>,
  references: ReadonlyArray<{ round: number; value: number }>,
  better: Better,
): Spread | undefined {
  const byRound = new Map(references.map((r) => [r.round, r.value]));
  const ratios: number[] = [];
  for (const { round, value } of samples) {
    const reference = byRound.get(round);
    if (reference === undefined) continue;
    const ratio = orientedRatio(value, reference, better);
    if (ratio !== undefined) ratios.push(ratio);
  }
  if (ratios.length === 0) return undefined;
  return { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios), count: ratios.length };
}
