#!/usr/bin/env -S MALLOC_TRIM_THRESHOLD_=134217728 MALLOC_MMAP_THRESHOLD_=33554432 node --max-semi-space-size=4 --initial-old-space-size=64 --no-allocation-site-pretenuring
/**
 * The `wharf` command: one binary, subcommands.
 *
 *   wharf serve [config.yml] [--workers N|auto]   run the registry (no file: the embedded default, filesystem under
 *                                      ./data); with several workers, one process per core (server/cluster.ts)
 *   wharf config check <config.yml>   validate a configuration file and print its warnings
 *   wharf garbage-collect <config.yml> [--dry-run] [--delete-untagged] [--grace <d>] [--upload-age <d>] [--quiet]
 *                                      [--every <d>] [--metrics-file <path>]   remove unreferenced content (server/gc)
 *   wharf retention <config.yml> [--dry-run] [--quiet]   apply policies.retention only (server/policies/retention-run.ts)
 *   wharf quota <config.yml> [--json]  each quota rule's running count next to a recount (server/policies/quota-report.ts)
 *
 * Exit codes: 0 success, 1 runtime failure, 2 invalid usage or configuration.
 *
 * The first line starts Node with Wharf's flags and allocator settings (NODE_FLAGS and MALLOC_ENV in ./node-flags.ts,
 * which says why) when the file runs as a command; `serve` started by `node cli.js` without them runs itself again
 * with them (relaunchWithFlags).
 */
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
// Only light modules are imported up front: `serve` may run itself again with Node's flags (relaunchWithFlags),
// and the process that does so should not have loaded the server. The rest is imported where a command needs it.
import type { WharfConfig } from './config/index.js';
import { isWorker, parseWorkers, reportListening, runPrimary } from './cluster.js';
import { missingMallocEnv, missingNodeFlags, withMallocEnv } from './node-flags.js';

const USAGE = `usage:
  wharf serve [config.yml] [--workers N|auto]     (or WHARF_WORKERS; default 1)
  wharf config check <config.yml>
  wharf garbage-collect <config.yml> [--dry-run] [--delete-untagged] [--grace <duration>] [--upload-age <duration>]
                        [--quiet] [--every <duration>] [--metrics-file <path>]
  wharf retention <config.yml> [--dry-run] [--quiet]
  wharf quota <config.yml> [--json]
`;

async function load(path: string | undefined): Promise<{ config: WharfConfig; warnings: string[] }> {
  const { ConfigError, loadConfig } = await import('./config/index.js');
  try {
    return await loadConfig({ path, env: process.env });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`wharf: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** A storage backend that cannot be used (missing bucket, bad credentials) ends the start with one clear line. */
async function startupFailure(err: unknown): Promise<never> {
  const { StorageError } = await import('../storage-drivers/driver.js');
  if (err instanceof StorageError) {
    process.stderr.write(`wharf: cannot start: storage ${err.message}\n`);
    process.exit(1);
  }
  throw err;
}

/** For test harnesses that bind port 0: the addresses actually chosen, on lines of their own. */
function announce(listener: { url: string; debugUrl?: string }): void {
  if (!process.env.WHARF_ANNOUNCE_LISTEN) return;
  if (listener.debugUrl) process.stdout.write(`WHARF_DEBUG_LISTENING ${listener.debugUrl}\n`);
  process.stdout.write(`WHARF_LISTENING ${listener.url}\n`);
}

/** `serve [config.yml] [--workers N|auto]`; the worker count may also come from WHARF_WORKERS. */
function parseServeArgs(args: string[]): { path?: string; workers: number } {
  let path: string | undefined;
  let workers = process.env.WHARF_WORKERS ?? '1';
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--workers') workers = args[++i] ?? '';
    else if (arg.startsWith('--workers=')) workers = arg.slice('--workers='.length);
    else if (path === undefined && !arg.startsWith('-')) path = arg;
    else throw new Error(`unexpected argument "${arg}"`);
  }
  return { path, workers: parseWorkers(workers) };
}

/**
 * Run this same command again in a Node started with the NODE_FLAGS and MALLOC_ENV settings it lacks, and stand in
 * for it: signals are passed on (SIGHUP reloads, SIGTERM/SIGINT drain), and its exit is this process's exit. So
 * `node dist/server/cli.js serve` serves as tuned however it was started. The first line of this file makes the
 * `wharf` command start with both, so it never comes here.
 */
function relaunchWithFlags(missing: string[]): void {
  const child = spawn(process.execPath, [...missing, ...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], {
    // The IPC channel is only there to end: the server stops when this process is gone, even when it was SIGKILLed.
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...withMallocEnv(), WHARF_RELAUNCHED: '1' },
  });
  for (const signal of ['SIGHUP', 'SIGTERM', 'SIGINT'] as const) process.on(signal, () => child.kill(signal));
  child.once('error', (err) => {
    process.stderr.write(`wharf: cannot start node with ${missing.join(' ')}: ${err.message}\n`);
    process.exit(1);
  });
  child.once('exit', (code, signal) => process.exit(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1)));
}

async function serve(args: string[]): Promise<void> {
  let parsed: ReturnType<typeof parseServeArgs>;
  try {
    parsed = parseServeArgs(args);
  } catch (err) {
    process.stderr.write(`wharf: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  const missing = missingNodeFlags(process.execArgv, process.env.NODE_OPTIONS);
  const mallocMissing = Object.keys(missingMallocEnv(process.env)).length > 0;
  if ((missing.length > 0 || mallocMissing) && !process.env.WHARF_RELAUNCHED && !isWorker()) return relaunchWithFlags(missing);
  const { path, workers } = parsed;
  const { config, warnings } = await load(path);
  const { createLogger } = await import('./logging.js');
  const logger = createLogger(config);
  if (workers > 1 && !isWorker()) {
    for (const warning of warnings) logger.warn({ config: path ?? 'embedded default' }, warning);
    process.exitCode = await runPrimary(workers, logger, announce);
    logger.flush?.();
    return;
  }
  if (!isWorker()) for (const warning of warnings) logger.warn({ config: path ?? 'embedded default' }, warning);
  const [{ startServer }, { loadConfig }] = await Promise.all([import('./main.js'), import('./config/index.js')]);
  const running = await startServer(config, logger).catch(startupFailure);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining in-flight requests');
    running.close().then(
      () => {
        logger.info('stopped');
        logger.flush?.();
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // SIGHUP re-reads the configuration file and applies its auth rules, groups and users, content policies and
  // manifest validation; the listener and open connections are untouched. A file that no longer loads leaves the
  // running rules as they were.
  process.on('SIGHUP', () => {
    loadConfig({ path, env: process.env }).then(
      ({ config: next }) => running.reload(next),
      (err: unknown) => logger.error({ err: (err as Error).message }, 'SIGHUP: configuration not reloaded'),
    ).catch((err: unknown) => logger.error({ err: (err as Error).message }, 'SIGHUP: configuration not reloaded'));
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  if (process.env.WHARF_RELAUNCHED && process.channel) {
    // Started by relaunchWithFlags: when the process the operator started is gone, drain and stop as on SIGTERM.
    process.once('disconnect', () => stop('launcher exited'));
    process.channel.unref();
  }
  // Announced once the signals are handled, so whoever waits for it may stop or reload the server at once.
  if (isWorker()) reportListening({ url: running.url, debugUrl: running.debugUrl });
  else announce(running);
}

async function configCheck(path: string | undefined): Promise<void> {
  if (!path) {
    process.stderr.write(USAGE);
    process.exit(2);
  }
  const { warnings } = await load(path);
  for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`);
  process.stderr.write(`configuration OK: ${path}\n`);
}

type GcModule = typeof import('./gc/command.js');

/**
 * The collector's commands (garbage-collect, retention): parse the arguments (a mistake: exit 2 with the usage), load
 * the configuration, run; the exit code is the run's.
 */
async function collectorCommand<O extends { configPath: string; quiet: boolean }>(
  args: string[],
  pick: (m: GcModule) => { parse(args: string[]): O; usage: string; run(config: WharfConfig, options: O): Promise<number> },
): Promise<void> {
  const m = await import('./gc/command.js');
  const command = pick(m);
  let options: O;
  try {
    options = command.parse(args);
  } catch (err) {
    if (!(err instanceof m.UsageError)) throw err;
    process.stderr.write(`wharf: ${err.message}\n${command.usage}`);
    process.exit(2);
  }
  const { config, warnings } = await load(options.configPath);
  if (!options.quiet) for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`);
  process.exitCode = await command.run(config, options);
}

const garbageCollect = (args: string[]) =>
  collectorCommand(args, (m) => ({ parse: m.parseGcArgs, usage: m.GC_USAGE, run: m.garbageCollectCommand }));
const retention = (args: string[]) =>
  collectorCommand(args, (m) => ({ parse: m.parseRetentionArgs, usage: m.RETENTION_USAGE, run: m.retentionCommand }));

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'config':
      if (rest[0] === 'check') return configCheck(rest[1]);
      break;
    case 'garbage-collect':
      return garbageCollect(rest);
    case 'retention':
      return retention(rest);
    case 'quota': {
      const { quotaCommand } = await import('./policies/quota-report.js');
      process.exitCode = await quotaCommand(rest, load);
      return;
    }
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return;
  }
  process.stderr.write(USAGE);
  process.exit(2);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`wharf: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
