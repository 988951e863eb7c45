/** Reading a running Wharf's Prometheus metrics in tests. */
import type { RunningWharf } from './harness.js';

/** The URL of the debug listener a Wharf announced (`http.debug.addr`). */
export function debugUrl(w: RunningWharf): string {
  const m = /^WHARF_DEBUG_LISTENING (\S+)$/m.exec(w.output());
  if (!m) throw new Error(`no debug listener announced:\n${w.output()}`);
  return m[1]!;
}

/** The value of one sample line of a Prometheus exposition, or undefined. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** The exposition a Wharf's debug listener serves at /metrics (`http.debug.prometheus.enabled`). */
export async function scrape(w: RunningWharf): Promise<string> {
  const res = await fetch(`${debugUrl(w)}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}
