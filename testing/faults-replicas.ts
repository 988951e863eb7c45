/**
 * Helpers for conformance/e2e/faults-replicas.test.ts: real `wharf serve` replicas on one shared filesystem storage,
 * killed with SIGKILL by PID; raw-socket requests whose body is sent in parts, so that a kill lands mid-request;
 * image pushes and complete pulls over HTTP.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { RunningWharf } from './harness.js';
import { pushBlob, sha256 } from './helpers.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** SIGKILL the replica's process (by its PID) and wait until it is gone. */
export async function sigkill(replica: RunningWharf): Promise<void> {
  const child = replica.process;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  process.kill(child.pid!, 'SIGKILL');
  await exited;
}

/** The path and query of a Location header, to send to whichever replica. */
export function pathOf(location: string | null): string {
  if (!location) throw new Error('no Location header');
  const u = new URL(location, 'http://x');
  return u.pathname + u.search;
}

/** An on-disk path of a storage path of `server/registry/layout.ts` under the shared root. */
export function onDisk(root: string, storagePath: string): string {
  return join(root, storagePath);
}

/**
 * A request written by hand on a raw socket: the head and `parts` of the body are sent only when asked, so a test
 * can kill the server between them. `response` settles with whatever came back (often nothing: the server died).
 */
export interface RawRequest {
  /** Write `bytes` and resolve once the kernel has taken them. */
  send(bytes: Uint8Array): Promise<void>;
  /** Everything the server answered before the connection closed. */
  response: Promise<string>;
  socket: Socket;
}

export async function rawRequest(base: string, method: string, path: string, headers: Record<string, string | number>): Promise<RawRequest> {
  const { hostname, port } = new URL(base);
  const socket = connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  let received = '';
  const response = new Promise<string>((resolve) => {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => { received += d; });
    socket.on('error', () => {});
    socket.once('close', () => resolve(received));
  });
  const send = (bytes: Uint8Array | string) => new Promise<void>((resolve, reject) => {
    socket.write(bytes, (err) => (err ? reject(err) : resolve()));
  });
  const head = [`${method} ${path} HTTP/1.1`, `Host: ${hostname}:${port}`, 'Connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n');
  await send(head);
  return { send, response, socket };
}

export interface PushedManifest {
  digest: string;
  bytes: Buffer;
  blobs: string[];
}

/** An image manifest (not pushed) over a config and `layers` already pushed to `repo`. */
export function imageManifest(config: Buffer, layers: Buffer[]): PushedManifest {
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(l), size: l.length })),
  }));
  return { digest: sha256(bytes), bytes, blobs: [sha256(config), ...layers.map((l) => sha256(l))] };
}

/** Push a config and `layerCount` random layers, then the manifest under `tag`; throws unless every step succeeds. */
export async function pushImage(base: string, repo: string, tag: string, layerCount = 2, layerSize = 4096): Promise<PushedManifest> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }));
  const layers = Array.from({ length: layerCount }, () => randomBytes(layerSize));
  for (const blob of [config, ...layers]) await pushBlob(base, repo, blob);
  const manifest = imageManifest(config, layers);
  await putManifest(base, repo, tag, manifest.bytes);
  return manifest;
}

export async function putManifest(base: string, repo: string, reference: string, bytes: Buffer): Promise<void> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${reference}`, { method: 'PUT', body: bytes, headers: { 'Content-Type': OCI_MANIFEST } });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`manifest PUT ${repo}:${reference} answered ${res.status}: ${text}`);
}

/** GET a manifest; its status, the digest the server gave, and the digest its bytes hash to. */
export async function getManifest(base: string, repo: string, reference: string): Promise<{ status: number; served?: string; actual?: string; bytes?: Buffer }> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${reference}`, { headers: { Accept: OCI_MANIFEST } });
  const bytes = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) return { status: res.status };
  return { status: 200, served: res.headers.get('docker-content-digest') ?? undefined, actual: sha256(bytes), bytes };
}

/**
 * Pull `repo:tag` completely from `base`: the manifest and every blob it names, each hashing to its digest.
 * Returns the problems found (empty when the image pulls completely).
 */
export async function pullProblems(base: string, repo: string, tag: string): Promise<string[]> {
  const problems: string[] = [];
  const m = await getManifest(base, repo, tag);
  if (m.status !== 200) return [`${repo}:${tag}: manifest answered ${m.status}`];
  if (m.served !== m.actual) problems.push(`${repo}:${tag}: manifest served as ${m.served} hashes to ${m.actual}`);
  const json = JSON.parse(m.bytes!.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  for (const d of [json.config.digest, ...json.layers.map((l) => l.digest)]) {
    const res = await fetch(`${base}/v2/${repo}/blobs/${d}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200) problems.push(`${repo}:${tag}: blob ${d} answered ${res.status}`);
    else if (sha256(bytes) !== d) problems.push(`${repo}:${tag}: blob ${d} hashes to ${sha256(bytes)}`);
  }
  return problems;
}
