/**
 * Health: liveness, readiness and registry:2's `health.storagedriver` check.
 *
 * - Liveness (`/healthz`): the process answers HTTP. Nothing else is checked, so a slow backend never gets a healthy
 *   process restarted.
 * - Readiness (`/readyz`): storage answers now (and every extra check registered, such as Redis), each within a
 *   timeout. A replica that is not ready is taken out of the load balancer, not restarted.
 * - `health.storagedriver` (registry:2 semantics): when enabled, storage is checked every `interval`; after
 *   `threshold` failures in a row the registry API answers 503 until a check passes again.
 *
 * The storage check is registry:2's: stat the root; "not found" counts as healthy (an empty bucket has no root).
 */
import type { Logger } from 'pino';
import { PathNotFoundError, type StorageDriver } from '../storage-drivers/driver.js';
import type { Metrics } from './metrics.js';

export interface StorageHealthOptions {
  enabled: boolean;
  /** ms between checks */
  interval: number;
  /** consecutive failures before the API answers 503 */
  threshold: number;
}

export type HealthCheck = () => Promise<void>;

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, 'ok' | string>;
}

/** Reject after `ms` with a message naming what timed out. */
function withTimeout<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export class Health {
  private readonly checks = new Map<string, HealthCheck>();
  private readonly advisories = new Map<string, HealthCheck>();
  private failures = 0;
  private lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly driver: StorageDriver,
    private readonly options: StorageHealthOptions,
    private readonly logger?: Logger,
    private readonly metrics?: Metrics,
    private readonly timeoutMs = 5000,
  ) {
    this.checks.set(`storagedriver_${driver.name}`, () => this.checkStorage());
  }

  /** Add a readiness check. It should throw when the dependency is unusable. */
  addCheck(name: string, check: HealthCheck): void {
    this.checks.set(name, check);
  }

  /**
   * Add a dependency that is reported by `/readyz` but does not decide readiness: the replica still serves without
   * it (Redis: every replica shares it, and without it the registry answers from storage, so failing readiness on
   * it would take every replica out of the load balancer at once).
   */
  addAdvisory(name: string, check: HealthCheck): void {
    this.advisories.set(name, check);
  }

  private async checkStorage(): Promise<void> {
    try {
      await this.driver.stat('/');
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
  }

  /** Begin the periodic storage check when `health.storagedriver.enabled`. */
  start(): void {
    if (!this.options.enabled || this.timer) return;
    const tick = async () => {
      try {
        await withTimeout('storage', this.timeoutMs, this.checkStorage());
        if (this.failures >= this.options.threshold) this.logger?.info('storage is healthy again');
        this.failures = 0;
        this.lastError = undefined;
      } catch (err) {
        this.failures++;
        this.lastError = (err as Error).message;
        if (this.failures === this.options.threshold) {
          this.logger?.error({ err: this.lastError, failures: this.failures }, 'storage health check failing: answering 503');
        }
      }
      this.metrics?.storageHealthy.set(this.storageHealthy() ? 1 : 0);
      this.timer = setTimeout(tick, this.options.interval);
      this.timer.unref();
    };
    this.timer = setTimeout(tick, 0);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** False once the periodic check failed `threshold` times in a row (always true when the check is disabled). */
  storageHealthy(): boolean {
    return !this.options.enabled || this.failures < this.options.threshold;
  }

  /** Why storage is unhealthy, when it is. */
  storageError(): string | undefined {
    return this.storageHealthy() ? undefined : this.lastError;
  }

  /** Run every check now. */
  async readiness(): Promise<ReadinessReport> {
    const checks: Record<string, string> = {};
    const run = async ([name, check]: [string, HealthCheck]) => {
      try {
        await withTimeout(name, this.timeoutMs, check());
        checks[name] = 'ok';
      } catch (err) {
        checks[name] = (err as Error).message || 'failed';
      }
    };
    await Promise.all([...this.checks, ...this.advisories].map(run));
    const ready = [...this.checks.keys()].every((name) => checks[name] === 'ok');
    return { ready, checks };
  }
}
