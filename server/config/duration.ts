/**
 * Durations written the way registry:2 (Go) writes them.
 *
 * Go's `time.ParseDuration` syntax: an optional sign, then one or more decimal numbers each followed by a unit
 * (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`), such as `300ms`, `1.5h`, `1h30m`, `168h`. A lone `0` needs no
 * unit. In a YAML config, registry:2 decodes a bare integer straight into a `time.Duration`, which counts
 * nanoseconds, so `interval: 10` means ten nanoseconds, not ten seconds. Wharf keeps both rules so a registry:2
 * config means the same thing here; the loader converts the result to milliseconds.
 */

const NANOS_PER_UNIT: Record<string, number> = {
  ns: 1,
  us: 1e3,
  'µs': 1e3, // U+00B5 micro sign
  'μs': 1e3, // U+03BC Greek mu
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** The largest duration Go can hold (int64 nanoseconds, about 292 years). */
const MAX_NANOS = 9223372036854775807;

const SEGMENT = /^(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/;

/**
 * Parse a Go duration string into nanoseconds. Throws an `Error` whose message says why the text is not a
 * duration. Precision is that of a JS number, which is exact to the nanosecond up to about 104 days.
 */
export function parseGoDuration(text: string): number {
  let rest = text;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest[0] === '-') sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') throw new Error('empty duration');

  let total = 0;
  while (rest !== '') {
    const m = SEGMENT.exec(rest);
    if (!m) {
      throw new Error(/^[\d.]+$/.test(rest) ? `missing unit in "${text}"` : `invalid duration "${text}"`);
    }
    const [whole, intPart = '', fracPart, unit = ''] = m;
    if (intPart === '' && (fracPart === undefined || fracPart === '')) throw new Error(`invalid duration "${text}"`);
    const value = Number(`${intPart || '0'}.${fracPart ?? ''}`.replace(/\.$/, ''));
    total += value * NANOS_PER_UNIT[unit]!;
    rest = rest.slice(whole.length);
  }
  if (total > MAX_NANOS) throw new Error(`duration "${text}" is too long`);
  return sign * total;
}

/** Nanoseconds to milliseconds (may be fractional below one millisecond). */
export function nanosToMillis(ns: number): number {
  return ns / 1e6;
}
