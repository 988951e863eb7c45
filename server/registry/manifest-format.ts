/**
 * Manifest formats: which media types Wharf accepts, how a manifest's bytes are checked, and what it references.
 * Pure functions over bytes; no storage.
 */
import { RegistryError } from './errors.js';
import { parseDigest, type Digest } from './reference.js';

export const MediaType = {
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  DOCKER_MANIFEST_LIST: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DOCKER_SCHEMA1: 'application/vnd.docker.distribution.manifest.v1+json',
  DOCKER_SCHEMA1_SIGNED: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  OCI_EMPTY: 'application/vnd.oci.empty.v1+json',
} as const;

/** The OCI empty descriptor's content (`{}`) and digest, which artifacts use as their config. */
export const EMPTY_JSON = Buffer.from('{}');
export const EMPTY_JSON_DIGEST = 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a';

/** Layer media types whose content need not be in the registry (the spec calls them non-distributable). */
const NON_DISTRIBUTABLE = [
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.docker.image.rootfs.foreign.diff.tar',
];

/** Docker's foreign layer type (`application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`), as opposed to OCI's. */
export function isDockerForeign(mediaType: string): boolean {
  return isNonDistributable(mediaType) && mediaType.startsWith(NON_DISTRIBUTABLE[1]!);
}

export function isNonDistributable(mediaType: string): boolean {
  return NON_DISTRIBUTABLE.some((t) => mediaType === t || mediaType.startsWith(`${t}+`) || mediaType.startsWith(`${t}.`));
}

export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaType.OCI_MANIFEST,
  MediaType.OCI_INDEX,
  MediaType.DOCKER_MANIFEST,
  MediaType.DOCKER_MANIFEST_LIST,
];

export function isIndexType(mediaType: string): boolean {
  return mediaType === MediaType.OCI_INDEX || mediaType === MediaType.DOCKER_MANIFEST_LIST;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: unknown;
}

/** What the registry needs to know about a validated manifest. */
export interface ParsedManifest {
  mediaType: string;
  /**
   * Blobs that must exist in the repository (image manifests only): the config and every layer, except a
   * non-distributable (foreign) layer that carries `urls`, which clients fetch from there (registry:2's rule).
   */
  blobs: Digest[];
  /** Every child manifest of an index (indexes only); which must exist is validation's decision (policies/validation.ts). */
  manifests: Digest[];
  /** The config and layer descriptors (image manifests only), in order: what the URL checks look at. */
  descriptors: (Descriptor & { parsed: Digest; where: string })[];
  /** The child descriptors of an index, with their `platform` (indexes only). */
  children: (Descriptor & { parsed: Digest })[];
  subject?: Descriptor & { parsed: Digest };
  /** The value the referrers API shows for this manifest (artifactType, else the config's media type). */
  artifactType?: string;
  annotations?: Record<string, string>;
  /** Whether the config is the OCI empty descriptor (artifacts), which the registry can supply itself. */
  emptyConfig: boolean;
}

function invalid(message: string, detail?: unknown): RegistryError {
  return new RegistryError('MANIFEST_INVALID', message, { detail });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkAnnotations(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw invalid(`${where}: annotations must be a map of strings`);
  }
  return v as Record<string, string>;
}

function checkDescriptor(v: unknown, where: string): Descriptor & { parsed: Digest } {
  if (!isObject(v)) throw invalid(`${where}: descriptor must be an object`);
  const { mediaType, digest, size, artifactType, urls } = v;
  if (typeof mediaType !== 'string' || mediaType === '') throw invalid(`${where}: mediaType must be a string`);
  if (typeof digest !== 'string') throw invalid(`${where}: digest must be a string`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(`${where}: size must be a non-negative integer`);
  }
  if (artifactType !== undefined && typeof artifactType !== 'string') throw invalid(`${where}: artifactType must be a string`);
  if (urls !== undefined && (!Array.isArray(urls) || !urls.every((u) => typeof u === 'string'))) {
    throw invalid(`${where}: urls must be a list of strings`);
  }
  let parsed: Digest;
  try {
    parsed = parseDigest(digest);
  } catch (err) {
    throw new RegistryError('DIGEST_INVALID', `${where}: ${(err as Error).message}`, { detail: { digest } });
  }
  return {
    mediaType,
    digest,
    size,
    artifactType: artifactType as string | undefined,
    annotations: checkAnnotations(v.annotations, where),
    urls: urls as string[] | undefined,
    ...(v.platform !== undefined ? { platform: v.platform } : {}),
    parsed,
  };
}

/**
 * The deepest nesting of objects and arrays a manifest may have. Real manifests nest five or six levels (index,
 * descriptor, platform, features); the bound is there because parsing a document nested a million levels deep holds
 * the event loop for seconds.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * Measures how deep JSON text nests objects and arrays, fed in chunks as they arrive (so a body can be refused
 * before it is complete). A linear pass counting brackets outside strings, honouring backslash escapes across chunk
 * boundaries; it does not check the rest of the syntax, which JSON.parse does afterwards on text known to be shallow.
 */
export class JsonDepthGauge {
  private depth = 0;
  private inString = false;
  private escaped = false;
  constructor(private readonly max = MAX_JSON_DEPTH) {}

  /** Take the next bytes; true once the nesting has gone deeper than the limit. */
  push(chunk: Uint8Array): boolean {
    let { depth, inString, escaped } = this;
    const max = this.max;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (inString) {
        if (escaped) escaped = false;
        else if (c === 0x5c /* \ */) escaped = true;
        else if (c === 0x22 /* " */) inString = false;
      } else if (c === 0x22) {
        inString = true;
      } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
        if (++depth > max) {
          this.depth = depth;
          return true;
        }
      } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
        depth--;
      }
    }
    this.depth = depth;
    this.inString = inString;
    this.escaped = escaped;
    return false;
  }
}

/** Whether JSON text nests objects and arrays deeper than `max`. */
export function jsonTooDeep(content: Uint8Array, max = MAX_JSON_DEPTH): boolean {
  return new JsonDepthGauge(max).push(content);
}

/** MANIFEST_INVALID for a manifest nested deeper than the limit. */
export function tooDeep(): RegistryError {
  return invalid(`manifest nests objects and arrays deeper than ${MAX_JSON_DEPTH} levels`, { maxDepth: MAX_JSON_DEPTH });
}

/**
 * JSON.parse of manifest bytes, refusing documents nested deeper than `maxDepth` (MAX_JSON_DEPTH) first
 * (MANIFEST_INVALID). Only a process that serves no requests (the garbage collector) passes Infinity.
 */
export function parseManifestJson(content: Buffer, maxDepth = MAX_JSON_DEPTH): unknown {
  if (maxDepth !== Infinity && jsonTooDeep(content, maxDepth)) throw tooDeep();
  try {
    return JSON.parse(content.toString('utf8'));
  } catch (err) {
    throw invalid(`manifest is not valid JSON: ${(err as Error).message}`);
  }
}

/** The media type without parameters, lower-cased; undefined when absent. */
export function baseContentType(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const t = header.split(';')[0]!.trim().toLowerCase();
  return t === '' ? undefined : t;
}

/**
 * Parse and validate a manifest pushed with `contentType`.
 *
 * The media type is the body's `mediaType` when present (and then the Content-Type must agree with it);
 * otherwise the Content-Type when it names a manifest type; otherwise it is inferred from the structure, as
 * registry:2 does for OCI manifests and indexes written without `mediaType`. `options.maxDepth` bounds the nesting
 * (MAX_JSON_DEPTH unless given).
 */
export function parseManifest(content: Buffer, contentType: string | undefined, options: { maxDepth?: number } = {}): ParsedManifest {
  const doc = parseManifestJson(content, options.maxDepth);
  if (!isObject(doc)) throw invalid('manifest must be a JSON object');

  const declared = doc.mediaType;
  if (declared !== undefined && typeof declared !== 'string') throw invalid('mediaType must be a string');
  const ct = baseContentType(contentType);
  if (declared === MediaType.DOCKER_SCHEMA1 || declared === MediaType.DOCKER_SCHEMA1_SIGNED ||
      ct === MediaType.DOCKER_SCHEMA1 || ct === MediaType.DOCKER_SCHEMA1_SIGNED || doc.schemaVersion === 1) {
    throw invalid('Docker schema 1 manifests are not supported; push schema 2 or OCI');
  }

  let mediaType: string;
  if (declared) {
    if (ct && MANIFEST_MEDIA_TYPES.includes(ct) && ct !== declared) {
      throw invalid(`mediaType "${declared}" does not match Content-Type "${ct}"`, { mediaType: declared, contentType: ct });
    }
    mediaType = declared;
  } else if (ct && MANIFEST_MEDIA_TYPES.includes(ct)) {
    mediaType = ct;
  } else if (Array.isArray(doc.manifests)) {
    mediaType = MediaType.OCI_INDEX;
  } else if (isObject(doc.config)) {
    mediaType = MediaType.OCI_MANIFEST;
  } else {
    throw invalid('cannot tell the manifest type: no mediaType, no manifest Content-Type');
  }
  if (!MANIFEST_MEDIA_TYPES.includes(mediaType)) {
    throw invalid(`unsupported manifest media type "${mediaType}"`, { mediaType, supported: MANIFEST_MEDIA_TYPES });
  }
  if (doc.schemaVersion !== 2) throw invalid('schemaVersion must be 2');
  if ((mediaType === MediaType.DOCKER_MANIFEST || mediaType === MediaType.DOCKER_MANIFEST_LIST) && !declared) {
    throw invalid('Docker manifests must declare their mediaType');
  }

  const artifactType = doc.artifactType;
  if (artifactType !== undefined && typeof artifactType !== 'string') throw invalid('artifactType must be a string');
  const annotations = checkAnnotations(doc.annotations, 'manifest');
  const subject = doc.subject === undefined ? undefined : checkDescriptor(doc.subject, 'subject');

  if (isIndexType(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw invalid('an index must have a manifests list');
    const manifests = doc.manifests.map((m, i) => checkDescriptor(m, `manifests[${i}]`));
    return {
      mediaType,
      blobs: [],
      manifests: manifests.map((m) => m.parsed),
      descriptors: [],
      children: manifests,
      subject,
      artifactType: artifactType as string | undefined,
      annotations,
      emptyConfig: false,
    };
  }

  if (Array.isArray(doc.manifests)) throw invalid('an image manifest must not have a manifests list');
  const config = checkDescriptor(doc.config, 'config');
  if (doc.layers !== undefined && !Array.isArray(doc.layers)) throw invalid('layers must be a list');
  const layers = ((doc.layers as unknown[] | undefined) ?? []).map((l, i) => checkDescriptor(l, `layers[${i}]`));
  const blobs = [config.parsed];
  for (const layer of layers) {
    if (!(isNonDistributable(layer.mediaType) && (layer.urls?.length ?? 0) > 0)) blobs.push(layer.parsed);
  }
  return {
    mediaType,
    blobs,
    manifests: [],
    descriptors: [{ ...config, where: 'config' }, ...layers.map((l, i) => ({ ...l, where: `layers[${i}]` }))],
    children: [],
    subject,
    artifactType: (artifactType as string | undefined) ?? config.mediaType,
    annotations,
    emptyConfig: config.digest === EMPTY_JSON_DIGEST && config.size === EMPTY_JSON.byteLength,
  };
}

/**
 * The media type to serve stored bytes as on a manifest GET, or undefined when the bytes are not a manifest this
 * registry serves. The bytes reach this point through a revision link, or through a legacy `_layers` link that may
 * just as well name a plain blob a client uploaded, so nothing in them is trusted: they must be shallow JSON, and
 * either a schema 2 / OCI manifest or index of an accepted media type with the structure of that kind (`manifests`
 * for an index, `config` for an image manifest), or a Docker schema 1 manifest (old registry:2 data). Whatever
 * `mediaType` the bytes declare is never echoed unless it is one of those types, so a blob saying `text/html` is
 * not served as a page.
 */
export function servableMediaType(content: Buffer): string | undefined {
  let doc: unknown;
  try {
    doc = parseManifestJson(content);
  } catch {
    return undefined;
  }
  if (!isObject(doc)) return undefined;
  const declared = doc.mediaType;
  if (declared !== undefined && typeof declared !== 'string') return undefined;
  if (doc.schemaVersion === 1) {
    if (!Array.isArray(doc.fsLayers)) return undefined;
    const mediaType = doc.signatures ? MediaType.DOCKER_SCHEMA1_SIGNED : MediaType.DOCKER_SCHEMA1;
    if (declared !== undefined && declared !== MediaType.DOCKER_SCHEMA1 && declared !== MediaType.DOCKER_SCHEMA1_SIGNED) return undefined;
    return mediaType;
  }
  if (doc.schemaVersion !== 2) return undefined;
  const mediaType = declared || (Array.isArray(doc.manifests) ? MediaType.OCI_INDEX : MediaType.OCI_MANIFEST);
  if (!MANIFEST_MEDIA_TYPES.includes(mediaType)) return undefined;
  if (isIndexType(mediaType) ? !Array.isArray(doc.manifests) : !isObject(doc.config)) return undefined;
  return mediaType;
}
