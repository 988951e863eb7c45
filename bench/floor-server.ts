/**
 * A minimal Node HTTP server that receives a pushed body with the least work one of four kinds of push can take,
 * for `bench/floor.ts`: what any Node registry on this machine could reach at best.
 *
 *   node dist/bench/floor-server.js <mode> <port> <dir>
 *
 * Modes: `discard` (read the body, nothing else), `hash` (SHA-256 of it), `write` (hash, and write it to a file
 * in <dir> with up to 1 MiB of writes in flight), `durable` (as `write`, plus an fdatasync every 16 MiB in the
 * background and an fsync before answering, as Wharf does). Answers 201 with the hex digest. Prints `ready` once
 * it listens.
 */
import { createHash } from 'node:crypto';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import { join } from 'node:path';

type Mode = 'discard' | 'hash' | 'write' | 'durable';
const MODES: Mode[] = ['discard', 'hash', 'write', 'durable'];

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

async function receive(req: IncomingMessage, mode: Mode, dir: string, n: number): Promise<string> {
  const hash = mode === 'discard' ? undefined : createHash('sha256');
  if (mode === 'discard' || mode === 'hash') {
    for await (const chunk of req as AsyncIterable<Uint8Array>) hash?.update(chunk);
    return hash ? hash.digest('hex') : '';
  }
  const path = join(dir, `body-${n}`);
  const file = await open(path, 'w');
  try {
    const sink = new Sink(file, mode === 'durable');
    for await (const chunk of req as AsyncIterable<Uint8Array>) {
      hash!.update(chunk);
      await sink.write(chunk);
    }
    await sink.finish();
  } finally {
    await file.close();
    await rm(path, { force: true });
  }
  return hash!.digest('hex');
}

const [mode, port, dir] = process.argv.slice(2) as [Mode, string, string];
if (!MODES.includes(mode) || !port || !dir) {
  process.stderr.write(`usage: floor-server.js ${MODES.join('|')} <port> <dir>\n`);
  process.exit(2);
}
let requests = 0;
createServer((req, res) => {
  receive(req, mode, dir, requests++).then(
    (digest) => res.writeHead(201, { 'Content-Type': 'text/plain' }).end(digest),
    (err: Error) => res.writeHead(500).end(err.message),
  );
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
