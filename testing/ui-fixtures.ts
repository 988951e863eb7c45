/**
 * Test images for the web UI's tests (server/ui/*.test.ts and the browser tests): pushed over the real API, with the
 * features the UI shows: a multi-platform index, an image with labels and history (some `empty_layer` entries), and
 * an artifact whose `subject` is another manifest. Test-only.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { pushBlob, sha256 } from './helpers.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';

export interface Pushed {
  digest: string;
  mediaType: string;
  size: number;
  /** The blobs it references, digest → size (config and layers). */
  blobs: Record<string, number>;
}

export interface ImageSpec {
  os?: string;
  architecture?: string;
  variant?: string;
  labels?: Record<string, string>;
  /** Layer sizes in bytes (default two small layers). */
  layers?: number[];
  created?: string;
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  /** History entries; default one per layer (`created_by: layer <i>`), with an `empty_layer` entry first. */
  history?: { created_by: string; empty_layer?: boolean }[];
  annotations?: Record<string, string>;
}

export async function putManifest(base: string, repo: string, ref: string, body: Buffer, mediaType: string, headers: Record<string, string> = {}): Promise<void> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body, headers: { 'Content-Type': mediaType, ...headers } });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`manifest push to ${repo}:${ref} answered ${res.status}: ${text}`);
}

/** Push an image (config, layers, manifest) and tag it `tag` (undefined: by digest only). */
export async function pushImage(base: string, repo: string, tag: string | undefined, spec: ImageSpec = {}, headers: Record<string, string> = {}): Promise<Pushed> {
  const layerBytes = (spec.layers ?? [1500, 700]).map((n) => randomBytes(n));
  const blobs: Record<string, number> = {};
  const layers = [];
  for (const bytes of layerBytes) {
    const d = await pushBlob(base, repo, bytes, headers);
    blobs[d] = bytes.byteLength;
    layers.push({ mediaType: OCI_LAYER, digest: d, size: bytes.byteLength });
  }
  const history = spec.history ?? [
    { created_by: '/bin/sh -c #(nop) ARG VERSION', empty_layer: true },
    ...layers.map((_, i) => ({ created_by: `RUN build layer ${i}` })),
  ];
  const config = Buffer.from(JSON.stringify({
    architecture: spec.architecture ?? 'amd64',
    os: spec.os ?? 'linux',
    ...(spec.variant ? { variant: spec.variant } : {}),
    created: spec.created ?? '2024-05-01T12:00:00Z',
    config: {
      ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
      Cmd: spec.cmd ?? ['/bin/sh'],
      Env: spec.env ?? ['PATH=/usr/bin:/bin'],
      ...(spec.labels ? { Labels: spec.labels } : {}),
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    history,
  }));
  const configDigest = await pushBlob(base, repo, config, headers);
  blobs[configDigest] = config.byteLength;
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.byteLength },
    layers,
    ...(spec.annotations ? { annotations: spec.annotations } : {}),
  }));
  const digest = sha256(manifest);
  await putManifest(base, repo, tag ?? digest, manifest, OCI_MANIFEST, headers);
  return { digest, mediaType: OCI_MANIFEST, size: manifest.byteLength, blobs };
}

/** Push one image per platform and an index over them, tagged `tag`. */
export async function pushIndex(
  base: string, repo: string, tag: string,
  platforms: { os: string; architecture: string; variant?: string }[] = [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }],
  headers: Record<string, string> = {},
): Promise<Pushed & { children: Pushed[] }> {
  const children: Pushed[] = [];
  for (const p of platforms) children.push(await pushImage(base, repo, undefined, { ...p, layers: [900, 300] }, headers));
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: children.map((c, i) => ({ mediaType: c.mediaType, digest: c.digest, size: c.size, platform: platforms[i] })),
  }));
  const digest = sha256(index);
  await putManifest(base, repo, tag, index, OCI_INDEX, headers);
  return { digest, mediaType: OCI_INDEX, size: index.byteLength, blobs: Object.assign({}, ...children.map((c) => c.blobs)), children };
}

/** Push an artifact (empty config, one layer) whose `subject` is `subject`, by digest (no tag). */
export async function pushArtifact(
  base: string, repo: string, subject: Pushed, artifactType: string, annotations: Record<string, string> = {}, headers: Record<string, string> = {},
): Promise<Pushed> {
  const empty = Buffer.from('{}');
  const emptyDigest = await pushBlob(base, repo, empty, headers);
  const payload = Buffer.from(JSON.stringify({ signed: 'not really', at: Date.now() }));
  const payloadDigest = await pushBlob(base, repo, payload, headers);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: { mediaType: OCI_EMPTY, digest: emptyDigest, size: 2 },
    layers: [{ mediaType: 'application/json', digest: payloadDigest, size: payload.byteLength }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations,
  }));
  const digest = sha256(manifest);
  await putManifest(base, repo, digest, manifest, OCI_MANIFEST, headers);
  return { digest, mediaType: OCI_MANIFEST, size: manifest.byteLength, blobs: { [emptyDigest]: 2, [payloadDigest]: payload.byteLength } };
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

/**
 * One HTTP request with any headers (fetch would refuse to set Origin or Cookie as a browser does), optionally from
 * another loopback source address (`from`: Linux routes all of 127.0.0.0/8 to lo), as another client would.
 */
export function call(base: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: string; from?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { method: init.method ?? 'GET', headers: init.headers, localAddress: init.from ?? '127.0.0.1' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: any;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

/** Log in through the UI API; returns the `Cookie` header value to send (throws unless 200). */
export async function uiLogin(base: string, username: string, password: string): Promise<string> {
  const answer = await call(base, '/ui/api/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Wharf-UI': '1' },
    body: JSON.stringify({ username, password }),
  });
  if (answer.status !== 200) throw new Error(`login as ${username} answered ${answer.status}: ${answer.text}`);
  const cookie = ([] as string[]).concat(answer.headers['set-cookie'] ?? [])[0] ?? '';
  return cookie.split(';')[0]!;
}
