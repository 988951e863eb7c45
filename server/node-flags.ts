/**
 * Flags Wharf's processes run Node with. The `wharf` command's first line passes them (server/cli.ts: Node's flags
 * cannot be set from inside a running process), and so do `npm start`, the test harness and the benchmark; `serve`
 * started by `node dist/server/cli.js` without them runs itself again with them (`relaunchWithFlags`). A test holds
 * the first line and this list together.
 *
 * --max-semi-space-size=2 (MiB): every 64 KiB a pushed blob body arrives in is a fresh buffer outside V8's heap,
 * freed only when the small object that holds it is collected. With young-generation spaces of 16 MiB (the
 * default they grow to) those objects were seldom scavenged, the buffers piled up, and V8 ran a full mark-compact
 * about every 20 MB received to relieve the pressure: a 200 MB push took about 30. With 2 MiB spaces the frequent
 * scavenges free the buffers and no mark-compact runs. On a 2-core VM: 15% less CPU per 200 MB push, 37% less with
 * 20 concurrent pushes, and lower peak memory in every workload; blob and manifest GETs unchanged.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/** The flag's name: `--max-semi-space-size` of `--max-semi-space-size=2` (V8 also accepts `_` for `-`). */
function flagName(flag: string): string {
  return flag.split('=')[0]!.replaceAll('_', '-');
}

/**
 * The NODE_FLAGS this process was not started with, judged by name: a flag given with another value (on the command
 * line or in NODE_OPTIONS) is the operator's choice and counts as given.
 */
export function missingNodeFlags(execArgv: readonly string[], nodeOptions = ''): string[] {
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName));
  return NODE_FLAGS.filter((flag) => !given.has(flagName(flag)));
}
