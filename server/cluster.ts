/**
 * Several server processes on one host (`wharf serve --workers N`, or WHARF_WORKERS): a primary process forks N
 * workers with node:cluster; each runs the whole server and they share the listening socket, so a multi-core host
 * serves requests on every core. The primary serves nothing itself: it starts the workers, replaces one that dies,
 * forwards SIGHUP (reload) and SIGTERM/SIGINT (drain and stop) to all of them, and exits when they have.
 *
 * Workers are independent replicas in one process group: upload sessions live in storage and any worker can
 * continue one (the running hash is rebuilt from the stored bytes when a request lands on another worker), and the
 * in-memory caches hold only what is safe per replica. As with several replicas, a shared blob-descriptor cache
 * and the GC lock need Redis (docs/performance.md).
 */
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';

/** Message a worker sends the primary once it listens. */
export interface ListeningMessage {
  type: 'wharf:listening';
  url: string;
  debugUrl?: string;
}

/** Parse a worker count: a positive integer, or `auto` for one per available core. Throws on anything else. */
export function parseWorkers(value: string): number {
  if (value === 'auto') return availableParallelism();
  if (!/^[1-9]\d*$/.test(value)) throw new Error(`--workers: expected a positive integer or "auto", got "${value}"`);
  return Number(value);
}

/**
 * Run as the primary: fork `count` workers (each re-runs this command and serves), announce the listener once all
 * of them listen, and supervise them until a signal stops everything. Resolves when the primary should exit, with
 * its exit code.
 */
export function runPrimary(count: number, logger: Logger, announce: (message: ListeningMessage) => void): Promise<number> {
  return new Promise((resolveExit) => {
    let stopping = false;
    let failed = false;
    let announced = false;
    const listening = new Set<number>();

    const fork = (): Worker => {
      const worker = cluster.fork();
      worker.on('message', (message: ListeningMessage) => {
        if (message?.type !== 'wharf:listening') return;
        listening.add(worker.id);
        if (!announced && listening.size >= count) {
          announced = true;
          logger.info({ workers: count, url: message.url }, 'all workers listening');
          announce(message);
        }
      });
      worker.on('exit', (code, signal) => {
        const wasListening = listening.delete(worker.id);
        if (stopping) {
          if (code !== 0) failed = true;
          if (Object.keys(cluster.workers ?? {}).length === 0) resolveExit(failed ? 1 : 0);
          return;
        }
        if (!wasListening) {
          // It never came up (a bad config, a port in use): replacing it would only fail again.
          logger.error({ worker: worker.id, code, signal }, 'worker failed to start; stopping');
          failed = true;
          stopAll('SIGTERM');
          return;
        }
        logger.error({ worker: worker.id, code, signal }, 'worker exited; starting a replacement');
        fork();
      });
      return worker;
    };

    const stopAll = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'stopping workers');
      const workers = Object.values(cluster.workers ?? {});
      if (workers.length === 0) resolveExit(failed ? 1 : 0);
      for (const worker of workers) worker?.process.kill('SIGTERM');
    };

    process.on('SIGTERM', () => stopAll('SIGTERM'));
    process.on('SIGINT', () => stopAll('SIGINT'));
    process.on('SIGHUP', () => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGHUP');
    });
    for (let i = 0; i < count; i++) fork();
  });
}

/** In a worker: tell the primary that this worker listens. */
export function reportListening(message: Omit<ListeningMessage, 'type'>): void {
  process.send?.({ type: 'wharf:listening', ...message } satisfies ListeningMessage);
}

export const isWorker = (): boolean => cluster.isWorker;
