/**
 * A minimal Node HTTP server that receives a pushed body with the least work one of four kinds of push can take,
 * for `bench/floor.ts` and `bench/run.ts`: what any Node registry on this machine could reach at best.
 *
 *   node dist/bench/floor-server.js <mode> <port> <dir>
 *
 * Modes: `discard` (read the body, nothing else), `hash` (SHA-256 of it), `write` (hash, and write it to a file
 * in <dir> with up to 1 MiB of writes in flight), `durable` (as `write`, plus an fdatasync every 16 MiB in the
 * background and an fsync before answering, as Wharf does), `layout` (as `durable`, plus what a push into registry:2's
 * storage layout must do on disk besides its bytes: see LAYOUT below), `s3` (hash, and stream the body of a monolithic
 * `PUT <location>?digest=` into one PutObject: no part buffers, so the least memory a push to S3 can take; the
 * bucket comes from FLOOR_S3, a JSON `storage.s3` section in registry:2's keys; no PATCH and no blob reads).
 * Prints `ready` once it listens.
 *
 * Two ways in:
 * - A PUT or POST with a body to any path outside /v2/ (bench:floor's client): answers 201 with the hex digest;
 *   the file is removed before answering.
 * - The blob-upload part of the distribution API, as much as the benchmark's push clients use (bench/run.ts's
 *   push workloads): `GET /v2/` (200), `POST /v2/<name>/blobs/uploads/` (202, Location), `PATCH <location>` with a
 *   body, chunked or not (the bytes are appended and, when durable, synced before the 202, as Wharf does; Location
 *   and Range), `PUT <location>?digest=` with the rest of the body or none (201 when the digest matches what was
 *   received, 400 otherwise). The file stays in <dir> (Wharf keeps its blobs too) until the server's directory is
 *   removed. No content store and no links: only the work every durable push must do.
 * - Reads, as much as the benchmark's blob GET and manifest workloads use, so that one floor process can go through
 *   the same workloads as Wharf (the memory figure of bench/run.ts's workload 10): `GET`/`HEAD /v2/<name>/blobs/<digest>`
 *   streams the file a completed upload of that digest left (`createReadStream().pipe()`, 404 when none), and
 *   `PUT /v2/<name>/manifests/<reference>` keeps the manifest in memory under its tag and digest (201), which
 *   `GET`/`HEAD` of either answers with its media type.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { SOCKET_HIGH_WATER_MARK } from '../server/node-flags.js';
import { chunksOf } from '../server/http/chunks.js';

type Mode = 'discard' | 'hash' | 'write' | 'durable' | 'layout' | 's3';
const MODES: Mode[] = ['discard', 'hash', 'write', 'durable', 'layout', 's3'];

const WINDOW = 1024 * 1024;
const FLUSH_EVERY = 16 * 1024 * 1024;

/** Writes chunks at increasing offsets, queued ones together in one writev, at most WINDOW bytes outstanding. */
class Sink {
  private queued: Uint8Array[] = [];
  private queuedBytes = 0;
  private writing: Promise<void> | undefined;
  private position = 0;
  private flushedUpTo = 0;
  private flushing: Promise<void> | undefined;

  constructor(private readonly file: FileHandle, private readonly durable: boolean) {}

  /** Resolves once the bytes not yet written are back within the window. */
  async write(chunk: Uint8Array): Promise<void> {
    this.queued.push(chunk);
    this.queuedBytes += chunk.byteLength;
    this.writing ??= this.drainQueue();
    while (this.queuedBytes > WINDOW && this.writing) await this.writing;
  }

  private async drainQueue(): Promise<void> {
    while (this.queued.length > 0) {
      const batch = this.queued;
      this.queued = [];
      this.queuedBytes = 0;
      let rest = batch;
      while (rest.length > 0) {
        let { bytesWritten } = await this.file.writev(rest, this.position);
        this.position += bytesWritten;
        while (rest.length > 0 && bytesWritten >= rest[0]!.byteLength) bytesWritten -= rest.shift()!.byteLength;
        if (bytesWritten > 0) rest[0] = rest[0]!.subarray(bytesWritten);
      }
      if (this.durable && !this.flushing && this.position - this.flushedUpTo >= FLUSH_EVERY) {
        this.flushedUpTo = this.position;
        this.flushing = this.file.datasync().finally(() => { this.flushing = undefined; });
      }
    }
    this.writing = undefined;
  }

  async finish(): Promise<void> {
    while (this.writing) await this.writing;
    if (this.flushing) await this.flushing;
    if (this.durable) await this.file.sync();
  }
}

/** One upload: the running hash and, in the modes that write, the file and its sink. */
interface Upload {
  hash?: Hash;
  /** The file the bytes are written to (in the modes that write). */
  path?: string;
  file?: FileHandle;
  sink?: Sink;
  size: number;
  /** In `layout` mode: the session's folder, `repositories/<name>/_uploads/<id>`. */
  session?: string;
}

async function openUpload(mode: Mode, path: string): Promise<Upload> {
  const hash = mode === 'discard' ? undefined : createHash('sha256');
  if (mode !== 'write' && mode !== 'durable' && mode !== 'layout') return { hash, size: 0 };
  const file = await open(path, 'w');
  return { hash, path, file, sink: new Sink(file, mode !== 'write'), size: 0 };
}

/**
 * LAYOUT: the least a durable push into registry:2's storage layout does on disk besides receiving its bytes, which
 * a drop-in for registry:2 whose sessions any replica can continue cannot skip. The session is a folder in storage,
 * `repositories/<name>/_uploads/<id>/` with `data` and `startedat` (written, not flushed); once the digest is
 * verified the data goes to `blobs/sha256/<xx>/<hex>/data` by rename, the repository's link
 * `repositories/<name>/_layers/sha256/<hex>/link` is written to a temporary file, flushed and renamed into place,
 * and the session's folder is removed. Nothing else Wharf does (claims, quotas, upload limits, caches) is here.
 */
const LAYOUT_ROOT = 'docker/registry/v2';
/** The distribution spec's repository names: in `layout` mode a name becomes folders, so nothing else is taken. */
const REPOSITORY_NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;

async function startLayoutSession(name: string, id: string): Promise<Upload> {
  const session = join(dir, LAYOUT_ROOT, 'repositories', name, '_uploads', id);
  await mkdir(session, { recursive: true });
  await writeFile(join(session, 'startedat'), new Date().toISOString());
  return { ...(await openUpload(mode, join(session, 'data'))), session };
}

/** Move a verified upload into the content store and link it into the repository; returns the blob's path. */
async function commitToLayout(name: string, digest: string, upload: Upload): Promise<string> {
  const hex = digest.slice('sha256:'.length);
  const blobDir = join(dir, LAYOUT_ROOT, 'blobs', 'sha256', hex.slice(0, 2), hex);
  await mkdir(blobDir, { recursive: true });
  const blob = join(blobDir, 'data');
  await rename(upload.path!, blob);
  const linkDir = join(dir, LAYOUT_ROOT, 'repositories', name, '_layers', 'sha256', hex);
  await mkdir(linkDir, { recursive: true });
  const temporary = join(linkDir, `.link-${randomUUID()}`);
  const link = await open(temporary, 'w');
  try {
    await link.writeFile(digest);
    await link.sync();
  } finally {
    await link.close();
  }
  await rename(temporary, join(linkDir, 'link'));
  await rm(upload.session!, { recursive: true, force: true });
  return blob;
}

/** Hash and write the request body into the upload; resolves once it is written (and synced, when durable). */
async function receiveInto(req: IncomingMessage, upload: Upload): Promise<void> {
  // Chunks as they came, as Wharf reads a pushed body (server/http/chunks.ts): Node's iterator would join them.
  for await (const chunk of chunksOf(req)) {
    upload.size += chunk.byteLength;
    upload.hash?.update(chunk);
    if (upload.sink) await upload.sink.write(chunk);
  }
  await upload.sink?.finish();
}

const [mode, port, dir] = process.argv.slice(2) as [Mode, string, string];
if (!MODES.includes(mode) || !port || !dir) {
  process.stderr.write(`usage: floor-server.js ${MODES.join('|')} <port> <dir>\n`);
  process.exit(2);
}
let requests = 0;
const uploads = new Map<string, Upload>();

/** In `s3` mode: the bucket's settings (FLOOR_S3) and a client, loaded only then (the SDK weighs on memory). */
const s3 = mode === 's3' ? await s3Target() : undefined;

async function s3Target() {
  const settings = JSON.parse(process.env.FLOOR_S3 ?? 'null') as Record<string, string> | null;
  if (!settings?.bucket) {
    process.stderr.write('floor-server.js s3: set FLOOR_S3 to a storage.s3 section (bucket, region, regionendpoint, accesskey, secretkey)\n');
    process.exit(2);
  }
  const aws = await import('@aws-sdk/client-s3');
  const client = new aws.S3Client({
    region: settings.region ?? 'us-east-1',
    endpoint: settings.regionendpoint,
    forcePathStyle: true,
    credentials: settings.accesskey ? { accessKeyId: settings.accesskey, secretAccessKey: settings.secretkey ?? '' } : undefined,
    // As Wharf's driver: no streamed checksums, which Ceph RGW refuses (411), and the middleware kept per command.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    cacheMiddleware: true,
  });
  const root = (settings.rootdirectory ?? '').replace(/^\/+|\/+$/g, '');
  /** Stream `req`'s body (of `length` bytes) into one object, hashing it on the way. */
  const put = async (req: IncomingMessage, upload: Upload, length: number): Promise<void> => {
    const body = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        upload.hash?.update(chunk);
        upload.size += chunk.byteLength;
        done(null, chunk);
      },
    });
    req.pipe(body);
    await client.send(new aws.PutObjectCommand({
      Bucket: settings.bucket, Key: `${root ? `${root}/` : ''}floor/${randomUUID()}`, Body: body, ContentLength: length,
    }));
  };
  return { put };
}

/** bench:floor's way in: the whole body in one request, answered with its digest. */
async function plainPush(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (s3) {
    req.resume();
    res.writeHead(501, { 'Content-Type': 'text/plain' }).end('the s3 floor takes only the blob-upload API');
    return;
  }
  const path = join(dir, `body-${requests++}`);
  const upload = await openUpload(mode, path);
  try {
    await receiveInto(req, upload);
  } finally {
    await upload.file?.close();
    if (upload.file) await rm(path, { force: true });
  }
  res.writeHead(201, { 'Content-Type': 'text/plain' }).end(upload.hash ? upload.hash.digest('hex') : '');
}

const UPLOADS = /^\/v2\/(.+)\/blobs\/uploads\/([0-9a-f-]*)$/;
const BLOB = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;
const MANIFEST = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
/** Where each completed upload's bytes are, by digest. */
const blobs = new Map<string, string>();
/** Manifests by `<name>:<tag>` and `<name>@<digest>`. */
const manifests = new Map<string, { type: string; body: Buffer }>();

/** The reads and manifest writes the benchmark's blob GET and manifest workloads make; false when `url` is not one. */
async function registryRead(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
  const blob = BLOB.exec(url.pathname);
  if (blob && (req.method === 'GET' || req.method === 'HEAD')) {
    req.resume();
    const path = blobs.get(blob[2]!);
    const size = path ? (await stat(path).catch(() => undefined))?.size : undefined;
    if (!path || size === undefined) {
      res.writeHead(404).end();
      return true;
    }
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': size, 'Docker-Content-Digest': blob[2] });
    if (req.method === 'HEAD') res.end();
    else createReadStream(path).pipe(res);
    return true;
  }
  const manifest = MANIFEST.exec(url.pathname);
  if (!manifest) return false;
  const [, name, reference] = manifest;
  const key = reference!.startsWith('sha256:') ? `${name}@${reference}` : `${name}:${reference}`;
  if (req.method === 'PUT') {
    const chunks: Buffer[] = [];
    for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    const entry = { type: req.headers['content-type'] ?? 'application/octet-stream', body };
    manifests.set(key, entry);
    manifests.set(`${name}@${digest}`, entry);
    res.writeHead(201, { Location: `/v2/${name}/manifests/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' }).end();
    return true;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  req.resume();
  const entry = manifests.get(key);
  if (!entry) {
    res.writeHead(404).end();
    return true;
  }
  res.writeHead(200, { 'Content-Type': entry.type, 'Content-Length': entry.body.length });
  res.end(req.method === 'HEAD' ? undefined : entry.body);
  return true;
}

/** The distribution API's blob upload, as far as the benchmark's clients go. */
async function registryPush(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  if (req.method === 'GET' && url.pathname === '/v2/') {
    res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
    return;
  }
  if (await registryRead(req, res, url)) return;
  const m = UPLOADS.exec(url.pathname);
  if (!m) {
    req.resume();
    res.writeHead(404).end();
    return;
  }
  const [, name, id] = m;
  if (req.method === 'POST' && !id) {
    req.resume();
    const uuid = randomUUID();
    if (mode === 'layout' && !REPOSITORY_NAME.test(name!)) {
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end('not a repository name');
      return;
    }
    uploads.set(uuid, mode === 'layout' ? await startLayoutSession(name!, uuid) : await openUpload(mode, join(dir, `upload-${uuid}`)));
    res.writeHead(202, { Location: `/v2/${name}/blobs/uploads/${uuid}`, Range: '0-0', 'Content-Length': '0' }).end();
    return;
  }
  const upload = id ? uploads.get(id) : undefined;
  if (!upload) {
    req.resume();
    res.writeHead(404).end();
    return;
  }
  if (req.method === 'PATCH' && s3) {
    req.resume();
    res.writeHead(501, { 'Content-Type': 'text/plain' }).end('the s3 floor takes monolithic PUTs only');
    return;
  }
  if (req.method === 'PATCH') {
    await receiveInto(req, upload);
    res.writeHead(202, {
      Location: `/v2/${name}/blobs/uploads/${id}`, Range: `0-${Math.max(upload.size - 1, 0)}`, 'Content-Length': '0',
    }).end();
    return;
  }
  if (req.method === 'PUT') {
    uploads.delete(id!);
    if (s3) {
      const length = Number(req.headers['content-length']);
      if (!Number.isSafeInteger(length) || length < 0) {
        req.resume();
        res.writeHead(411, { 'Content-Type': 'text/plain' }).end('the s3 floor needs Content-Length');
        return;
      }
      await s3.put(req, upload, length);
    } else {
      try {
        await receiveInto(req, upload);
      } finally {
        await upload.file?.close();
      }
    }
    const expected = url.searchParams.get('digest');
    const digest = upload.hash ? `sha256:${upload.hash.digest('hex')}` : expected;
    if (!expected || digest !== expected) {
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end(`digest ${digest}, expected ${expected}`);
      return;
    }
    if (upload.session) blobs.set(digest!, await commitToLayout(name!, digest!, upload));
    else if (upload.path) blobs.set(digest!, upload.path);
    res.writeHead(201, { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' }).end();
    return;
  }
  req.resume();
  res.writeHead(405).end();
}

// Wharf's socket buffer size: a setting of Node's, not work the floor could skip (see SOCKET_HIGH_WATER_MARK).
createServer({ highWaterMark: SOCKET_HIGH_WATER_MARK }, (req, res) => {
  const url = new URL(req.url ?? '/', 'http://floor');
  const handled = url.pathname.startsWith('/v2/') ? registryPush(req, res, url) : plainPush(req, res);
  handled.catch((err: Error) => {
    if (!res.headersSent) res.writeHead(500).end(err.message);
    else res.destroy();
  });
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
