/**
 * A budget of reusable buffers for bytes on their way to storage (see PartBudget): the S3 driver's part buffers, and
 * the buffers uploads to the filesystem copy request bodies into.
 */

const MiB = 1024 * 1024;

/** How long buffers kept for reuse stay once none is held. */
export const PART_POOL_IDLE_MS = 30_000;

/**
 * The size a part buffer of `bytes` is made: up to 1 MiB, a multiple of 64 KiB; beyond, a multiple of 1 MiB. Buffers
 * of one size are reused by the next reservations of about that size (see PartBudget).
 */
export function partBufferSize(bytes: number): number {
  const step = bytes <= MiB ? 64 * 1024 : MiB;
  return Math.max(step, Math.ceil(bytes / step) * step);
}

/**
 * Memory for buffers that bytes on their way to storage are copied into, and the takers waiting for some. Two users:
 * - the S3 driver's writers (one budget per driver, `storage.s3.uploadbuffermemory`). A writer reserves a whole part
 *   buffer before it fills it (the next part's size, or less when it has been told how many bytes are coming: see
 *   `expect`), holds it while the part uploads, and gives it back when S3 has the part (or the writer ends).
 *   Reservations are granted first come, first served; one larger than the whole budget is granted when nothing else
 *   is held, so it never waits forever.
 * - uploads to the filesystem (`server/registry/uploads.ts`), which copy request bodies into 64 KiB buffers taken
 *   with `grow` (never waiting: the write window bounds them) and given back once written.
 *
 * A buffer given back is kept for the next taker of its size rather than left to the garbage collector: a dropped
 * buffer stays allocated until a full collection finds it, and V8 starts one only after tens of megabytes more have
 * been allocated outside its heap, so dropping every part (20 pushes of 10 MB: 200 MB of parts) left the process
 * holding two to three times the budget. Buffers held and buffers kept together stay within the budget (kept ones are
 * dropped to make room for a buffer of another size), and the kept ones go once none has been held for
 * PART_POOL_IDLE_MS.
 *
 * Why the S3 writers cannot deadlock: only a writer holding no filling buffer waits (a writer whose buffer outgrows
 * what it was told grows it without waiting), and what the others hold comes back without any reservation: a part in
 * flight when S3 answers, a filling buffer when its request ends, and a request cannot stand still for longer than
 * `http.timeouts.stall` (while it waits here its socket is paused, which that timeout does not count).
 */
export class PartBudget {
  private used = 0;
  /** The most bytes held at once so far. */
  peak = 0;
  /** The most reservations waiting at once so far. */
  peakWaiting = 0;
  /** Buffers made so far (the others were kept ones, taken again). */
  allocated = 0;
  private readonly waiting: Array<{ bytes: number; resolve: (buffer: Buffer) => void }> = [];
  /** Buffers given back, by size, kept for reuse; `kept` bytes in all. */
  private readonly pool = new Map<number, Buffer[]>();
  private kept = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(readonly limit: number, private readonly idleMs = PART_POOL_IDLE_MS) {}

  /** Bytes held now. */
  get held(): number {
    return this.used;
  }

  /** Bytes of buffers given back and kept for reuse. */
  get pooled(): number {
    return this.kept;
  }

  /** A buffer of at least `bytes` (see partBufferSize), waiting for it to fit. */
  reserve(bytes: number): Promise<Buffer> {
    const size = partBufferSize(bytes);
    if (this.waiting.length === 0 && this.fits(size)) return Promise.resolve(this.take(size));
    return new Promise((resolve) => {
      this.waiting.push({ bytes: size, resolve });
      this.peakWaiting = Math.max(this.peakWaiting, this.waiting.length);
    });
  }

  /** A buffer of at least `bytes`, added to what is held without waiting (may go over the limit). */
  grow(bytes: number): Buffer {
    return this.take(partBufferSize(bytes));
  }

  /** Give back a buffer from reserve() or grow(); nothing may use it afterwards. */
  release(buffer: Buffer): void {
    this.used -= buffer.length;
    if (this.used + this.kept + buffer.length <= this.limit) {
      const same = this.pool.get(buffer.length);
      if (same) same.push(buffer);
      else this.pool.set(buffer.length, [buffer]);
      this.kept += buffer.length;
    }
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.bytes)) {
      const next = this.waiting.shift()!;
      next.resolve(this.take(next.bytes));
    }
    if (this.used === 0 && this.kept > 0) {
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => {
        if (this.used === 0) this.drop(this.kept);
      }, this.idleMs).unref();
    }
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.limit;
  }

  private take(size: number): Buffer {
    this.used += size;
    if (this.used > this.peak) this.peak = this.used;
    const same = this.pool.get(size);
    const reused = same?.pop();
    if (reused) {
      this.kept -= size;
      if (same!.length === 0) this.pool.delete(size);
      return reused;
    }
    this.drop(this.used + this.kept - this.limit);
    this.allocated++;
    // Not zeroed: only the bytes a writer filled are ever read.
    return Buffer.allocUnsafeSlow(size);
  }

  /** Stop keeping at least `bytes` of the buffers kept for reuse (to the garbage collector). */
  private drop(bytes: number): void {
    for (const [size, buffers] of this.pool) {
      while (bytes > 0 && buffers.length > 0) {
        buffers.pop();
        this.kept -= size;
        bytes -= size;
      }
      if (buffers.length === 0) this.pool.delete(size);
      if (bytes <= 0) return;
    }
  }
}
