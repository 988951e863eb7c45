/**
 * Manifest validation on push (`validation.manifests` of the configuration): which URLs a manifest's layers may
 * carry, and which children of an index must already be in the repository.
 *
 * Pure decisions over a parsed manifest and the rules in force (`PolicyRules.manifests`, read by the caller at the
 * moment of the push); the existence checks themselves stay in the manifest store.
 *
 * Foreign-layer URLs follow registry:2: every URL must be an absolute http(s) URL without a fragment, match one
 * `allow` expression and no `deny` expression (with no `allow` list, no URL is accepted); `validation.disabled`
 * drops the allow/deny lists but keeps the syntax check. A Docker foreign layer must carry URLs. Index children
 * follow distribution v3's `indexes.platforms`.
 */
import { RegistryError } from '../registry/errors.js';
import { isDockerForeign, type ParsedManifest } from '../registry/manifest-format.js';
import type { Digest } from '../registry/reference.js';
import type { ManifestValidation } from './rules.js';
import type { PlatformConfig } from '../config/index.js';

/** What a push must find in the repository before the manifest is stored. */
export interface RequiredContent {
  /** Config and layer blobs that must be linked in the repository. */
  blobs: Digest[];
  /** Child manifests that must be revisions of the repository. */
  manifests: Digest[];
}

function refused(where: string, url: string, digest: string, why: string): RegistryError {
  return new RegistryError('MANIFEST_INVALID', `${where}: URL ${JSON.stringify(url)} ${why}`, {
    detail: { url, descriptor: where, digest, reason: why },
  });
}

/**
 * Why a layer URL is refused under `urls` (undefined when `validation.disabled`), or undefined when it is accepted.
 */
export function urlProblem(url: string, urls: ManifestValidation['urls']): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'is not an absolute URL';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `has scheme ${parsed.protocol.replace(/:$/, '')}; only http and https are accepted`;
  if (parsed.hash !== '') return 'has a fragment (#...), which layer URLs may not carry';
  if (!urls) return undefined;
  if (urls.allow.length === 0) return 'is not allowed: validation.manifests.urls.allow is empty, so no layer URL is accepted';
  if (!urls.allow.some((re) => re.test(url))) return 'is not allowed: it matches no validation.manifests.urls.allow expression';
  const denied = urls.deny.find((re) => re.test(url));
  if (denied) return `is denied by validation.manifests.urls.deny expression ${JSON.stringify(denied.source)}`;
  return undefined;
}

/** Whether an index child's descriptor platform is one of `list` (os and architecture equal; variant when given). */
export function platformListed(platform: unknown, list: readonly PlatformConfig[]): boolean {
  if (typeof platform !== 'object' || platform === null) return false;
  const p = platform as { os?: unknown; architecture?: unknown; variant?: unknown };
  return list.some((e) => p.os === e.os && p.architecture === e.architecture && (e.variant === undefined || p.variant === e.variant));
}

/**
 * Checks a pushed manifest against the validation rules and says what must exist in the repository: MANIFEST_INVALID
 * (naming the URL, with it in `detail`) for a layer URL the rules refuse or a Docker foreign layer without URLs.
 * `rules` absent: no configuration (tests, tools), treated as the defaults with validation disabled.
 */
export function validateManifest(parsed: ParsedManifest, rules: ManifestValidation | undefined): RequiredContent {
  for (const d of parsed.descriptors) {
    if (isDockerForeign(d.mediaType) && !d.urls?.length) {
      throw new RegistryError('MANIFEST_INVALID', `${d.where}: a foreign layer (${d.mediaType}) must carry urls`, {
        detail: { descriptor: d.where, digest: d.digest, mediaType: d.mediaType },
      });
    }
    for (const url of d.urls ?? []) {
      const why = urlProblem(url, rules?.urls);
      if (why) throw refused(d.where, url, d.digest, why);
    }
  }
  const indexes = rules?.indexes ?? { platforms: 'all', platformList: [] };
  let manifests: Digest[];
  if (indexes.platforms === 'none') manifests = [];
  else if (indexes.platforms === 'list') manifests = parsed.children.filter((c) => platformListed(c.platform, indexes.platformList)).map((c) => c.parsed);
  else manifests = parsed.manifests;
  return { blobs: parsed.blobs, manifests };
}
