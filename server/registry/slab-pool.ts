/**
 * Buffers of one size, kept for reuse: where an upload copies the bytes of a request body on their way to the
 * filesystem (see WriteWindow in uploads.ts).
 *
 * Why copy at all: Node hands each chunk of a request body over in a buffer of its own, allocated outside V8's heap.
 * A chunk still waiting for its write when the young generation is collected (a few times a second while pushes
 * run) is moved into the old generation, and its memory then stays allocated until a full collection, which V8
 * starts only after tens of megabytes more have piled up that way. With 20 concurrent 10 MB pushes that was about
 * one full collection per 200 MB pushed (10-11 in 10 rounds; 1 with the copies), V8's helper threads marking for 2-3
 * ms of CPU per push, and 20-30 MB more at the peak. A chunk copied into a pooled buffer as it arrives is dead at
 * once, and the pooled buffers are used again and again instead of being collected.
 *
 * Why not the S3 driver's PartBudget, which also keeps given-back buffers: it keeps them only while those held and
 * those kept together fit its budget, right where its takers wait for the budget. The buffers here are bounded by the
 * uploads' write window instead, and held ones pass 16 MiB under load, so that rule dropped most of them: tried, 20
 * concurrent 10 MB pushes peaked 17-37 MB higher and ran 2.3-2.5% slower (paired, 10 rounds, twice). This pool bounds
 * only what it keeps.
 */

/** How long buffers kept for reuse stay once none is held. */
export const SLAB_POOL_IDLE_MS = 30_000;

export class SlabPool {
  /** Buffers given back and kept for the next take(). */
  private readonly kept: Buffer[] = [];
  private heldCount = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Buffers allocated so far (for tests and the docs' measurements). */
  allocated = 0;

  /**
   * @param slabBytes the size of every buffer.
   * @param maxKept how many given-back buffers are kept at most; the others go to the garbage collector.
   * @param idleMs how long the kept buffers stay once no buffer is held.
   */
  constructor(readonly slabBytes: number, readonly maxKept: number, private readonly idleMs = SLAB_POOL_IDLE_MS) {}

  /** Buffers taken and not given back. */
  get held(): number {
    return this.heldCount;
  }

  /** Buffers kept for reuse. */
  get pooled(): number {
    return this.kept.length;
  }

  /** A buffer of `slabBytes`. Not zeroed: whoever takes it reads only the bytes it wrote. */
  take(): Buffer {
    this.heldCount++;
    const reused = this.kept.pop();
    if (reused) return reused;
    this.allocated++;
    return Buffer.allocUnsafeSlow(this.slabBytes);
  }

  /** Give back a buffer from take(); nothing may use it afterwards. */
  give(slab: Buffer): void {
    this.heldCount--;
    if (this.kept.length < this.maxKept) this.kept.push(slab);
    if (this.heldCount > 0 || this.kept.length === 0) return;
    if (this.idleTimer) this.idleTimer.refresh();
    else this.idleTimer = setTimeout(() => this.dropIfIdle(), this.idleMs).unref();
  }

  private dropIfIdle(): void {
    this.idleTimer = undefined;
    if (this.heldCount === 0) this.kept.length = 0;
  }
}
