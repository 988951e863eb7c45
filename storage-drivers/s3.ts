/**
 * The S3 driver: driver paths are object keys under a prefix (`rootdirectory`) in one bucket, laid out exactly as
 * registry:2's s3-aws driver lays them out, so a bucket written by one is served by the other.
 *
 * How the contract maps onto S3
 *   - Files are objects; directories exist only as key prefixes (`a/b/` exists when some key starts with it). The
 *     root always exists. Directory modification times are not known: they are the epoch.
 *   - putContent is one PutObject (atomic); putContentIfAbsent a conditional one (If-None-Match: *), after a
 *     one-time probe that the service honours the header (else UnsupportedOperationError); move is a server-side
 *     copy then a delete: CopyObject up to
 *     `multipartCopyThresholdSize`, above it a multipart copy (UploadPartCopy in `multipartCopyChunkSize` ranges,
 *     `multipartCopyMaxConcurrency` at a time), which is also how objects over S3's 5 GiB CopyObject limit move.
 *   - list and walk use ListObjectsV2 with '/' as delimiter, one directory at a time, following continuation tokens
 *     (1000 keys a page), and sort the children in path order. `walk`'s startAfter becomes S3's StartAfter, so
 *     paging through a large directory never reads the keys before the page.
 *   - delete removes the object and everything under `path/` (DeleteObjects, 1000 keys a request), and aborts
 *     multipart uploads still open under it (abandoned uploads cost storage until aborted).
 *   - removeEmptyDirectory has nothing to do: a directory vanishes with the last key below it.
 *   - redirectURL presigns a GetObject (or HeadObject) URL valid for a short time (20 minutes, as registry:2).
 *
 * Writers (the part S3 makes hard)
 *   - Bytes are copied once, into a part buffer, up to the current part size, then sent from that buffer as one
 *     UploadPart of a multipart upload created on first need; one part may be in flight while the next fills, so
 *     memory per writer is at most two parts. Every part but the last is therefore at least `chunkSize` (>= 5 MiB,
 *     S3's minimum).
 *   - Part buffers come out of the driver's budget (`uploadBufferMemory`, see PartBudget): a writer reserves a whole
 *     buffer before it fills it, a part's worth, or what the caller announced with `expect` (a request's length);
 *     past the budget, writers wait for buffers to come back, so the memory of all uploads is bounded.
 *   - Part sizes grow with the part number (`partSize`), so S3's 10,000-part limit covers far more than 100 GiB.
 *   - close() and commit() both make the object complete and visible (CompleteMultipartUpload, or one PutObject
 *     when everything fits in the buffer): the registry commits its writer after every PATCH and reads the size and
 *     bytes of the upload back from storage, possibly on another replica.
 *   - writer(path, append=true) continues an object: an existing object under 5 MiB is read back into the buffer
 *     (small PATCH chunks are combined this way); a larger one becomes the first part(s) of a new multipart upload
 *     by UploadPartCopy, server-side. A multipart upload left open for the key by a writer that never closed (a
 *     crashed process) is completed first, so what it had flushed is kept, as a filesystem keeps written bytes.
 *   - writer(path, append=false) aborts multipart uploads left open for the key, so none can resurface later.
 *   - cancel() aborts the writer's multipart upload and deletes the object.
 *
 * Errors: NoSuchKey/404 is PathNotFoundError; everything else is a StorageDriverError naming the operation. The SDK
 * retries transient failures (503 SlowDown, 500, timeouts, connection resets) with exponential backoff and jitter,
 * `maxAttempts` times in all. No attempt can hang: connecting is bounded (10 s) and so is a connection standing
 * still (`stallTimeoutMs`), also under a response body being read, which then errors rather than waits.
 *
 * node:http and node:https appear here only for the SDK client's connection agents (keep-alive, socket limit, TLS
 * verification): the driver's own connection to S3. A reader is the SDK's response body itself, offering COPY_INTO
 * (see objectBody): the HTTP layer can have it write S3's chunks straight into a response, without stream hops.
 */
import type * as AwsS3 from '@aws-sdk/client-s3';
import type { CompletedPart, ServerSideEncryption, StorageClass } from '@aws-sdk/client-s3';
import type * as AwsPresigner from '@aws-sdk/s3-request-presigner';
import { createRequire } from 'node:module';
import pLimit from 'p-limit';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { Readable, finished, type Writable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import {
  InvalidOffsetError,
  PathNotFoundError,
  StorageDriverError,
  UnsupportedOperationError,
  comparePaths,
  isBelow,
  isValidPath,
  joinPath,
  COPY_INTO,
  firstComponent,
  type ContentWithInfo,
  type CopyInto,
  type FileInfo,
  type FileWriter,
  type RedirectOptions,
  type StorageDriver,
  type WalkOptions,
} from './driver.js';

/**
 * The AWS SDK, loaded by the first S3 driver rather than imported: it adds about 23 MB to a process's memory, which
 * a Wharf on the filesystem should not carry. (Its CommonJS build; `require` caches it.)
 */
const requireSdk = createRequire(import.meta.url);
let aws: typeof AwsS3;
const presigner = (): typeof AwsPresigner => requireSdk('@aws-sdk/s3-request-presigner') as typeof AwsPresigner;

const NAME = 's3';
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** S3's rules for multipart uploads. */
export const S3_LIMITS = {
  minPartSize: 5 * MiB,
  maxPartSize: 5 * GiB,
  maxParts: 10_000,
  /** The largest object CopyObject (and one UploadPartCopy) handles. */
  maxCopySize: 5 * GiB,
} as const;

/** registry:2's defaults for the s3 driver. */
export const S3_DEFAULTS = {
  chunkSize: 10 * MiB,
  multipartCopyChunkSize: 32 * MiB,
  multipartCopyMaxConcurrency: 100,
  multipartCopyThresholdSize: 32 * MiB,
  storageClass: 'STANDARD',
  redirectExpirySeconds: 20 * 60,
  maxAttempts: 5,
  stallTimeoutMs: 30_000,
  connectionTimeoutMs: 10_000,
  /**
   * The stall bound of requests during which S3 works and legitimately sends nothing: a copy (CopyObject,
   * UploadPartCopy) and a multipart completion. S3 documents that a completion can take minutes, and a gateway
   * copying many large parts at once answers each only when its part is done.
   */
  serverSideStallTimeoutMs: 5 * 60_000,
  /** The memory all writers of a driver may hold in part buffers at once (see PartBudget). */
  uploadBufferMemory: 32 * MiB,
} as const;

export interface S3DriverOptions {
  bucket: string;
  region: string;
  /** Endpoint of an S3-compatible service (MinIO, Ceph RGW, R2); with no scheme, `secure` chooses one. */
  regionEndpoint?: string;
  /** Path-style addressing (http://host/bucket/key) instead of virtual hosts; needed by most non-AWS services. */
  forcePathStyle?: boolean;
  /** Static credentials; when absent, the SDK's default chain (env, profile, web identity, instance role). */
  accessKey?: string;
  secretKey?: string;
  sessionToken?: string;
  /** Key prefix everything is stored under ('' or '/' is the bucket root). */
  rootDirectory?: string;
  /** Smallest part of a multipart upload (>= 5 MiB). */
  chunkSize?: number;
  multipartCopyChunkSize?: number;
  multipartCopyMaxConcurrency?: number;
  /** Objects larger than this are moved with a multipart copy. */
  multipartCopyThresholdSize?: number;
  /** https unless false (only used when regionEndpoint has no scheme, or for AWS itself). */
  secure?: boolean;
  /** Do not verify the TLS certificate of the endpoint. */
  skipVerify?: boolean;
  /** 'STANDARD' (default), 'REDUCED_REDUNDANCY', ..., or 'NONE' to send no storage class. */
  storageClass?: string;
  /** Server-side encryption: AES256, or aws:kms with `keyId`. */
  encrypt?: boolean;
  keyId?: string;
  /** Total attempts per request, retries included. */
  maxAttempts?: number;
  /**
   * How long one request may stand still (no byte sent or received on its connection) before it is abandoned
   * (and retried, as a timeout).
   */
  stallTimeoutMs?: number;
  /** Lifetime of presigned redirect URLs when the caller gives none. */
  redirectExpirySeconds?: number;
  /**
   * The most bytes the driver's writers hold in part buffers at once; a writer needing a buffer beyond it waits
   * (its request is not read meanwhile) until another gives one back.
   */
  uploadBufferMemory?: number;
}

/**
 * The size of part number `partNumber` (1-based) for an upload whose smallest part is `chunkSize`: doubles every
 * 1000 parts (capped at S3's 5 GiB), so 10,000 parts of a 10 MiB chunk size hold about 10 TiB.
 */
export function partSize(partNumber: number, chunkSize: number): number {
  const doublings = Math.floor((partNumber - 1) / 1000);
  return Math.min(chunkSize * 2 ** doublings, S3_LIMITS.maxPartSize);
}

/** The most bytes a writer can hold with `chunkSize` (the sum of the 10,000 part sizes). */
export function maxUploadSize(chunkSize: number): number {
  let total = 0;
  for (let n = 1; n <= S3_LIMITS.maxParts; n++) total += partSize(n, chunkSize);
  return total;
}

/**
 * Split `size` bytes into copy ranges for UploadPartCopy: all of one size (services such as R2 require that of
 * every part but the last), at most `chunk` (and 5 GiB) where that is possible while keeping every range but the
 * last at least 5 MiB (S3's minimum). Sizes of 5 MiB or less give one range.
 */
export function copyRanges(size: number, chunk: number): Array<{ start: number; end: number }> {
  const byChunk = Math.ceil(size / Math.min(chunk, S3_LIMITS.maxCopySize));
  const byMinimum = Math.max(1, Math.floor(size / S3_LIMITS.minPartSize));
  const count = Math.max(1, Math.min(byChunk, byMinimum));
  const length = Math.ceil(size / count);
  const ranges: Array<{ start: number; end: number }> = [];
  for (let at = 0; at < size; at += length) ranges.push({ start: at, end: Math.min(at + length, size) - 1 });
  return ranges;
}

interface S3Error {
  name?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

function errorCode(err: unknown): string {
  const e = err as S3Error;
  return e?.Code ?? e?.name ?? '';
}

function httpStatus(err: unknown): number | undefined {
  return (err as S3Error)?.$metadata?.httpStatusCode;
}

/** 404 for a key (not for a missing bucket or upload). */
function isNoSuchKey(err: unknown): boolean {
  const code = errorCode(err);
  if (code === 'NoSuchKey' || code === 'NotFound') return true;
  return httpStatus(err) === 404 && code !== 'NoSuchBucket' && code !== 'NoSuchUpload';
}

/** Explain an error from a bucket-level request in the words an operator needs. */
export function describeS3Error(err: unknown, bucket: string): string {
  const code = errorCode(err);
  const status = httpStatus(err);
  const raw = (err as Error)?.message ?? String(err);
  switch (code) {
    case 'NoSuchBucket':
      return `bucket "${bucket}" does not exist (create it, or fix storage.s3.bucket)`;
    case 'InvalidAccessKeyId':
      return 'the access key is not known to the S3 service (check storage.s3.accesskey or the credentials in the environment)';
    case 'SignatureDoesNotMatch':
      return 'the S3 service rejected the request signature: the secret key is wrong (check storage.s3.secretkey)';
    case 'AccessDenied':
    case 'Forbidden':
      return `access to bucket "${bucket}" was denied (check the credentials and the IAM policy: see docs/storage-s3.md)`;
    case 'CredentialsProviderError':
      return `no S3 credentials: set storage.s3.accesskey and secretkey, or provide them through the AWS default credential chain (${raw})`;
  }
  if (status === 404) return `bucket "${bucket}" does not exist (create it, or fix storage.s3.bucket)`;
  if (status === 403) return `access to bucket "${bucket}" was denied (${code || raw})`;
  return `${code ? `${code}: ` : ''}${raw}`;
}

interface Child {
  name: string;
  isDir: boolean;
  size: number;
  modTime: Date;
}

const EPOCH = new Date(0);
const COMPONENT = /^[A-Za-z0-9._-]+$/;

/** Conditional puts answered 409 (a concurrent conditional write of the key) are tried this many times in all. */
const CONDITIONAL_CONFLICT_ATTEMPTS = 8;

/** Content given to putContent or putContentIfAbsent as one Buffer. */
function bytesOf(content: Uint8Array | string): Buffer {
  return typeof content === 'string' ? Buffer.from(content) : Buffer.from(content);
}

export class S3Driver implements StorageDriver {
  readonly name = NAME;
  readonly client: AwsS3.S3Client;
  /** The same client for copies and multipart completions, with a stall bound of minutes (see S3_DEFAULTS). */
  private readonly serverSideClient: AwsS3.S3Client;
  readonly bucket: string;
  /** Key prefix of the root, '' or ending in '/'. */
  private readonly prefix: string;
  readonly chunkSize: number;
  /** What the writers hold in part buffers, within `uploadBufferMemory`. */
  readonly partBudget: PartBudget;
  private readonly copyChunkSize: number;
  private readonly copyConcurrency: number;
  private readonly copyThreshold: number;
  private readonly storageClass: StorageClass | undefined;
  private readonly encryption: { ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string };
  private readonly redirectExpiry: number;
  private readonly maxAttempts: number;

  constructor(options: S3DriverOptions) {
    this.bucket = options.bucket;
    const root = (options.rootDirectory ?? '').replace(/^\/+|\/+$/g, '');
    this.prefix = root === '' ? '' : `${root}/`;
    this.chunkSize = Math.max(options.chunkSize ?? S3_DEFAULTS.chunkSize, S3_LIMITS.minPartSize);
    this.partBudget = new PartBudget(Math.max(1, options.uploadBufferMemory ?? S3_DEFAULTS.uploadBufferMemory));
    this.copyChunkSize = Math.min(
      Math.max(options.multipartCopyChunkSize ?? S3_DEFAULTS.multipartCopyChunkSize, S3_LIMITS.minPartSize),
      S3_LIMITS.maxCopySize,
    );
    this.copyConcurrency = Math.max(1, options.multipartCopyMaxConcurrency ?? S3_DEFAULTS.multipartCopyMaxConcurrency);
    this.copyThreshold = Math.min(
      Math.max(options.multipartCopyThresholdSize ?? S3_DEFAULTS.multipartCopyThresholdSize, 0),
      S3_LIMITS.maxCopySize,
    );
    const storageClass = options.storageClass ?? S3_DEFAULTS.storageClass;
    this.storageClass = storageClass.toUpperCase() === 'NONE' ? undefined : (storageClass as StorageClass);
    this.encryption = !options.encrypt
      ? {}
      : options.keyId
        ? { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: options.keyId }
        : { ServerSideEncryption: 'AES256' };
    this.redirectExpiry = options.redirectExpirySeconds ?? S3_DEFAULTS.redirectExpirySeconds;
    this.maxAttempts = Math.max(1, options.maxAttempts ?? S3_DEFAULTS.maxAttempts);

    let endpoint = options.regionEndpoint;
    if (endpoint && !/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint)) endpoint = `${options.secure === false ? 'http' : 'https'}://${endpoint}`;
    const maxSockets = Math.max(50, this.copyConcurrency);
    aws ??= requireSdk('@aws-sdk/client-s3') as typeof AwsS3;
    const stall = options.stallTimeoutMs ?? S3_DEFAULTS.stallTimeoutMs;
    const clientFor = (socketTimeout: number) => new aws.S3Client({
      region: options.region,
      endpoint,
      forcePathStyle: options.forcePathStyle ?? false,
      tls: options.secure !== false,
      credentials:
        options.accessKey && options.secretKey
          ? { accessKeyId: options.accessKey, secretAccessKey: options.secretKey, sessionToken: options.sessionToken }
          : undefined,
      maxAttempts: this.maxAttempts,
      // Checksums only where S3 requires them: streamed aws-chunked bodies are not understood by every
      // S3-compatible service (Ceph RGW answers 411), and AWS accepts this setting.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // The SDK builds a command's chain of middleware anew for every request unless told to keep it per command
      // class: a seventh of the memory a push to S3 allocated (16 requests a push), and 2.5-7% of the server's CPU
      // over 20 concurrent pushes. Nothing here adds middleware to a client or command after its first request.
      cacheMiddleware: true,
      // The SDK's standard retry mode: `maxAttempts` attempts, backoff with full jitter (a random wait up to
      // 100 ms × 2^retry, 500 ms × 2^retry for throttling such as SlowDown), and a per-client retry budget (500
      // tokens, 5 a retry, 10 after a timeout, given back on success) so a long outage stops retrying rather than
      // multiplying the load on S3. Every attempt is bounded by the timeouts below, so a request to S3 ends in
      // bounded time: at most maxAttempts × (connection or stall timeout) plus the backoff.
      requestHandler: {
        connectionTimeout: S3_DEFAULTS.connectionTimeoutMs,
        // Inactivity on the connection, not the whole request: large bodies may take long but must keep moving.
        // (The handler's `requestTimeout` only warns unless told to throw, and would bound a whole part upload.)
        // It stays on a response body the caller reads, so a body that stops in the middle errors too.
        socketTimeout,
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets, noDelay: true }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets, noDelay: true, rejectUnauthorized: !options.skipVerify }),
      },
    });
    this.client = clientFor(stall);
    this.serverSideClient = clientFor(Math.max(stall, S3_DEFAULTS.serverSideStallTimeoutMs));
  }

  /** The object key of a driver path (the root maps to the prefix itself). */
  key(path: string): string {
    return path === '/' ? this.prefix : this.prefix + path.slice(1);
  }

  /** The key prefix of a directory's children. */
  private dirPrefix(path: string): string {
    return path === '/' ? this.prefix : `${this.key(path)}/`;
  }

  private fail(operation: string, path: string, err: unknown): never {
    if (err instanceof PathNotFoundError || err instanceof InvalidOffsetError || err instanceof StorageDriverError) throw err;
    const code = errorCode(err);
    const raw = (err as Error)?.message ?? String(err);
    throw new StorageDriverError(NAME, `${operation} ${path}: ${code && !raw.startsWith(code) ? `${code}: ` : ''}${raw}`, err);
  }

  private putExtras(): { StorageClass?: StorageClass; ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string } {
    return this.storageClass ? { StorageClass: this.storageClass, ...this.encryption } : { ...this.encryption };
  }

  /**
   * Startup check: the bucket exists and the credentials may list it, else a StorageDriverError whose message says
   * what is wrong (missing bucket, unknown key, wrong secret, access denied). Returns warnings about what works, but
   * worse: a service that ignores conditional writes leaves uploads correct but slower (every completion re-hashes
   * a copy).
   */
  async verify(): Promise<string[]> {
    try {
      await this.client.send(new aws.ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 }));
    } catch (err) {
      throw new StorageDriverError(NAME, describeS3Error(err, this.bucket), err);
    }
    if (await (this.conditionalPuts ??= this.probeConditionalPuts())) return [];
    return [
      'the S3 service ignores If-None-Match on PutObject: upload sessions cannot be claimed by one writer, so every ' +
        'completed upload is verified by copying and re-hashing its bytes (correct, but slower)',
    ];
  }

  // ---- reading -------------------------------------------------------------------------------------------------

  async getContent(path: string): Promise<Buffer> {
    return (await this.getContentWithInfo(path)).content;
  }

  /** One GetObject: its answer's Last-Modified is the info's modification time. */
  async getContentWithInfo(path: string): Promise<ContentWithInfo> {
    if (path === '/') throw new PathNotFoundError(path, NAME);
    try {
      const { body, modTime, etag } = await this.getWhole({ Bucket: this.bucket, Key: this.key(path) });
      return { content: body, info: { path, size: body.length, modTime, isDir: false, etag } };
    } catch (err) {
      if (isNoSuchKey(err)) throw new PathNotFoundError(path, NAME);
      this.fail('getContent', path, err);
    }
  }

  /**
   * A GetObject read whole. The SDK retries a request that fails before its answer's headers; a body that breaks
   * off after them (a reset, a cut-short answer, a stall) is the caller's to retry, and for a read this small it is
   * done here the same way: `maxAttempts` in all, with backoff and jitter between them.
   */
  private async getWhole(input: { Bucket: string; Key: string; Range?: string }): Promise<{ body: Buffer; modTime: Date; etag: string | undefined }> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.client.send(new aws.GetObjectCommand(input));
      try {
        const chunks: Buffer[] = [];
        for await (const chunk of res.Body as Readable) chunks.push(chunk as Buffer);
        const body = Buffer.concat(chunks);
        if (res.ContentLength !== undefined && body.length !== res.ContentLength) {
          throw new StorageDriverError(NAME, `read ${input.Key}: ${body.length} of ${res.ContentLength} bytes arrived`);
        }
        return { body, modTime: res.LastModified ?? EPOCH, etag: res.ETag };
      } catch (err) {
        if (attempt >= this.maxAttempts) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * 100 * 2 ** attempt));
      }
    }
  }

  private async head(path: string): Promise<{ size: number; modTime: Date; etag: string } | undefined> {
    if (path === '/') return undefined;
    try {
      const res = await this.client.send(new aws.HeadObjectCommand({ Bucket: this.bucket, Key: this.key(path) }));
      return { size: res.ContentLength ?? 0, modTime: res.LastModified ?? new Date(), etag: res.ETag ?? '' };
    } catch (err) {
      if (isNoSuchKey(err)) return undefined;
      this.fail('stat', path, err);
    }
  }

  async reader(path: string, offset = 0, length?: number): Promise<Readable> {
    if (path === '/') throw new PathNotFoundError(path, NAME);
    if (length === 0 || offset > 0) {
      // S3 answers 416 for a range starting at the end, which the contract makes an empty stream: check the size.
      const info = await this.head(path);
      if (!info) throw new PathNotFoundError(path, NAME);
      if (offset > info.size) throw new InvalidOffsetError(path, offset);
      if (offset === info.size || length === 0) return Readable.from([]);
    }
    const range = length !== undefined ? `bytes=${offset}-${offset + length - 1}` : offset > 0 ? `bytes=${offset}-` : undefined;
    try {
      const res = await this.client.send(new aws.GetObjectCommand({ Bucket: this.bucket, Key: this.key(path), Range: range }));
      return objectBody(res.Body as Readable);
    } catch (err) {
      if (isNoSuchKey(err)) throw new PathNotFoundError(path, NAME);
      if (httpStatus(err) === 416) {
        // A range on an empty object, or the object shrank since the size check: decide by its size now.
        const info = await this.head(path);
        if (!info) throw new PathNotFoundError(path, NAME);
        if (offset === info.size) return Readable.from([]);
        throw new InvalidOffsetError(path, offset);
      }
      this.fail('reader', path, err);
    }
  }

  async stat(path: string): Promise<FileInfo> {
    if (path === '/') {
      // The root always exists, but S3 is asked all the same: this is the health check's probe (registry:2's too),
      // which must fail while S3 does.
      try {
        await this.client.send(new aws.ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, MaxKeys: 1 }));
      } catch (err) {
        this.fail('stat', path, err);
      }
      return { path, size: 0, modTime: EPOCH, isDir: true };
    }
    const info = await this.head(path);
    if (info) return { path, size: info.size, modTime: info.modTime, isDir: false, etag: info.etag || undefined };
    try {
      const res = await this.client.send(
        new aws.ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.dirPrefix(path), MaxKeys: 1 }),
      );
      if ((res.KeyCount ?? res.Contents?.length ?? 0) > 0) return { path, size: 0, modTime: EPOCH, isDir: true };
    } catch (err) {
      this.fail('stat', path, err);
    }
    throw new PathNotFoundError(path, NAME);
  }

  /**
   * The children of directory `path` in name order, paging through ListObjectsV2. With `after`, only children
   * whose name sorts after it (or equals it, when a directory) are asked for.
   */
  private async children(path: string, after?: string): Promise<Child[]> {
    const prefix = this.dirPrefix(path);
    const byName = new Map<string, Child>();
    let token: string | undefined;
    try {
      do {
        const res = await this.client.send(
          new aws.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            Delimiter: '/',
            ContinuationToken: token,
            StartAfter: token === undefined && after !== undefined ? prefix + after : undefined,
          }),
        );
        for (const p of res.CommonPrefixes ?? []) {
          const name = p.Prefix!.slice(prefix.length, -1);
          if (COMPONENT.test(name)) byName.set(name, { name, isDir: true, size: 0, modTime: EPOCH });
        }
        for (const o of res.Contents ?? []) {
          const name = o.Key!.slice(prefix.length);
          // Keys that are not driver paths (directory markers "a/", names other tools wrote) are not listed.
          if (!COMPONENT.test(name) || byName.get(name)?.isDir) continue;
          byName.set(name, { name, isDir: false, size: o.Size ?? 0, modTime: o.LastModified ?? EPOCH });
        }
        token = res.IsTruncated ? res.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      this.fail('list', path, err);
    }
    return [...byName.values()].filter((c) => isValidPath(joinPath(path, c.name))).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async list(path: string): Promise<string[]> {
    const children = await this.children(path);
    if (children.length === 0 && path !== '/') throw new PathNotFoundError(path, NAME);
    return children.map((c) => joinPath(path, c.name));
  }

  async *walk(path: string, options: WalkOptions = {}): AsyncIterable<FileInfo> {
    const startAfter = options.startAfter;
    // Only a directory can be walked (the root always can, even empty).
    const first = await this.children(path, startAfter !== undefined && isBelow(startAfter, path) ? firstComponent(startAfter, path) : undefined);
    if (first.length === 0 && path !== '/') {
      // Empty because startAfter skipped everything, or because nothing is there?
      if (startAfter === undefined || !isBelow(startAfter, path) || (await this.children(path)).length === 0) {
        throw new PathNotFoundError(path, NAME);
      }
      return;
    }
    yield* this.walkChildren(path, first, options);
  }

  private async *walkChildren(dir: string, children: Child[], options: WalkOptions): AsyncIterable<FileInfo> {
    const { startAfter, descend } = options;
    for (const child of children) {
      const path = joinPath(dir, child.name);
      const after = startAfter === undefined || comparePaths(path, startAfter) > 0;
      // A directory that is startAfter itself, or holds it, has entries after it.
      const startInside = !after && child.isDir && startAfter !== undefined && isBelow(startAfter, path);
      const containsStart = startInside || (!after && child.isDir && startAfter === path);
      if (!after && !containsStart) continue;
      const info: FileInfo = { path, size: child.size, modTime: child.modTime, isDir: child.isDir };
      if (after) yield info;
      if (!child.isDir) continue;
      if (descend && !descend(info)) continue;
      const below = await this.children(path, startInside ? firstComponent(startAfter!, path) : undefined);
      yield* this.walkChildren(path, below, options);
    }
  }

  async redirectURL(path: string, options: RedirectOptions): Promise<string | null> {
    if (path === '/') throw new PathNotFoundError(path, NAME);
    const input = { Bucket: this.bucket, Key: this.key(path) };
    const command = options.method === 'HEAD' ? new aws.HeadObjectCommand(input) : new aws.GetObjectCommand(input);
    try {
      return await presigner().getSignedUrl(this.client, command, { expiresIn: options.expiresIn ?? this.redirectExpiry });
    } catch (err) {
      this.fail('redirectURL', path, err);
    }
  }

  // ---- writing -------------------------------------------------------------------------------------------------

  async putContent(path: string, content: Uint8Array | string): Promise<void> {
    if (path === '/') throw new StorageDriverError(NAME, 'putContent /: the root is a directory');
    try {
      await this.putObject(this.key(path), bytesOf(content));
    } catch (err) {
      this.fail('putContent', path, err);
    }
  }

  /**
   * A conditional PutObject (`If-None-Match: *`): S3 (since 2024) and Ceph RGW refuse it with 412 when the key
   * exists, and decide between concurrent ones so that exactly one succeeds. A 409 ConditionalRequestConflict (a
   * concurrent conditional write still in progress) also means another creator.
   */
  async putContentIfAbsent(path: string, content: Uint8Array | string): Promise<boolean> {
    if (path === '/') return false;
    if (!(await (this.conditionalPuts ??= this.probeConditionalPuts()))) {
      throw new UnsupportedOperationError(NAME, 'putContentIfAbsent', 'the S3 service ignores If-None-Match on PutObject');
    }
    try {
      return await this.putObject(this.key(path), bytesOf(content), true);
    } catch (err) {
      this.fail('putContentIfAbsent', path, err);
    }
  }

  /** Whether the service honours If-None-Match, probed once per driver. */
  private conditionalPuts: Promise<boolean> | undefined;

  /**
   * A service that does not know the header ignores it and overwrites, which would let two creators both win: so
   * before the first conditional put, one object is created twice under a key of its own; only when the second
   * create is refused are conditional puts used. (A failed probe is retried by the next call.)
   */
  private async probeConditionalPuts(): Promise<boolean> {
    const key = `${this.prefix}_wharf/conditional-put-probe/${randomUUID()}`;
    try {
      if (!(await this.putObject(key, Buffer.from('probe'), true))) return false;
      return !(await this.putObject(key, Buffer.from('probe'), true));
    } catch (err) {
      this.conditionalPuts = undefined;
      this.fail('putContentIfAbsent (probing conditional writes)', '/', err);
    } finally {
      await this.deleteObject(key).catch(() => {});
    }
  }

  async writer(path: string, append: boolean): Promise<FileWriter> {
    if (path === '/') throw new StorageDriverError(NAME, 'writer /: the root is a directory');
    const key = this.key(path);
    const open = await this.openUploads(key, path);
    if (!append) {
      await Promise.all(open.map((u) => this.abortUpload(key, u.UploadId!)));
      return new S3Writer(this, path, key, { size: 0, existing: false });
    }
    // A multipart upload left open by a writer that never closed: keep what it flushed, as a file would.
    const newest = open.sort((a, b) => (a.Initiated?.getTime() ?? 0) - (b.Initiated?.getTime() ?? 0)).pop();
    await Promise.all(open.map((u) => this.abortUpload(key, u.UploadId!)));
    if (newest) await this.completeLeftover(key, path, newest.UploadId!);
    const info = await this.head(path);
    if (!info) throw new PathNotFoundError(path, NAME);
    return new S3Writer(this, path, key, { size: info.size, existing: true });
  }

  /** Multipart uploads open for exactly `key`. */
  private async openUploads(key: string, path: string) {
    const uploads: Array<{ UploadId?: string; Initiated?: Date; Key?: string }> = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    try {
      for (;;) {
        const res = await this.client.send(
          new aws.ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: key, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
        for (const u of res.Uploads ?? []) if (u.Key === key) uploads.push(u);
        if (!res.IsTruncated) break;
        keyMarker = res.NextKeyMarker;
        uploadIdMarker = res.NextUploadIdMarker;
      }
    } catch (err) {
      this.fail('writer', path, err);
    }
    return uploads;
  }

  /** Abort a multipart upload; one already gone is fine. */
  async abortUpload(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new aws.AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
    } catch (err) {
      if (httpStatus(err) === 404) return; // NoSuchUpload (RGW may say NoSuchKey)
      throw err;
    }
  }

  private async completeLeftover(key: string, path: string, uploadId: string): Promise<void> {
    const parts: CompletedPart[] = [];
    try {
      let marker: string | undefined;
      for (;;) {
        const res = await this.client.send(
          new aws.ListPartsCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }),
        );
        for (const p of res.Parts ?? []) parts.push({ PartNumber: p.PartNumber, ETag: p.ETag });
        if (!res.IsTruncated) break;
        marker = res.NextPartNumberMarker;
      }
      if (parts.length === 0) {
        await this.abortUpload(key, uploadId);
        return;
      }
      await this.serverSideClient.send(
        new aws.CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
      );
    } catch (err) {
      if (httpStatus(err) === 404) return; // finished or aborted meanwhile by someone else
      this.fail('writer', path, err);
    }
  }

  async move(sourcePath: string, destPath: string): Promise<void> {
    const info = await this.head(sourcePath);
    if (!info) throw new PathNotFoundError(sourcePath, NAME);
    if (sourcePath === destPath) return;
    const source = this.key(sourcePath);
    const dest = this.key(destPath);
    try {
      if (info.size <= this.copyThreshold) {
        await this.serverSideClient.send(
          new aws.CopyObjectCommand({ Bucket: this.bucket, Key: dest, CopySource: this.copySource(source), ...this.putExtras() }),
        );
      } else {
        await this.multipartCopy(source, dest, info.size);
      }
    } catch (err) {
      if (isNoSuchKey(err)) throw new PathNotFoundError(sourcePath, NAME);
      this.fail('move', `${sourcePath} -> ${destPath}`, err);
    }
    try {
      await this.client.send(new aws.DeleteObjectCommand({ Bucket: this.bucket, Key: source }));
    } catch (err) {
      this.fail('move (deleting the source)', sourcePath, err);
    }
  }

  /** One ListObjectsV2 without a delimiter per 1,000 keys below `path`; keys that are not driver paths are skipped. */
  async *listFiles(path: string): AsyncIterable<FileInfo> {
    const prefix = this.dirPrefix(path);
    try {
      for await (const page of this.objectsBelow(prefix)) {
        for (const o of page) {
          const rel = o.Key!.slice(prefix.length);
          if (!rel.split('/').every((c) => COMPONENT.test(c))) continue;
          const file = joinPath(path, rel);
          if (isValidPath(file)) yield { path: file, size: o.Size ?? 0, modTime: o.LastModified ?? EPOCH, isDir: false, etag: o.ETag };
        }
      }
    } catch (err) {
      this.fail('list', path, err);
    }
  }

  /** DeleteObjects, 1,000 keys a request (S3 reports an absent key as deleted). */
  async deleteFiles(paths: string[]): Promise<void> {
    for (let i = 0; i < paths.length; i += 1000) {
      const page = paths.slice(i, i + 1000);
      try {
        await this.deleteKeys(page.map((p) => this.key(p)), `${page[0]}…`);
      } catch (err) {
        this.fail('delete', page[0]!, err);
      }
    }
  }

  /** Every object whose key starts with `prefix`, a ListObjectsV2 page (at most 1,000 keys) at a time. */
  private async *objectsBelow(prefix: string): AsyncIterable<AwsS3._Object[]> {
    let token: string | undefined;
    do {
      const res = await this.client.send(new aws.ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      yield res.Contents ?? [];
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
  }

  /** One DeleteObjects of up to 1,000 keys; an error for any key but an absent one fails it, naming `what`. */
  private async deleteKeys(keys: string[], what: string): Promise<void> {
    const out = await this.client.send(new aws.DeleteObjectsCommand({
      Bucket: this.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true },
    }));
    const errors = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
    if (errors.length > 0) throw new StorageDriverError(NAME, `delete ${what}: ${errors[0]!.Code}: ${errors[0]!.Message} (${errors[0]!.Key})`);
  }

  /** A directory exists only while keys lie below it, so there is never an empty one to remove. */
  async removeEmptyDirectory(): Promise<boolean> {
    return false;
  }

  copySource(key: string): string {
    return `${this.bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** Copy `size` bytes of `source` to `dest` with UploadPartCopy, `multipartCopyMaxConcurrency` parts at a time. */
  private async multipartCopy(source: string, dest: string, size: number): Promise<void> {
    const created = await this.client.send(
      new aws.CreateMultipartUploadCommand({ Bucket: this.bucket, Key: dest, ...this.putExtras() }),
    );
    const uploadId = created.UploadId!;
    try {
      const ranges = copyRanges(size, this.copyChunkSize);
      const parts: CompletedPart[] = new Array(ranges.length);
      const limit = pLimit(this.copyConcurrency);
      let failure: unknown;
      const copyPart = async (range: { start: number; end: number }, i: number) => {
        // After the first failure the parts not yet started are skipped; those running finish before the abort.
        if (failure !== undefined) return;
        const res = await this.serverSideClient.send(
          new aws.UploadPartCopyCommand({
            Bucket: this.bucket,
            Key: dest,
            UploadId: uploadId,
            PartNumber: i + 1,
            CopySource: this.copySource(source),
            CopySourceRange: `bytes=${range.start}-${range.end}`,
          }),
        );
        parts[i] = { PartNumber: i + 1, ETag: res.CopyPartResult?.ETag };
      };
      await Promise.all(ranges.map((range, i) => limit(() => copyPart(range, i).catch((err: unknown) => {
        failure ??= err;
      }))));
      if (failure !== undefined) throw failure;
      await this.serverSideClient.send(
        new aws.CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: dest, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
      );
    } catch (err) {
      await this.abortUpload(dest, uploadId).catch(() => {});
      throw err;
    }
  }

  async delete(path: string): Promise<void> {
    const key = path === '/' ? undefined : this.key(path);
    const below = this.dirPrefix(path);
    let deleted = 0;
    try {
      if (key !== undefined && (await this.head(path))) {
        await this.client.send(new aws.DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
        deleted++;
      }
      // Everything below, a page (at most 1000 keys) at a time.
      for await (const page of this.objectsBelow(below)) {
        if (page.length === 0) continue;
        await this.deleteKeys(page.map((o) => o.Key!), path);
        deleted += page.length;
      }
      // Multipart uploads still open under the path (abandoned writers) hold storage until aborted.
      await this.abortUploadsUnder(key, below);
    } catch (err) {
      this.fail('delete', path, err);
    }
    if (deleted === 0 && path !== '/') throw new PathNotFoundError(path, NAME);
  }

  private async abortUploadsUnder(key: string | undefined, below: string): Promise<void> {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const res = await this.client.send(
        new aws.ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: key ?? below, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
      );
      const mine = (res.Uploads ?? []).filter((u) => u.Key === key || u.Key!.startsWith(below));
      await Promise.all(mine.map((u) => this.abortUpload(u.Key!, u.UploadId!)));
      if (!res.IsTruncated) return;
      keyMarker = res.NextKeyMarker;
      uploadIdMarker = res.NextUploadIdMarker;
    }
  }

  // ---- used by S3Writer ------------------------------------------------------------------------------------------

  /** @internal */
  async createUpload(key: string): Promise<string> {
    const res = await this.client.send(new aws.CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ...this.putExtras() }));
    return res.UploadId!;
  }

  /** @internal */
  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<CompletedPart> {
    const res = await this.client.send(
      new aws.UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length }),
    );
    return { PartNumber: partNumber, ETag: res.ETag };
  }

  /** @internal Copy bytes `range` of the object at `key` itself as part `partNumber` of an upload to the same key. */
  async uploadPartCopy(key: string, uploadId: string, partNumber: number, range: { start: number; end: number }): Promise<CompletedPart> {
    const res = await this.serverSideClient.send(
      new aws.UploadPartCopyCommand({
        Bucket: this.bucket,
        Key: key,
        UploadId: uploadId,
        PartNumber: partNumber,
        CopySource: this.copySource(key),
        CopySourceRange: `bytes=${range.start}-${range.end}`,
      }),
    );
    return { PartNumber: partNumber, ETag: res.CopyPartResult?.ETag };
  }

  /** @internal */
  async completeUpload(key: string, uploadId: string, parts: CompletedPart[]): Promise<void> {
    await this.serverSideClient.send(
      new aws.CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
    );
  }

  /**
   * @internal One PutObject. With `ifAbsent`, a conditional one (`If-None-Match: *`): false when the key exists
   * (412), or another conditional write of it is in progress (409).
   */
  async putObject(key: string, body: Buffer, ifAbsent = false): Promise<boolean> {
    // A conditional put answered 409 (ConditionalRequestConflict: another conditional write of the key is in
    // progress) did not happen and did not find the object: it is asked again, as S3 says, until one of the two
    // writes is decided (then 412: the other one won). Only 412 means the object exists.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.client.send(new aws.PutObjectCommand({
          Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length, ...(ifAbsent ? { IfNoneMatch: '*' } : {}), ...this.putExtras(),
        }));
        return true;
      } catch (err) {
        const status = httpStatus(err);
        if (ifAbsent && status === 412) return false;
        if (!ifAbsent || status !== 409 || attempt >= CONDITIONAL_CONFLICT_ATTEMPTS) throw err;
        await new Promise((resolve) => setTimeout(resolve, 20 * attempt + Math.random() * 50));
      }
    }
  }

  /** @internal */
  async getRange(key: string, size: number): Promise<Buffer> {
    if (size === 0) return Buffer.alloc(0);
    return (await this.getWhole({ Bucket: this.bucket, Key: key, Range: `bytes=0-${size - 1}` })).body;
  }

  /** @internal */
  async deleteObject(key: string): Promise<void> {
    await this.client.send(new aws.DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  /** Release the client's sockets. */
  destroy(): void {
    this.client.destroy();
    this.serverSideClient.destroy();
  }
}

/**
 * A GetObject body as a reader: the SDK's response stream itself (an IncomingMessage, with the client's stall
 * timeout still on its socket), offering COPY_INTO so that the HTTP layer can send it without stream hops.
 *
 * The copy writes each chunk from S3 straight into `dest` (pausing the body while `dest` asks to wait), and corks
 * `dest` from the first chunk of a turn of the event loop to the end of it: the chunks one socket read brought in
 * (libuv reads a socket up to 32 times per turn) leave in one writev instead of one write each. A body that breaks
 * off (reset, cut short: Node's client errors when fewer bytes than Content-Length arrive, or a stall) fails the
 * copy; a `dest` that closes (the client went away) stops it without an error. Either way the body is destroyed,
 * so its socket is not reused with bytes unread.
 */
function objectBody(body: Readable): Readable {
  const copyInto: CopyInto = (dest: Writable, done) => {
    if (dest.destroyed) {
      body.destroy();
      done();
      return;
    }
    let settled = false;
    let corked = false;
    const uncork = () => {
      if (!corked) return;
      corked = false;
      dest.uncork();
    };
    const onData = (chunk: Buffer) => {
      if (!corked) {
        corked = true;
        dest.cork();
        setImmediate(uncork);
      }
      if (!dest.write(chunk)) {
        uncork();
        body.pause();
      }
    };
    const onDrain = () => body.resume();
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      body.off('data', onData);
      dest.off('drain', onDrain);
      dest.off('close', onClose);
      stop();
      uncork();
      if (!body.readableEnded) body.destroy();
      done(err);
    };
    const onClose = () => settle();
    const stop = finished(body, { writable: false }, (err) => settle(err ?? undefined));
    dest.on('drain', onDrain);
    dest.once('close', onClose);
    body.on('data', onData);
    body.resume(); // a wrapper (the checked driver's) may have paused it
  };
  return Object.assign(body, { [COPY_INTO]: copyInto });
}

type WriterState = 'open' | 'committed' | 'closed' | 'cancelled' | 'failed';

/** How long part buffers kept for reuse stay once no writer holds any. */
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
 * The memory S3 writers of one driver may hold in part buffers at once (`storage.s3.uploadbuffermemory`), and the
 * writers waiting for some. A writer reserves a whole buffer before it fills it (the next part's size, or less when
 * it has been told how many bytes are coming: see `expect`), holds it while the part uploads, and gives it back when
 * S3 has the part (or the writer ends). Reservations are granted first come, first served; one larger than the
 * whole budget is granted when nothing else is held, so it never waits forever.
 *
 * A buffer given back is kept for the next reservation of its size rather than left to the garbage collector: a
 * dropped buffer stays allocated until a full collection finds it, and V8 starts one only after tens of megabytes
 * more have been allocated outside its heap, so dropping every part (20 pushes of 10 MB: 200 MB of parts) left the
 * process holding two to three times the budget. Buffers held and buffers kept together stay within the budget (kept
 * ones are dropped to make room for a buffer of another size), and the kept ones go once no writer has held a
 * buffer for PART_POOL_IDLE_MS.
 *
 * Why this cannot deadlock: only a writer holding no filling buffer waits (a writer whose buffer outgrows what it
 * was told grows it without waiting), and what the others hold comes back without any reservation: a part in
 * flight when S3 answers, a filling buffer when its request ends, and a request cannot stand still for longer than
 * `http.timeouts.stall` (while it waits here its socket is paused, which that timeout does not count).
 */
export class PartBudget {
  private used = 0;
  /** The most bytes held at once so far. */
  peak = 0;
  /** The most reservations waiting at once so far. */
  peakWaiting = 0;
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

/** A part buffer and the budget it holds: the bytes of one part, copied in once and sent from where they are. */
class PartBuffer {
  filled = 0;
  private released = false;

  private constructor(private readonly budget: PartBudget, readonly bytes: Buffer) {}

  static async reserve(budget: PartBudget, size: number): Promise<PartBuffer> {
    return new PartBuffer(budget, await budget.reserve(size));
  }

  get room(): number {
    return this.bytes.length - this.filled;
  }

  /** Copy bytes of `chunk` from `at`, up to `room` and until `upTo` bytes are filled; returns how many. */
  fill(chunk: Uint8Array, at: number, upTo = this.bytes.length): number {
    const n = Math.min(chunk.byteLength - at, this.room, upTo - this.filled);
    this.bytes.set(at === 0 && n === chunk.byteLength ? chunk : chunk.subarray(at, at + n), this.filled);
    this.filled += n;
    return n;
  }

  /** A buffer of at least `size` (larger) holding these bytes; this one is released. The growth does not wait. */
  grown(size: number): PartBuffer {
    const next = new PartBuffer(this.budget, this.budget.grow(size));
    this.bytes.copy(next.bytes, 0, 0, this.filled);
    next.filled = this.filled;
    this.release();
    return next;
  }

  get content(): Buffer {
    return this.bytes.subarray(0, this.filled);
  }

  /** Give the buffer back (to be reused): only once nothing sends from it any more. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.budget.release(this.bytes);
  }
}

/** The smallest part buffer reserved on a size hint. */
const MIN_HINTED_BUFFER = 64 * 1024;

/** See "Writers" in the module comment. */
class S3Writer implements FileWriter {
  private state: WriterState = 'open';
  private _size: number;
  /** Bytes of the object as it was when an append-mode writer opened, not yet part of this writer's output. */
  private existingSize: number;
  private existingLoaded = false;
  private readonly truncate: boolean;
  /** The part being filled (none before the first byte, and after a part is sent until the next byte). */
  private part: PartBuffer | undefined;
  /** Bytes the caller said are still to come (`expect`), counted down as they are written. */
  private expected: number | undefined;
  private uploadId: string | undefined;
  private parts: CompletedPart[] = [];
  /** The part upload in flight (at most one), so the next part can fill meanwhile. */
  private inFlight: Promise<void> | undefined;
  /** Writes run one after another in call order. */
  private queue: Promise<void> = Promise.resolve();
  private error: unknown;

  constructor(
    private readonly driver: S3Driver,
    private readonly path: string,
    private readonly key: string,
    from: { size: number; existing: boolean },
  ) {
    this._size = from.size;
    this.existingSize = from.size;
    this.truncate = !from.existing;
  }

  get size(): number {
    return this._size;
  }

  /** About `bytes` more are coming (a request's length): part buffers are reserved no larger than they need. */
  expect(bytes: number): void {
    if (Number.isSafeInteger(bytes) && bytes >= 0) this.expected = bytes;
  }

  private refuse(what: string): Promise<never> {
    return Promise.reject(new StorageDriverError(NAME, `${what} ${this.path}: the writer is ${this.state}`, this.error));
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'open') return this.refuse('write');
    if (chunk.byteLength === 0) return this.queue;
    this._size += chunk.byteLength;
    // Copied into the part buffer before the write resolves, after which the caller may reuse its chunk.
    return this.enqueue(async () => {
      await this.prepare();
      for (let at = 0; at < chunk.byteLength; ) {
        const target = partSize(this.parts.length + 1, this.driver.chunkSize);
        this.part ??= await this.reservePart(target, chunk.byteLength - at);
        if (this.part.room === 0) this.part = this.part.grown(Math.min(target, this.part.bytes.length * 2));
        // A buffer may be larger than the part (see partBufferSize): the part still ends at `target`.
        const n = this.part.fill(chunk, at, target);
        at += n;
        if (this.expected !== undefined) this.expected = Math.max(0, this.expected - n);
        if (this.part.filled >= target) await this.sendPart();
      }
    });
  }

  /** A buffer for the next part: the whole part, or what the caller said is coming (at least `now`). */
  private reservePart(target: number, now: number, carried = 0): Promise<PartBuffer> {
    const wanted = this.expected === undefined ? target : Math.max(carried + this.expected, carried + now, MIN_HINTED_BUFFER);
    return PartBuffer.reserve(this.driver.partBudget, Math.min(target, wanted));
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const run = this.queue.then(async () => {
      if (this.state === 'failed') throw new StorageDriverError(NAME, `write ${this.path}: an earlier write failed`, this.error);
      try {
        await step();
      } catch (err) {
        this.state = 'failed';
        this.error = err;
        await this.abort();
        throw err;
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  /**
   * Before the first new byte of an append: bring the existing object in. Small objects are read back into the
   * part buffer; objects of 5 MiB or more become the first parts of a multipart upload by server-side copy.
   */
  private async prepare(): Promise<void> {
    if (this.existingLoaded) return;
    this.existingLoaded = true;
    if (this.existingSize === 0) return;
    if (this.existingSize < S3_LIMITS.minPartSize) {
      const target = partSize(1, this.driver.chunkSize);
      this.part = await this.reservePart(target, 1, this.existingSize);
      const bytes = await this.driver.getRange(this.key, this.existingSize);
      if (bytes.length !== this.existingSize) throw new StorageDriverError(NAME, `write ${this.path}: the file changed while it was appended to`);
      this.part.fill(bytes, 0);
      return;
    }
    this.uploadId = await this.driver.createUpload(this.key);
    const ranges = copyRanges(this.existingSize, S3_LIMITS.maxCopySize);
    for (const range of ranges) this.parts.push(await this.driver.uploadPartCopy(this.key, this.uploadId, this.parts.length + 1, range));
  }

  /** Send the filled part buffer as the next part (after the part before it is done); its memory goes with it. */
  private async sendPart(): Promise<void> {
    const part = this.part!;
    this.part = undefined;
    try {
      if (this.inFlight) await this.inFlight;
      this.uploadId ??= await this.driver.createUpload(this.key);
    } catch (err) {
      part.release();
      throw err;
    }
    const partNumber = this.parts.length + 1;
    if (partNumber > S3_LIMITS.maxParts) {
      part.release();
      throw new StorageDriverError(NAME, `write ${this.path}: larger than S3's 10,000 parts allow`);
    }
    const slot = this.parts.length;
    this.parts.push({ PartNumber: partNumber }); // reserved; filled when the upload answers
    this.inFlight = this.driver.uploadPart(this.key, this.uploadId, partNumber, part.content).then(
      (done) => {
        this.parts[slot] = done;
      },
    ).finally(() => part.release());
    // Surface a failure of this part at the latest when the next part or the end waits for it.
    this.inFlight.catch(() => {});
  }

  /** Make every byte written so far the object's content. */
  private async finish(): Promise<void> {
    await this.queue;
    if (this.state === 'failed') throw new StorageDriverError(NAME, `write ${this.path}: an earlier write failed`, this.error);
    try {
      if (this.inFlight) await this.inFlight;
      this.inFlight = undefined;
      const part = this.part;
      this.part = undefined;
      try {
        if (this.uploadId) {
          if (part && part.filled > 0) this.parts.push(await this.driver.uploadPart(this.key, this.uploadId, this.parts.length + 1, part.content));
          await this.driver.completeUpload(this.key, this.uploadId, this.parts);
          this.uploadId = undefined;
        } else if ((part && part.filled > 0) || this.truncate) {
          await this.driver.putObject(this.key, part?.content ?? Buffer.alloc(0));
        }
      } finally {
        part?.release();
      }
    } catch (err) {
      this.error = err;
      await this.abort();
      throw new StorageDriverError(NAME, `write ${this.path}: ${(err as Error)?.message ?? err}`, err);
    }
  }

  private async abort(): Promise<void> {
    this.part?.release();
    this.part = undefined;
    const id = this.uploadId;
    this.uploadId = undefined;
    if (this.inFlight) await this.inFlight.catch(() => {});
    if (id) await this.driver.abortUpload(this.key, id).catch(() => {});
  }

  async commit(): Promise<void> {
    if (this.state !== 'open') return this.refuse('commit');
    this.state = 'committed';
    await this.finish();
  }

  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'committed' || this.state === 'cancelled') return;
    if (this.state === 'failed') {
      this.state = 'closed';
      return;
    }
    this.state = 'closed';
    await this.finish();
  }

  async cancel(): Promise<void> {
    if (this.state === 'committed') return this.refuse('cancel');
    if (this.state === 'cancelled') return;
    this.state = 'cancelled';
    await this.queue;
    await this.abort();
    try {
      await this.driver.deleteObject(this.key);
    } catch (err) {
      if (!isNoSuchKey(err)) throw new StorageDriverError(NAME, `cancel ${this.path}: ${(err as Error)?.message ?? err}`, err);
    }
  }
}
