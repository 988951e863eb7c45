/**
 * Flags Wharf's processes run Node with, and the settings of the C library's allocator they run with (MALLOC_ENV,
 * below). The `wharf` command's first line passes both (server/cli.ts: neither can be set from inside a running
 * process), and so do `npm start`, the test harness and the benchmark; `serve` started by `node dist/server/cli.js`
 * without them runs itself again with them (`relaunchWithFlags`). A test holds the first line and these lists
 * together.
 *
 * --max-semi-space-size=4 (MiB), the young generation's size. Two things pull it in opposite directions:
 * - every 64 KiB a pushed blob body arrives in is a fresh buffer outside V8's heap, freed only when the small object
 *   holding it is collected. With 16 MiB spaces (the default they grow to) those objects were seldom scavenged, the
 *   buffers piled up and V8 ran a full mark-compact about every 20 MB received;
 * - with spaces too small, a scavenge runs every few milliseconds and the objects of requests still in flight (50
 *   keep-alive clients fetching manifests) outlive two of them and are moved to the old generation, which then
 *   fills with garbage between full collections.
 * Measured on a 2-core VM (one server, 3 x 200 MB pushes, 2 x 20 concurrent 10 MB pushes, wrk at 50 connections):
 * 2 MiB: 0.97-1.03 s CPU per 200 MB push, 43-59 mark-compacts, manifest GET 139-156 us CPU, peak RSS 140 MB under
 * the manifest load; 4 MiB: 0.74-0.77 s, 7-9 mark-compacts, 105-112 us, 85 MB; 16 MiB: 144 MB under the manifest
 * load, and the push GCs above.
 *
 * --initial-old-space-size=64 (MiB): V8 starts no full collection while the old generation, counted with the
 * buffers allocated outside the heap since the last one, is below 64 MiB. Those buffers are the point: a push
 * receives about 30 MiB of body buffers between two scavenges, all garbage by then, yet V8 counts them against the
 * old generation's limit, which it sets at 1.5-1.7 times the live heap (17 MiB of Wharf's modules and state) after
 * the first full collection. So a push ran a full mark-compact every 60-100 ms, 8-10 per 200 MB, while a minimal
 * server, whose heap never needed one, ran none. With this floor under the limit: no mark-compact in four 200 MB
 * pushes, 0.57 s instead of 0.82 s of CPU per push and 0.66 s instead of 0.91 s per 20 concurrent 10 MB pushes
 * (VM above, one process). It is a floor for when to collect, not a reservation: memory is used only as garbage
 * accumulates, about 6 MB more peak RSS under the manifest load of a fresh process (90 against 84 MB), and none
 * through every workload in one process (the peak there is set by the manifest load's heap growth after pushes).
 *
 * --no-allocation-site-pretenuring: V8 watches where objects are made, and once most objects from one place in the
 * code have outlived a young-generation collection, it makes the later ones there in the old generation at once. A
 * registry's long transfers do that to code every request shares: during eight concurrent 200 MB blob GETs, the
 * objects of Node's stream writes live for the whole transfer. From then on the same code made each small response's
 * objects in the old generation, where they stayed until a full collection and, pointing at the request's other
 * objects, kept those through the young collections too, which then moved them to the old generation: 500 KB a
 * collection under a manifest load, about 20 MB a second. Measured on the VM above, manifest load after the blob
 * GETs (GC trace, one run each): 590 against 64 KB surviving each scavenge, 500 against 1 KB promoted, 170-180
 * against 126 MB peak RSS, 160 against 111 us of CPU per GET. Pushes and the garbage collector were unchanged
 * (20 concurrent 10 MB pushes 0.99x the rate, paired over 8 rounds; one 200 MB push within 2%; `garbage-collect` of
 * 50,000 blobs 15.9-18.8 against 16.5-17.6 s).
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--initial-old-space-size=64', '--no-allocation-site-pretenuring'];

/**
 * Not a flag but a setting of Node's HTTP server, tuned with them: how many bytes of a request body a connection
 * buffers before its socket stops reading (and of a response before `write` asks to wait). Node 20's default is
 * 16 KiB, while a socket read brings up to 64 KiB: each chunk of a pushed body went over it, so the socket was stopped
 * and started again for every chunk the handler took (two or three system calls, `epoll_ctl` among them, and a round
 * of the stream machinery each: 11,700 `epoll_ctl` calls in three rounds of 20 concurrent 10 MB pushes, 192 with
 * 256 KiB). 20 concurrent 10 MB pushes ran 6.7-8.4% faster (per-round median of 15 alternating rounds; 2.9% with 64
 * KiB, the same with 1 MiB as with 256 KiB). The cost is bounded per connection: 256 KiB of a body read ahead, or of
 * a response to a slow reader (a blob GET from the filesystem already keeps two 1 MiB buffers in flight). Used with
 * filesystem storage only (httpServerOptions in ./http/connections.ts): pushes to S3 are bound by the service.
 */
export const SOCKET_HIGH_WATER_MARK = 256 * 1024;

/**
 * The flag's name: `--max-semi-space-size` of `--max-semi-space-size=4` (V8 also accepts `_` for `-`), and
 * `--allocation-site-pretenuring` of both it and `--no-allocation-site-pretenuring`.
 */
function flagName(flag: string): string {
  return flag.split('=')[0]!.replaceAll('_', '-').replace(/^--no-/, '--');
}

/**
 * The NODE_FLAGS this process was not started with, judged by name: a flag given with another value, or turned the
 * other way (on the command line or in NODE_OPTIONS), is the operator's choice and counts as given.
 */
export function missingNodeFlags(execArgv: readonly string[], nodeOptions = ''): string[] {
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName));
  return NODE_FLAGS.filter((flag) => !given.has(flagName(flag)));
}

/**
 * glibc's allocator settings (environment variables read when the process starts). Node allocates each chunk of a
 * request or response body it receives (64 KiB from a socket read) with malloc, and frees it when the garbage
 * collector finds it dead, tens of megabytes at a time. By default glibc gives the free memory at the top of its heap
 * back to the system once more than 128 KiB of it is free there, and moves that threshold as it goes; so depending
 * on where the last long-lived allocation happened to land, either nothing is given back or everything is, and in
 * the second case every new chunk lands in pages the kernel must fault in and zero again. A blob GET from S3 showed
 * both in successive runs of the same build: 35-50 ms of CPU per 32 MB GET with 3-60 minor page faults, or 170-325
 * ms with 8,000-11,000 (one per 4 KiB of body), at 73-106 instead of 134-207 MB/s.
 *
 * MALLOC_TRIM_THRESHOLD_ (128 MiB): free memory at the top of the heap is kept up to this much, so the churn of body
 * buffers between two collections (30-40 MB) reuses the same pages. MALLOC_MMAP_THRESHOLD_ (32 MiB, the most the
 * adaptive threshold would reach): setting the first stops the adaptation, and this keeps buffers below 32 MiB
 * (S3 part buffers, the filesystem's read buffers) on the heap rather than in mappings faulted in afresh each time.
 * With both, CPU per S3 GET stayed at 37-42 ms in every run, and peak RSS (a high-water mark) did not grow: what is
 * kept is what the process already had. What it changes is that RSS after a burst stays near that peak instead of
 * falling back. A value set in the environment is the operator's choice and is kept, except by the `wharf` command,
 * whose first line sets these.
 */
export const MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_TRIM_THRESHOLD_: String(128 * 1024 * 1024),
  MALLOC_MMAP_THRESHOLD_: String(32 * 1024 * 1024),
};

/** The MALLOC_ENV settings `env` lacks (a variable set to any value counts as set). */
export function missingMallocEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(MALLOC_ENV).filter(([name]) => env[name] === undefined));
}

/** `env` with the MALLOC_ENV settings it lacks: for starting a Wharf (or benchmark) process. */
export function withMallocEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...MALLOC_ENV, ...env };
}

/** `NAME=value` for each MALLOC_ENV setting, as the `wharf` command's first line and `npm start` give them. */
export function mallocEnvAssignments(): string {
  return Object.entries(MALLOC_ENV).map(([name, value]) => `${name}=${value}`).join(' ');
}
