/**
 * The in-memory driver: a tree of directories and files held in the process, with the same semantics as the
 * filesystem driver (it passes the same suite). Used for fast tests and `storage: inmemory:`; everything is
 * lost when the process ends.
 *
 * Model
 *   - A directory is a Map of children; directories are created as parents when a file is written and stay
 *     until deleted, as on a filesystem.
 *   - A file is a list of Buffer chunks. Writers append chunks (no quadratic concatenation); readers snapshot
 *     the chunk list when opened, so a reader sees the file as it was then.
 *   - Bytes handed to putContent or write() are copied, so callers may reuse their buffers.
 *   - Every mutation completes synchronously, which makes putContent and move atomic for free. Node objects are
 *     moved, not copied: an open writer keeps writing into the file after it is moved (like an open file
 *     descriptor after a rename) and into nothing after it is deleted.
 */
import { Readable } from 'node:stream';
import {
  InvalidOffsetError,
  PathNotFoundError,
  StorageDriverError,
  comparePaths,
  isBelow,
  joinPath,
  type ContentWithInfo,
  type FileInfo,
  type FileWriter,
  type StorageDriver,
  type WalkOptions,
} from './driver.js';

const NAME = 'inmemory';
/** Largest chunk a reader stream pushes at once. */
const READ_CHUNK = 1 << 20;

interface FileNode {
  kind: 'file';
  chunks: Buffer[];
  size: number;
  modTime: Date;
}

interface DirNode {
  kind: 'dir';
  children: Map<string, Node>;
  modTime: Date;
}

type Node = FileNode | DirNode;

function newFile(): FileNode {
  return { kind: 'file', chunks: [], size: 0, modTime: new Date() };
}

function newDir(): DirNode {
  return { kind: 'dir', children: new Map(), modTime: new Date() };
}

function components(path: string): string[] {
  return path === '/' ? [] : path.slice(1).split('/');
}

/** The file's bytes as one Buffer; the chunk list is compacted so the next read is free. */
function contentOf(file: FileNode): Buffer {
  if (file.chunks.length === 1) return file.chunks[0]!;
  const whole = Buffer.concat(file.chunks, file.size);
  file.chunks = file.size === 0 ? [] : [whole];
  return whole;
}

export class InMemoryDriver implements StorageDriver {
  readonly name = NAME;
  private readonly root: DirNode = newDir();

  /** The node at `path`, or undefined. */
  private find(path: string): Node | undefined {
    let node: Node = this.root;
    for (const part of components(path)) {
      if (node.kind !== 'dir') return undefined;
      const child = node.children.get(part);
      if (!child) return undefined;
      node = child;
    }
    return node;
  }

  private findFile(path: string): FileNode {
    const node = this.find(path);
    if (!node || node.kind !== 'file') throw new PathNotFoundError(path, NAME);
    return node;
  }

  private findDir(path: string): DirNode {
    const node = this.find(path);
    if (!node || node.kind !== 'dir') throw new PathNotFoundError(path, NAME);
    return node;
  }

  /** The parent directory of `path` and its last component, creating missing directories on the way. */
  private parentOf(path: string): { dir: DirNode; name: string } {
    const parts = components(path);
    const name = parts.pop();
    if (name === undefined) throw new StorageDriverError(NAME, 'the root is a directory, not a file');
    let dir = this.root;
    for (const part of parts) {
      let child = dir.children.get(part);
      if (!child) {
        child = newDir();
        dir.children.set(part, child);
        dir.modTime = new Date();
      }
      if (child.kind !== 'dir') throw new StorageDriverError(NAME, `not a directory: ${part} in ${path}`);
      dir = child;
    }
    return { dir, name };
  }

  /** Place `node` at `path`, replacing a file there; a directory there is an error (as for rename(2)). */
  private place(path: string, node: Node): void {
    const { dir, name } = this.parentOf(path);
    const existing = dir.children.get(name);
    if (existing === node) return;
    if (existing?.kind === 'dir') throw new StorageDriverError(NAME, `is a directory: ${path}`);
    dir.children.set(name, node);
    dir.modTime = new Date();
  }

  async getContent(path: string): Promise<Buffer> {
    // A copy: callers may modify what they get without changing the stored file.
    return Buffer.from(contentOf(this.findFile(path)));
  }

  async getContentWithInfo(path: string): Promise<ContentWithInfo> {
    const file = this.findFile(path);
    return { content: Buffer.from(contentOf(file)), info: info(path, file) };
  }

  async putContent(path: string, content: Uint8Array | string): Promise<void> {
    const file = newFile();
    const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : Buffer.from(content);
    if (bytes.length > 0) file.chunks.push(bytes);
    file.size = bytes.length;
    this.place(path, file);
  }

  async putContentIfAbsent(path: string, content: Uint8Array | string): Promise<boolean> {
    if (this.find(path)) return false;
    await this.putContent(path, content);
    return true;
  }

  async reader(path: string, offset = 0, length?: number): Promise<Readable> {
    const file = this.findFile(path);
    if (offset < 0 || offset > file.size) throw new InvalidOffsetError(path, offset);
    const end = length === undefined ? file.size : Math.min(file.size, offset + length);
    // Snapshot of the byte ranges to send: later writes add chunks (or replace the node) but never change
    // existing chunks, so these slices stay valid.
    const slices: Buffer[] = [];
    let position = 0;
    for (const chunk of file.chunks) {
      const from = Math.max(offset, position);
      const to = Math.min(end, position + chunk.length);
      for (let at = from; at < to; at += READ_CHUNK) {
        slices.push(chunk.subarray(at - position, Math.min(to, at + READ_CHUNK) - position));
      }
      position += chunk.length;
      if (position >= end) break;
    }
    let next = 0;
    return new Readable({
      highWaterMark: READ_CHUNK,
      read() {
        while (next < slices.length) {
          if (!this.push(slices[next++])) return;
        }
        this.push(null);
      },
    });
  }

  async writer(path: string, append: boolean): Promise<FileWriter> {
    if (append) {
      const file = this.findFile(path);
      return new InMemoryWriter(this, path, file);
    }
    const file = newFile();
    this.place(path, file);
    return new InMemoryWriter(this, path, file);
  }

  async stat(path: string): Promise<FileInfo> {
    const node = this.find(path);
    if (!node) throw new PathNotFoundError(path, NAME);
    return info(path, node);
  }

  async list(path: string): Promise<string[]> {
    return sortedNames(this.findDir(path)).map((name) => joinPath(path, name));
  }

  async move(sourcePath: string, destPath: string): Promise<void> {
    const node = this.find(sourcePath);
    if (!node) throw new PathNotFoundError(sourcePath, NAME);
    if (sourcePath === destPath) return;
    if (sourcePath === '/' || isBelow(destPath, sourcePath)) {
      throw new StorageDriverError(NAME, `cannot move ${sourcePath} into itself`);
    }
    this.place(destPath, node);
    this.detach(sourcePath);
  }

  async delete(path: string): Promise<void> {
    if (path === '/') {
      this.root.children.clear();
      this.root.modTime = new Date();
      return;
    }
    if (!this.find(path)) throw new PathNotFoundError(path, NAME);
    this.detach(path);
  }

  async removeEmptyDirectory(path: string): Promise<boolean> {
    const node = this.find(path);
    if (path === '/' || node?.kind !== 'dir' || node.children.size > 0) return false;
    this.detach(path);
    return true;
  }

  async redirectURL(): Promise<string | null> {
    return null;
  }

  async *walk(path: string, options: WalkOptions = {}): AsyncIterable<FileInfo> {
    const dir = this.findDir(path);
    yield* walkDir(path, dir, options);
  }

  /** Remove the node at `path` (which exists) from its parent. */
  private detach(path: string): void {
    const parts = components(path);
    const name = parts.pop()!;
    const parent = this.find('/' + parts.join('/')) as DirNode;
    parent.children.delete(name);
    parent.modTime = new Date();
  }

  /** Used by writers: is `file` still the node at `path`? */
  holds(path: string, file: FileNode): boolean {
    return this.find(path) === file;
  }

  /** Used by writers: remove `path` if it still holds `file`. */
  discard(path: string, file: FileNode): void {
    if (this.holds(path, file)) this.detach(path);
  }
}

function info(path: string, node: Node): FileInfo {
  return node.kind === 'dir'
    ? { path, size: 0, modTime: node.modTime, isDir: true }
    : { path, size: node.size, modTime: node.modTime, isDir: false };
}

function sortedNames(dir: DirNode): string[] {
  return [...dir.children.keys()].sort();
}

/**
 * Depth-first walk; directory contents are read when descended into, so entries added or removed meanwhile
 * behave as on a filesystem.
 */
async function* walkDir(dirPath: string, dir: DirNode, options: WalkOptions): AsyncGenerator<FileInfo> {
  const { startAfter, descend } = options;
  for (const name of sortedNames(dir)) {
    const node = dir.children.get(name);
    if (!node) continue; // removed while we walked
    const path = joinPath(dirPath, name);
    if (startAfter !== undefined && comparePaths(path, startAfter) < 0 && !isBelow(startAfter, path)) continue;
    const entry = info(path, node);
    if (startAfter === undefined || comparePaths(path, startAfter) > 0) yield entry;
    if (node.kind === 'dir' && (!descend || descend(entry))) yield* walkDir(path, node, options);
  }
}

type WriterState = 'open' | 'committed' | 'closed' | 'cancelled';

/** Appends copies of the written chunks to its file node; state rules match the filesystem writer. */
class InMemoryWriter implements FileWriter {
  private state: WriterState = 'open';

  constructor(
    private readonly driver: InMemoryDriver,
    private readonly path: string,
    private readonly file: FileNode,
  ) {}

  get size(): number {
    return this.file.size;
  }

  private notOpen(): StorageDriverError {
    return new StorageDriverError(NAME, `writer is ${this.state}: ${this.path}`);
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw this.notOpen();
    if (chunk.length === 0) return;
    this.file.chunks.push(Buffer.from(chunk));
    this.file.size += chunk.length;
    this.file.modTime = new Date();
  }

  async commit(): Promise<void> {
    if (this.state !== 'open') throw this.notOpen();
    this.state = 'committed';
  }

  async close(): Promise<void> {
    if (this.state === 'open') this.state = 'closed';
  }

  async cancel(): Promise<void> {
    if (this.state === 'cancelled') return;
    if (this.state !== 'open') throw this.notOpen();
    this.state = 'cancelled';
    this.driver.discard(this.path, this.file);
  }
}
