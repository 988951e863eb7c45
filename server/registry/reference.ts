/**
 * The grammars of the OCI Distribution and Image specs: repository names, tags and digests, plus hashing.
 *
 * Everything that reaches storage as part of a path goes through one of these validators first, so a name or a
 * digest can never smuggle `..`, `/` or other path syntax into the storage layer.
 */
import { createHash, type Hash } from 'node:crypto';
import { isValidRepositoryName } from '../../auth/repository-name.js';
import { RegistryError } from './errors.js';

/** The repository name grammar is owned by auth/ (the token server checks names too) and shared from there. */
export { isValidRepositoryName, MAX_NAME_LENGTH, NAME_PATTERN } from '../../auth/repository-name.js';

const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/** image-spec descriptor.md: algorithm and encoded parts of a digest. */
const DIGEST_RE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

export type DigestAlgorithm = 'sha256' | 'sha512';

const ALGORITHMS: Record<DigestAlgorithm, RegExp> = {
  sha256: /^[a-f0-9]{64}$/,
  sha512: /^[a-f0-9]{128}$/,
};

export function isDigestAlgorithm(alg: string): alg is DigestAlgorithm {
  return Object.hasOwn(ALGORITHMS, alg);
}

export function validateRepositoryName(name: string): string {
  if (!isValidRepositoryName(name)) {
    throw new RegistryError('NAME_INVALID', 'invalid repository name', { detail: { name } });
  }
  return name;
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export function validateTag(tag: string): string {
  if (!isValidTag(tag)) {
    throw new RegistryError('MANIFEST_INVALID', 'invalid tag', { detail: { tag } });
  }
  return tag;
}

/** A parsed, validated digest of a supported algorithm. */
export interface Digest {
  algorithm: DigestAlgorithm;
  /** Lower-case hex. */
  hex: string;
  /** `algorithm:hex` */
  value: string;
}

/** True when `s` has the general digest syntax (any algorithm). */
export function looksLikeDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}

/**
 * Parse a digest of a supported algorithm. Anything else (bad syntax, an unknown algorithm, the wrong length or
 * upper-case hex for sha256/sha512) is DIGEST_INVALID.
 */
export function parseDigest(s: string): Digest {
  const m = DIGEST_RE.exec(s);
  if (!m) throw new RegistryError('DIGEST_INVALID', 'invalid digest', { detail: { digest: s } });
  const algorithm = m[1]!;
  const hex = m[2]!;
  if (!isDigestAlgorithm(algorithm)) {
    throw new RegistryError('DIGEST_INVALID', `unsupported digest algorithm "${algorithm}"`, {
      detail: { digest: s, supported: Object.keys(ALGORITHMS) },
    });
  }
  if (!ALGORITHMS[algorithm].test(hex)) {
    throw new RegistryError('DIGEST_INVALID', `invalid ${algorithm} digest`, { detail: { digest: s } });
  }
  return { algorithm, hex, value: s };
}

export function tryParseDigest(s: string): Digest | undefined {
  try {
    return parseDigest(s);
  } catch {
    return undefined;
  }
}

export function newHash(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(data: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

/** `<tag-or-digest>`: a digest when it has digest syntax, else it must be a tag. */
export type Reference = { kind: 'digest'; digest: Digest } | { kind: 'tag'; tag: string };

export function parseReference(ref: string): Reference {
  if (ref.includes(':')) return { kind: 'digest', digest: parseDigest(ref) };
  if (!isValidTag(ref)) {
    throw new RegistryError('MANIFEST_INVALID', 'invalid tag', { detail: { tag: ref } });
  }
  return { kind: 'tag', tag: ref };
}
