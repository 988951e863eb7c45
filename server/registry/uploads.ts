/**
 * Blob upload sessions.
 *
 * State lives in storage (`_uploads/<id>/data` and `startedat`), so any replica can serve any request of a session
 * and a restart loses nothing: the session's offset is the size storage reports for `data`.
 *
 * One writer at a time, across processes and replicas, without Redis or locks that a crash would leave held:
 *   - A write may start only at a boundary: offset 0, or an offset where an earlier write ended, which that write
 *     marks (`_uploads/<id>/ends/<offset>`) once its bytes are committed and its writer closed.
 *   - Before writing at offset X a request claims X: it creates `_uploads/<id>/claims/<X>` exclusively
 *     (`putContentIfAbsent`, decided by the filesystem or the S3 service), checks that X is a boundary and that the
 *     stored size is X, and gives the claim back (416) otherwise. A claim under which bytes were written is kept,
 *     so nobody writes at X again; one under which nothing was written is removed.
 *   - Completing claims the final size F the same way and holds it while the blob is committed (when it wrote the
 *     final chunk itself, F is not marked until it is done, which keeps everyone else out as well).
 * So at any time at most one request writes, and a write in progress cannot be joined: the sizes a write passes
 * through are not boundaries, and the boundary it started at is claimed. A writer that crashed between writing and
 * marking its end leaves a session that cannot be continued (416); the client starts a new upload.
 *
 * Hashing: each process keeps the running hash of the sessions it has served (the fast path). A write feeds it only
 * when it starts where the hash ends, and every write that fed it held its claim, so when it covers all F stored
 * bytes at completion, every one of them was written by this process's own requests: they are the hashed bytes, and
 * are moved into the blob store as they are. Otherwise (another replica or process wrote, the process restarted, the
 * hash was evicted or dropped after a failed write) the stored bytes are read once into a new private file while
 * being hashed, and it is that file, holding exactly the hashed bytes, that becomes the blob, whatever a writer not
 * following these rules (an older Wharf during a rolling upgrade) does meanwhile. On storage that cannot create a
 * file exclusively (an S3-compatible service ignoring conditional writes) there are no claims, and every completion
 * takes this way. A pushed blob is always stored, even when a file of that digest exists: its bytes are not known
 * to match.
 */
import { randomUUID, type Hash } from 'node:crypto';
import { PathNotFoundError, UnsupportedOperationError, type FileWriter, type StorageDriver, ifExists } from '../../storage-drivers/driver.js';
import { BlobStore, type BlobDescriptor } from './blobs.js';
import { RegistryError } from './errors.js';
import * as layout from './layout.js';
import { newHash, type Digest, type DigestAlgorithm } from './reference.js';
import type { Quotas } from '../policies/quota.js';
import { SlabPool } from './slab-pool.js';

const UPLOAD_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isValidUploadId(id: string): boolean {
  return UPLOAD_ID_RE.test(id);
}

export interface UploadStatus {
  id: string;
  /** Bytes received so far. */
  offset: number;
}

/** An inclusive byte range from a `Content-Range` request header. */
export interface ChunkRange {
  start: number;
  end: number;
}

export interface AppendOptions {
  /** The `Content-Range` of the chunk, when the client sent one (chunked upload). */
  range?: ChunkRange;
  /** The `Content-Length` of the body, when the client sent one. */
  length?: number;
}

interface HashState {
  algorithm: DigestAlgorithm;
  hash: Hash;
  /** Bytes fed into `hash`; valid only while it equals the stored size. */
  offset: number;
}

/** A claim this request holds on a session (see the module comment). */
interface Claim {
  offset: number;
  token: string;
  path: string;
  /** False when the storage cannot create files exclusively: then nothing was created, and nothing is trusted. */
  exclusive: boolean;
}

/** What the registry is told about commits. */
export interface UploadHooks {
  /** Called after the digest is verified and before the bytes are committed and linked (the GC live set). */
  beforeBlobLinked?(name: string, digest: string): Promise<void> | void;
  /** Quotas (server/policies/quota.ts): refuses (DENIED) a session growing past them, charges a blob before it is linked. */
  quotas?: Pick<Quotas, 'room' | 'charge'>;
}

/**
 * Bytes of a request body allowed to be on their way to storage at once. The driver receives the next chunks
 * while earlier ones are written, so receiving, hashing and writing overlap; the bound keeps a request's memory
 * small however large the blob.
 *
 * The window is shared: a budget split between the requests writing at the time, at most WRITE_WINDOW and at least
 * MIN_WRITE_WINDOW each. One large push gets a wide window, which means fewer and larger writes and fewer
 * thread-pool round trips (one 200 MB push on a 2-core VM: about 20% less CPU at 1 MiB than at 128 KiB). Many pushes
 * at once get narrower windows, so memory stays within the budget: WRITE_BUDGET for writers that join the chunks
 * handed over together (the filesystem), which get batches (below); UNJOINED_WRITE_BUDGET for the others (S3, whose
 * writer copies each chunk into a part buffer with a budget of its own).
 */
export const WRITE_WINDOW = 1024 * 1024;
export const MIN_WRITE_WINDOW = 128 * 1024;
export const WRITE_BUDGET = 16 * 1024 * 1024;
export const UNJOINED_WRITE_BUDGET = 2 * 1024 * 1024;

/**
 * Bytes a request collects before handing them to a writer that joins writes, which the filesystem writes with one
 * system call: at most half the request's window (so that the next batch fills while one is written), and whatever
 * is left at the end of the body. Handed over as they came (64 KiB from the socket), the chunks of many concurrent
 * pushes reached the disk one or two per write, since little arrives for each push while its last write is out: 20
 * concurrent 10 MB pushes made about 100 writes each, and handing them to the thread pool was a sixth of the main
 * thread's time.
 */
export const WRITE_BATCH = 512 * 1024;

/**
 * How long collected chunks wait for the next one before they are handed over anyway: the bytes of a client that
 * pauses (or of a replica killed in the middle of a request) reach storage this soon after they arrived, as they
 * did when every chunk was handed over at once.
 */
export const BATCH_IDLE_MS = 20;

/** Requests writing upload bytes in this process right now. */
let writingRequests = 0;

function currentWindow(budget: number): number {
  return Math.min(WRITE_WINDOW, Math.max(MIN_WRITE_WINDOW, Math.floor(budget / Math.max(writingRequests, 1))));
}

/**
 * The size of the buffers a request body is copied into on its way to a writer that joins writes: a chunk as the
 * socket reads it. A request filling one holds at most one partly filled at a time.
 */
export const SLAB_BYTES = 64 * 1024;

/**
 * The buffers the bodies of all uploads of this process are copied into (see slab-pool.ts for why), and as many as
 * the write budget is kept for reuse.
 */
export const slabs = new SlabPool(SLAB_BYTES, WRITE_BUDGET / SLAB_BYTES);

/** Writes to a driver writer in batches, without waiting for each one, with at most the current window outstanding. */
class WriteWindow {
  private readonly outstanding: Array<{ done: Promise<void>; bytes: number }> = [];
  /**
   * What is collected for the next batch, not handed to the writer yet: the chunks as they came, or, for a writer
   * that joins writes, the full pooled buffers they were copied into.
   */
  private batch: Uint8Array[] = [];
  private batchBytes = 0;
  /** The pooled buffer being filled (a writer that joins writes), and how much of it is. */
  private slab: Buffer | undefined;
  private slabUsed = 0;
  /** Bytes collected or being written. */
  private bytes = 0;
  /** Hands the collection over once no chunk came for BATCH_IDLE_MS. */
  private idle: NodeJS.Timeout | undefined;

  /** The budget this writer's window is a share of, and the most bytes it collects before handing them over. */
  private readonly budget: number;
  private readonly batchLimit: number;
  /**
   * Whether chunks are copied into pooled buffers: for a writer that joins writes, which is done with a chunk once its
   * write settled (see FileWriter.joinsWrites). The others may keep a chunk longer (S3 copies them itself).
   */
  private readonly copies: boolean;

  constructor(private readonly writer: FileWriter) {
    const joins = writer.joinsWrites === true;
    this.budget = joins ? WRITE_BUDGET : UNJOINED_WRITE_BUDGET;
    this.batchLimit = joins ? WRITE_BATCH : 0;
    this.copies = joins;
  }

  /**
   * Take `chunk` for writing. Returns undefined while the outstanding bytes are within the window, else a promise that
   * resolves once they are back within it: a push hands over thousands of chunks, and an async call per chunk was a
   * promise and a turn of the microtask queue each (7% of the main thread's time in 20 concurrent pushes). The
   * caller may reuse `chunk` once this returns when the writer joins writes (its bytes are copied).
   */
  write(chunk: Uint8Array): Promise<void> | undefined {
    if (this.copies) this.copy(chunk);
    else this.batch.push(chunk);
    this.batchBytes += chunk.byteLength;
    this.bytes += chunk.byteLength;
    const window = currentWindow(this.budget);
    if (this.batchBytes >= Math.min(this.batchLimit, window / 2)) this.handOver();
    else if (this.idle) this.idle.refresh();
    else this.idle = setTimeout(() => this.handOver(), BATCH_IDLE_MS);
    return this.bytes > window ? this.shrink() : undefined;
  }

  /** Copy `chunk` into pooled buffers, each one collected once full. */
  private copy(chunk: Uint8Array): void {
    for (let from = 0; from < chunk.byteLength; ) {
      this.slab ??= slabs.take();
      const n = Math.min(chunk.byteLength - from, SLAB_BYTES - this.slabUsed);
      this.slab.set(n === chunk.byteLength ? chunk : chunk.subarray(from, from + n), this.slabUsed);
      this.slabUsed += n;
      from += n;
      if (this.slabUsed === SLAB_BYTES) {
        this.batch.push(this.slab);
        this.slab = undefined;
        this.slabUsed = 0;
      }
    }
  }

  /** Start writing what is collected, all in the same turn (see FileWriter.joinsWrites). */
  private handOver(): void {
    if (this.idle) {
      clearTimeout(this.idle);
      this.idle = undefined;
    }
    // When this window copies, what is collected are pooled buffers, filled.
    for (const chunk of this.batch) this.hand(chunk, this.copies ? (chunk as Buffer) : undefined);
    if (this.slab) {
      // Partly filled: written as far as it is, and given back whole once written.
      this.hand(this.slab.subarray(0, this.slabUsed), this.slab);
      this.slab = undefined;
      this.slabUsed = 0;
    }
    this.batch = [];
    this.batchBytes = 0;
  }

  /** Hand `chunk`, in the pooled buffer `slab` when this window copies, to the writer. */
  private hand(chunk: Uint8Array, slab: Buffer | undefined): void {
    const done = this.writer.write(chunk);
    // Observed at once so that a failure is never an unhandled rejection; it is thrown where it is awaited. A pooled
    // buffer goes back once the writer is done with it, whether the write succeeded or not.
    if (slab) {
      const giveBack = () => slabs.give(slab);
      done.then(giveBack, giveBack);
    } else {
      done.catch(() => {});
    }
    this.outstanding.push({ done, bytes: chunk.byteLength });
  }

  /** Wait for the oldest writes until the bytes are back within the window; what is collected keeps collecting. */
  private async shrink(): Promise<void> {
    while (this.bytes > currentWindow(this.budget)) {
      // Only when the window narrowed below what is collected (more requests began writing) is there none out.
      if (this.outstanding.length === 0) this.handOver();
      await this.oldest();
    }
  }

  /** Write what is collected and wait for every outstanding write; throws the first failure. */
  async drain(): Promise<void> {
    this.handOver();
    while (this.outstanding.length > 0) await this.oldest();
  }

  /**
   * Write what is collected and wait for every outstanding write, ignoring failures (the caller is already failing:
   * a client that went away keeps what it sent, and after a failed write the writer refuses the rest at once).
   */
  async settle(): Promise<void> {
    this.handOver();
    await Promise.allSettled(this.outstanding.map((w) => w.done));
    this.outstanding.length = 0;
    this.bytes = 0;
  }

  private async oldest(): Promise<void> {
    const first = this.outstanding.shift()!;
    this.bytes -= first.bytes;
    await first.done;
  }
}

/**
 * Running hashes kept per process at most. A session whose client went away never completes, and its hash would
 * otherwise stay until a restart; past this many, the one used least recently goes (if its session comes back, its
 * hash is rebuilt from the stored bytes).
 */
export const MAX_HASH_STATES = 10_000;

/** The 416 message when the stored bytes end where no write ended (a write in progress, or one whose writer died). */
export const UNFINISHED_WRITE =
  'the last write to this upload is in progress or did not finish (its writer stopped); retry once it ends, or start a new upload';

export class UploadStore {
  /** Running hashes by session, least recently used first. */
  private readonly states = new Map<string, HashState>();
  /** Sessions with a request in progress in this process; a second concurrent request is refused. */
  private readonly busy = new Set<string>();
  /**
   * Set once the storage answered that it cannot create a file exclusively (an S3-compatible service without
   * conditional writes): every completion then commits a re-hashed private copy.
   */
  private claimsUnsupported = false;

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly hooks: UploadHooks = {},
    private readonly maxHashStates = MAX_HASH_STATES,
  ) {}

  /** Keep `state` as the session's running hash, as the most recently used one. */
  private remember(key: string, state: HashState): void {
    this.states.delete(key);
    this.states.set(key, state);
    for (const oldest of this.states.keys()) {
      if (this.states.size <= this.maxHashStates) break;
      this.states.delete(oldest);
    }
  }

  private key(name: string, id: string): string {
    return `${name}\u0000${id}`;
  }

  private unknown(id: string): RegistryError {
    return new RegistryError('BLOB_UPLOAD_UNKNOWN', undefined, { detail: { uuid: id } });
  }

  async start(name: string, algorithm: DigestAlgorithm = 'sha256'): Promise<UploadStatus> {
    const id = randomUUID();
    await this.createSessionFile(layout.uploadDataPath(name, id), '');
    await this.writeStartedAt(name, id);
    this.remember(this.key(name, id), { algorithm, hash: newHash(algorithm), offset: 0 });
    return { id, offset: 0 };
  }

  /**
   * Record when the session started (read by upload purging and the upload limits). Its loss in a crash is harmless:
   * a session without a readable `startedat` is aged by the modification time of its data (server/registry/purge.ts),
   * and nothing else reads it.
   */
  private async writeStartedAt(name: string, id: string): Promise<void> {
    await this.createSessionFile(layout.uploadStartedAtPath(name, id), new Date().toISOString());
  }

  /**
   * Create a file of a new session: created exclusively and not flushed (no fsync, temporary file or rename), or, on
   * storage that cannot create exclusively, a plain write. The id is new, so the file cannot exist; should it anyway,
   * it is replaced, as a writer opened to truncate it would have. Not a writer: on S3 opening one lists the key's open
   * multipart uploads, a request that can find nothing for a new key.
   */
  private async createSessionFile(path: string, content: string): Promise<void> {
    try {
      if (await this.driver.putContentIfAbsent(path, content)) return;
    } catch (err) {
      if (!(err instanceof UnsupportedOperationError)) throw err;
    }
    await this.driver.putContent(path, content);
  }

  async status(name: string, id: string): Promise<UploadStatus> {
    if (!isValidUploadId(id)) throw this.unknown(id);
    const info = await ifExists(this.driver.stat(layout.uploadDataPath(name, id)));
    if (!info || info.isDir) throw this.unknown(id);
    return { id, offset: info.size };
  }

  private async busyError(name: string, id: string, message = 'another request is writing to this upload'): Promise<RegistryError> {
    const { offset } = await this.status(name, id);
    return new RegistryError('BLOB_UPLOAD_INVALID', message, {
      reason: { kind: 'upload-busy', uuid: id, offset },
      detail: { uuid: id },
    });
  }

  /**
   * Claim the session at `offset` for this request, across every process sharing the storage (see the module
   * comment): 416 when another request holds that offset, when no write ended there, or when the stored size is no
   * longer `offset` once the claim is made (the claim is then given back). Returns the claim, to be kept once bytes
   * are written under it, else released. With `sized` false the caller reads the stored size itself, after the
   * claim and before writing, from the writer it opens (see write()): a second read of it here would only cost.
   */
  private async claim(name: string, id: string, offset: number, sized = true): Promise<Claim> {
    const token = randomUUID();
    const path = layout.uploadClaimPath(name, id, offset);
    let exclusive = !this.claimsUnsupported;
    try {
      if (exclusive && !(await this.driver.putContentIfAbsent(path, token))) {
        // The token is new, so a claim holding it is ours: a create the driver retried after its answer was lost.
        const held = await ifExists(this.driver.getContent(path));
        if (held?.toString('utf8') !== token) throw await this.busyError(name, id);
      }
    } catch (err) {
      if (!(err instanceof UnsupportedOperationError)) throw err;
      // The storage cannot decide between writers: no running hash is trusted from now on (see trustedState).
      this.claimsUnsupported = true;
      exclusive = false;
    }
    const claim = { offset, token, path, exclusive };
    const dataPath = layout.uploadDataPath(name, id);
    const [boundary, info] = await Promise.all([
      offset === 0 || !exclusive ? true : ifExists(this.driver.stat(layout.uploadEndPath(name, id, offset))).then(Boolean),
      sized ? ifExists(this.driver.stat(dataPath)) : undefined,
    ]);
    if (boundary && (!sized || (info && !info.isDir && info.size === offset))) return claim;
    const stored = sized ? info : await ifExists(this.driver.stat(dataPath));
    await this.release(name, id, claim, !stored || stored.isDir);
    if (!stored || stored.isDir) throw this.unknown(id);
    // No write ended where storage ends: one is in progress, or its writer died (a killed replica) and the
    // session can never continue; nobody here can tell which, so the client is told both ways out.
    if (stored.size === offset && !boundary) throw await this.busyError(name, id, UNFINISHED_WRITE);
    throw await this.busyError(name, id);
  }

  /** Mark `offset` as where a write ended, so that the next write may start there. */
  private async markEnd(name: string, id: string, offset: number, claim: Claim): Promise<void> {
    if (!claim.exclusive) return;
    await this.driver.putContentIfAbsent(layout.uploadEndPath(name, id, offset), claim.token);
  }

  /**
   * Remove a claim under which nothing was written, and its folder if that is left empty (where the driver has
   * folders). When the session is gone (completed or cancelled elsewhere meanwhile), the session folder the claim
   * created again goes too.
   */
  private async release(name: string, id: string, claim: Claim, sessionGone = false): Promise<void> {
    if (!claim.exclusive) return;
    await ifExists(this.driver.delete(claim.path));
    if (this.driver.removeEmptyDirectory && (await this.driver.removeEmptyDirectory(layout.uploadClaimsDir(name, id)))) {
      if (sessionGone) await this.driver.removeEmptyDirectory(layout.uploadDir(name, id));
    }
  }

  /** Run `fn` while holding the session; a concurrent request for the same session is refused with 416. */
  private async exclusive<T>(name: string, id: string, fn: (offset: number) => Promise<T>): Promise<T> {
    const key = this.key(name, id);
    if (this.busy.has(key)) throw await this.busyError(name, id);
    this.busy.add(key);
    try {
      // The offset is read once the session is ours, so no request of this process can move it meanwhile.
      const { offset } = await this.status(name, id);
      return await fn(offset);
    } finally {
      this.busy.delete(key);
    }
  }

  /**
   * Append a request body to the session (PATCH). With a range, the chunk must start where the stored bytes end
   * (else 416 with the current Range) and carry exactly `end - start + 1` bytes.
   */
  append(name: string, id: string, body: AsyncIterable<Uint8Array>, options: AppendOptions = {}): Promise<UploadStatus> {
    return this.exclusive(name, id, async (offset) => {
      const expected = this.checkRange(id, offset, options);
      // Before any byte is stored: the session as it would be after this chunk must fit (its digest is not known).
      await this.hooks.quotas?.room(name, offset + (expected ?? 0));
      const claim = await this.claim(name, id, offset, false);
      const written = await this.write(name, id, claim, body, expected);
      return { id, offset: offset + written };
    });
  }

  private checkRange(id: string, offset: number, options: AppendOptions): number | undefined {
    const { range, length } = options;
    if (range) {
      if (range.start !== offset || range.end < range.start) {
        throw new RegistryError('BLOB_UPLOAD_INVALID', 'chunk out of order', {
          reason: { kind: 'upload-out-of-order', uuid: id, offset },
          detail: { uuid: id, expectedStart: offset, range: `${range.start}-${range.end}` },
        });
      }
      const expected = range.end - range.start + 1;
      if (length !== undefined && length !== expected) {
        throw new RegistryError('SIZE_INVALID', 'Content-Length does not match Content-Range', {
          detail: { contentLength: length, contentRange: `${range.start}-${range.end}` },
        });
      }
      return expected;
    }
    return length;
  }

  /**
   * Stream `body` to the end of the session's data under `claim`, hashing as it goes. Returns the bytes written.
   * The claim is kept and the end of the stored bytes marked when bytes were written (also by a write that fails:
   * the session resumes from there), else the claim is given back.
   */
  private async write(
    name: string,
    id: string,
    claim: Claim,
    body: AsyncIterable<Uint8Array>,
    expected: number | undefined,
    mark = true,
  ): Promise<number> {
    const offset = claim.offset;
    const key = this.key(name, id);
    let state = this.states.get(key);
    if (state && state.offset !== offset) {
      this.states.delete(key);
      state = undefined;
    }
    if (!state && offset === 0) {
      // A session started elsewhere (another replica): nothing to rebuild yet, so hash from here on.
      state = { algorithm: 'sha256', hash: newHash('sha256'), offset: 0 };
    }
    if (state) this.remember(key, state);
    // Opened after the claim was made, so the size it reads is the claim's check of the stored size (see claim()).
    let writer: FileWriter;
    try {
      writer = await this.driver.writer(layout.uploadDataPath(name, id), true);
    } catch (err) {
      this.states.delete(key);
      // Gone: completed or cancelled by another request since this one read the offset.
      const gone = err instanceof PathNotFoundError;
      await this.release(name, id, claim, gone).catch(() => {});
      throw gone ? this.unknown(id) : err;
    }
    if (writer.size !== offset) {
      // Only a writer that never claimed (or a stale one from before) can have moved the end since the offset was
      // read: a request that claimed it holds the claim this one would have had to make.
      this.states.delete(key);
      await writer.close().catch(() => {});
      await this.release(name, id, claim);
      throw await this.busyError(name, id);
    }
    if (expected !== undefined) writer.expect?.(expected);
    const window = new WriteWindow(writer);
    let written = 0;
    let handed = 0;
    writingRequests++;
    try {
      for await (const chunk of body) {
        if (chunk.byteLength === 0) continue;
        if (expected !== undefined && written + chunk.byteLength > expected) {
          throw new RegistryError('SIZE_INVALID', 'request body is longer than announced', {
            detail: { expected },
          });
        }
        // Hashed while earlier chunks are still being written; a failed write drops the hash below.
        if (state) {
          state.hash.update(chunk);
          state.offset += chunk.byteLength;
        }
        handed += chunk.byteLength;
        const wait = window.write(chunk);
        if (wait) await wait;
        written += chunk.byteLength;
      }
      await window.drain();
      if (expected !== undefined && written !== expected) {
        throw new RegistryError('SIZE_INVALID', 'request body is shorter than announced', {
          detail: { expected, received: written },
        });
      }
    } catch (err) {
      // The stored bytes and our hash may now disagree: drop the hash; completing then re-hashes the stored bytes.
      this.states.delete(key);
      await window.settle();
      await writer.close().catch(() => {}); // the request fails with `err` either way
      await this.endFailedWrite(name, id, claim, handed).catch(() => {});
      throw err;
    } finally {
      writingRequests--;
    }
    // Durable before the request is answered, as registry:2 does: the stored size is what a client resumes from,
    // and complete() moves these bytes into the blob store, where a crash must not leave a blob short of them.
    try {
      await writer.commit();
    } catch (err) {
      this.states.delete(key);
      await this.endFailedWrite(name, id, claim, written).catch(() => {});
      throw err;
    }
    if (written === 0) await this.release(name, id, claim);
    else if (mark) await this.markEnd(name, id, offset + written, claim);
    return written;
  }

  /**
   * After a write failed with its writer closed: where storage now ends is where the session resumes, so it is
   * marked as a boundary; when nothing landed, the claim is given back instead. When the boundary cannot be marked
   * either (the disk is full), the session could never continue (416 on every later write) and would only hold its
   * bytes, the very space others need, until upload purging: it is removed, and the client's next request learns
   * that the upload is unknown and starts a new one.
   */
  private async endFailedWrite(name: string, id: string, claim: Claim, handed: number): Promise<void> {
    const info = handed > 0 ? await ifExists(this.driver.stat(layout.uploadDataPath(name, id))) : undefined;
    if (!info || info.isDir || info.size <= claim.offset) return this.release(name, id, claim);
    try {
      await this.markEnd(name, id, info.size, claim);
    } catch (err) {
      await this.discard(name, id);
      throw err;
    }
  }

  /**
   * The running hash when it is provably the hash of the session's `size` stored bytes: it covers them all, and
   * (see the module comment) only this process's requests, each holding its claim, fed it and wrote them.
   */
  private trustedState(name: string, id: string, size: number, algorithm: DigestAlgorithm): HashState | undefined {
    if (this.claimsUnsupported) return undefined;
    const state = this.states.get(this.key(name, id));
    return state && state.algorithm === algorithm && state.offset === size ? state : undefined;
  }

  /**
   * Copy the session's first `size` stored bytes into a new private file while hashing them; returns its path and
   * digest. Whatever happens to the session's data meanwhile, the copy holds exactly the bytes that were hashed.
   */
  private async verifiedCopy(name: string, id: string, size: number, algorithm: DigestAlgorithm, final: Claim): Promise<{ path: string; digest: string }> {
    const path = layout.uploadVerifiedPath(name, id, final.token);
    const hash = newHash(algorithm);
    const writer = await this.driver.writer(path, false);
    writer.expect?.(size);
    const window = new WriteWindow(writer);
    let read = 0;
    writingRequests++;
    try {
      if (size > 0) {
        const stream = await this.driver.reader(layout.uploadDataPath(name, id), 0, size);
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          hash.update(chunk);
          read += chunk.byteLength;
          const wait = window.write(chunk);
          if (wait) await wait;
        }
      }
      await window.drain();
      if (read !== size) {
        throw new RegistryError('BLOB_UPLOAD_INVALID', 'upload data changed while it was read', { detail: { uuid: id } });
      }
      await writer.commit();
    } catch (err) {
      await window.settle();
      await writer.cancel().catch(() => {});
      throw err;
    } finally {
      writingRequests--;
    }
    return { path, digest: `${algorithm}:${hash.digest('hex')}` };
  }

  /**
   * Finish the session (PUT ?digest=): append the optional final chunk, verify the digest of everything stored,
   * move the bytes into the content store and link the blob into the repository. On a digest mismatch the session
   * is discarded and nothing becomes visible.
   */
  complete(
    name: string,
    id: string,
    digest: Digest,
    body?: AsyncIterable<Uint8Array>,
    options: AppendOptions = {},
  ): Promise<BlobDescriptor> {
    return this.exclusive(name, id, async (offset) => {
      let size = offset;
      let final: Claim | undefined;
      /** Where the final chunk ended, while that is not marked: no request can start a write there meanwhile. */
      let unmarked: number | undefined;
      if (body) {
        const expected = this.checkRange(id, offset, options);
        // The digest is named here: one a rule already counts costs nothing (a wrong one fails verification below).
        await this.hooks.quotas?.room(name, offset + (expected ?? 0), digest.value);
        const claim = await this.claim(name, id, offset, false);
        const written = await this.write(name, id, claim, body, expected, false);
        size += written;
        if (written > 0) {
          final = claim;
          unmarked = size;
        }
      }
      // Held to the end: nobody may append past `size` while these bytes are verified and committed.
      final ??= await this.claim(name, id, size);
      let discarded = false;
      try {
        const state = this.trustedState(name, id, size, digest.algorithm);
        let source = layout.uploadDataPath(name, id);
        let actual: string;
        if (state) {
          actual = `${digest.algorithm}:${state.hash.copy().digest('hex')}`;
        } else {
          this.states.delete(this.key(name, id));
          ({ path: source, digest: actual } = await this.verifiedCopy(name, id, size, digest.algorithm, final));
        }
        if (actual !== digest.value) {
          discarded = true;
          await this.discard(name, id);
          throw new RegistryError('DIGEST_INVALID', 'provided digest did not match uploaded content', {
            detail: { digest: digest.value, actual },
          });
        }
        await this.hooks.beforeBlobLinked?.(name, digest.value);
        let undoCharge: (() => Promise<void>) | undefined;
        try {
          undoCharge = await this.hooks.quotas?.charge(name, 'layer', digest.value, size);
        } catch (err) {
          // Refused: nothing is linked, and the session goes (its bytes would only hold the space).
          discarded = true;
          await this.discard(name, id);
          throw err;
        }
        const before = await this.blobs.cachedContent(digest);
        try {
          // Always moved, even over an existing file of that digest: its bytes are not known to be these.
          await this.driver.move(source, layout.blobDataPath(digest), { mayReplace: true });
          await this.blobs.contentReplaced(digest, before, size);
          await this.blobs.link(name, digest);
        } catch (err) {
          await undoCharge?.().catch(() => {});
          throw err;
        }
        discarded = true;
        // Its data is in the content store now: what is left are small files.
        await this.discard(name, id, false);
        return { digest: digest.value, size };
      } catch (err) {
        if (!discarded) {
          await ifExists(this.driver.delete(layout.uploadVerifiedPath(name, id, final.token), { mayBeLarge: true })).catch(() => {});
          // The session may be retried: from the end of the final chunk, which is marked now, or by giving back
          // the claim of the end, under which nothing was written.
          if (unmarked !== undefined) await this.markEnd(name, id, unmarked, final).catch(() => {});
          else await this.release(name, id, final).catch(() => {});
        }
        throw err;
      }
    });
  }

  /** Cancel the session (DELETE). BLOB_UPLOAD_UNKNOWN when there is none. */
  async cancel(name: string, id: string): Promise<void> {
    await this.status(name, id);
    await this.discard(name, id);
  }

  /** Remove the session; `holdsData` when its data may still be there (it may be large). */
  private async discard(name: string, id: string, holdsData = true): Promise<void> {
    this.states.delete(this.key(name, id));
    try {
      await this.driver.delete(layout.uploadDir(name, id), { mayBeLarge: holdsData });
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
  }
}
