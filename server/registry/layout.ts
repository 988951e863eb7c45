/**
 * The storage layout: every driver path the registry reads or writes is built here, and nowhere else.
 *
 * It is registry:2's tree, so a data directory or bucket written by registry:2 is served unchanged and one written
 * by Wharf is readable by registry:2:
 *
 *   /docker/registry/v2/
 *     blobs/<alg>/<hex[0:2]>/<hex>/data                                 content (blobs and manifests), written once
 *     repositories/<name>/
 *       _layers/<alg>/<hex>/link                                        this repository may serve this blob
 *       _manifests/revisions/<alg>/<hex>/link                           a manifest pushed to this repository
 *       _manifests/tags/<tag>/current/link                              the tag's current manifest digest
 *       _manifests/tags/<tag>/index/<alg>/<hex>/link                    every digest the tag ever pointed to
 *       _manifests/tags/<tag>/wharf-origin                              Wharf: a mirrored tag's upstream and remote name
 *                                                                       (JSON; server/proxy/mirror.ts)
 *       _uploads/<id>/data                                              bytes of an in-flight upload
 *       _uploads/<id>/startedat                                         RFC 3339 start time of that upload
 *       _uploads/<id>/claims/<offset>                                   Wharf: the request writing at that offset
 *       _uploads/<id>/ends/<offset>                                     Wharf: a write ended there (may be resumed)
 *       _uploads/<id>/verified/<token>                                  Wharf: the re-hashed copy being committed
 *       _uploads/<id>/hashstates/<alg>/<offset>                         (registry:2 only; Wharf does not write these)
 *       _referrers/<alg>/<subject hex>/<alg>/<referrer hex>/link        Wharf: manifests whose `subject` is the digest
 *     _wharf/gc/                                                        Wharf: the garbage collector's state (server/gc/)
 *       lock                                                            JSON LockInfo of the run holding the lock
 *       live/blobs/<alg>/<hex>                                          a server used this digest while a lock was held
 *       live/repositories/<name>/marker                                 a server wrote into <name> meanwhile
 *       trash/<run id>/<path below v2>                                  a file the sweeper moved aside (to delete or
 *       trash/<run id>/blobs/<alg>/<hex>                                restore); a blob's data is kept flat there
 *       metrics.prom                                                    Prometheus text of the last run
 *     _wharf/proxy/lastpull/<name>/<alg>/<hex>                         Wharf: when the mirror last served this digest
 *                                                                       for <name> (ISO 8601; server/proxy/mirror.ts)
 *     _wharf/pulls/<name>/_tags/<tag>                                  Wharf: <name>:<tag> was pulled (time: the file's
 *     _wharf/pulls/<name>/_digests/<alg>/<hex>                         modification time; ISO 8601 inside; written in
 *                                                                       batches; server/policies/pulls.ts, retention)
 *     _wharf/pulls/_since                                              Wharf: pulls are recorded since its mtime
 *     _wharf/ui/session-key                                            Wharf: the web UI's cookie signing key (server/ui/session.ts)
 *
 * Every `link` file holds a digest string (`sha256:…`). registry:2 skips directories whose names start with `_` when
 * it walks for repositories, so `_referrers` is invisible to it. Names and digests reaching these functions have
 * been validated by ./reference.ts; the storage driver validates the final paths again.
 */
import type { Digest } from './reference.js';

export const ROOT = '/docker/registry/v2';
export const BLOBS_ROOT = `${ROOT}/blobs`;
export const REPOSITORIES_ROOT = `${ROOT}/repositories`;
/** Wharf-only state of the garbage collector; registry:2 reads only `blobs/` and `repositories/`. */
export const GC_ROOT = `${ROOT}/_wharf/gc`;
export const GC_LOCK_PATH = `${GC_ROOT}/lock`;
export const GC_METRICS_PATH = `${GC_ROOT}/metrics.prom`;
export const GC_LIVE_ROOT = `${GC_ROOT}/live`;
export const GC_TRASH_ROOT = `${GC_ROOT}/trash`;
/** Wharf-only records of the pull-through cache: last-pull times for TTL expiry (docs/mirror.md). */
export const PROXY_LAST_PULL_ROOT = `${ROOT}/_wharf/proxy/lastpull`;
/** Wharf-only last-pull records of every repository, read by retention (`keep.pulledwithin`; docs/policies.md). */
export const PULLS_ROOT = `${ROOT}/_wharf/pulls`;
/**
 * Wharf: since when pulls are recorded (its modification time: created once, by the first server that recorded
 * with a `pulledwithin` rule in force). Retention trusts "not pulled within D" only for a window after it.
 */
export const PULLS_SINCE_PATH = `${PULLS_ROOT}/_since`;
/** Wharf: the web UI's session signing key, shared by every replica through storage. */
export const UI_SESSION_KEY_PATH = `${ROOT}/_wharf/ui/session-key`;

export function blobDir(d: Digest): string {
  return `${BLOBS_ROOT}/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}`;
}

export function blobDataPath(d: Digest): string {
  return `${blobDir(d)}/data`;
}

export function repositoryPath(name: string): string {
  return `${REPOSITORIES_ROOT}/${name}`;
}

export function layersPath(name: string): string {
  return `${repositoryPath(name)}/_layers`;
}

export function layerLinkPath(name: string, d: Digest): string {
  return `${layersPath(name)}/${d.algorithm}/${d.hex}/link`;
}

export function manifestsPath(name: string): string {
  return `${repositoryPath(name)}/_manifests`;
}

export function revisionsPath(name: string): string {
  return `${manifestsPath(name)}/revisions`;
}

export function revisionLinkPath(name: string, d: Digest): string {
  return `${revisionsPath(name)}/${d.algorithm}/${d.hex}/link`;
}

export function revisionDir(name: string, d: Digest): string {
  return `${revisionsPath(name)}/${d.algorithm}/${d.hex}`;
}

export function tagsPath(name: string): string {
  return `${manifestsPath(name)}/tags`;
}

export function tagPath(name: string, tag: string): string {
  return `${tagsPath(name)}/${tag}`;
}

export function tagCurrentLinkPath(name: string, tag: string): string {
  return `${tagPath(name, tag)}/current/link`;
}

/** Wharf: where the mirror records which upstream and remote name a cached tag came from. */
export function tagOriginPath(name: string, tag: string): string {
  return `${tagPath(name, tag)}/wharf-origin`;
}

export function tagIndexLinkPath(name: string, tag: string, d: Digest): string {
  return `${tagPath(name, tag)}/index/${d.algorithm}/${d.hex}/link`;
}

export function uploadsPath(name: string): string {
  return `${repositoryPath(name)}/_uploads`;
}

export function uploadDir(name: string, id: string): string {
  return `${uploadsPath(name)}/${id}`;
}

export function uploadDataPath(name: string, id: string): string {
  return `${uploadDir(name, id)}/data`;
}

export function uploadStartedAtPath(name: string, id: string): string {
  return `${uploadDir(name, id)}/startedat`;
}

/** Claims of the upload's writes, one file per offset a request wrote (or finished) at. */
export function uploadClaimsDir(name: string, id: string): string {
  return `${uploadDir(name, id)}/claims`;
}

export function uploadClaimPath(name: string, id: string, offset: number): string {
  return `${uploadClaimsDir(name, id)}/${offset}`;
}

/** Marks an offset where a write of the upload ended: the only offsets (besides 0) a write may start at. */
export function uploadEndPath(name: string, id: string, offset: number): string {
  return `${uploadDir(name, id)}/ends/${offset}`;
}

/** A private copy of the upload's bytes, written and hashed by one request before it becomes the blob. */
export function uploadVerifiedPath(name: string, id: string, token: string): string {
  return `${uploadDir(name, id)}/verified/${token}`;
}

export function referrersRoot(name: string): string {
  return `${repositoryPath(name)}/_referrers`;
}

export function referrersPath(name: string, subject: Digest): string {
  return `${referrersRoot(name)}/${subject.algorithm}/${subject.hex}`;
}

export function referrerLinkPath(name: string, subject: Digest, referrer: Digest): string {
  return `${referrersPath(name, subject)}/${referrer.algorithm}/${referrer.hex}/link`;
}

/** The mirror's last-pull records of `name`, one per `<alg>/<hex>` below. */
export function lastPullDir(name: string): string {
  return `${PROXY_LAST_PULL_ROOT}/${name}`;
}

/** The last-pull records of `name` (its nested repositories have their own folders below it). */
export function pullsDir(name: string): string {
  return `${PULLS_ROOT}/${name}`;
}

/** When `name:tag` was last pulled (by tag). Repository components never start with `_`, so `_tags` is no repository. */
export function pullTagPath(name: string, tag: string): string {
  return `${pullsDir(name)}/_tags/${tag}`;
}

/** When `name@digest` was last pulled (by tag or by digest). */
export function pullDigestPath(name: string, d: Digest): string {
  return `${pullsDir(name)}/_digests/${d.algorithm}/${d.hex}`;
}

/** The live-set markers of one digest algorithm (a marker's name is the digest's hex). */
export function gcLiveBlobsDir(algorithm: string): string {
  return `${GC_LIVE_ROOT}/blobs/${algorithm}`;
}

export function gcLiveBlobPath(d: Digest): string {
  return `${gcLiveBlobsDir(d.algorithm)}/${d.hex}`;
}

export function gcLiveRepositoryPath(name: string): string {
  return `${GC_LIVE_ROOT}/repositories/${name}/marker`;
}

export function gcTrashRunDir(runId: string): string {
  return `${GC_TRASH_ROOT}/${runId}`;
}

const BLOB_DATA = new RegExp(`^${BLOBS_ROOT}/([a-z0-9]+)/[0-9a-f]{2}/([0-9a-f]+)/data$`);
const TRASHED_BLOB = /^blobs\/([a-z0-9]+)\/([0-9a-f]+)$/;

/** Where run `runId` keeps `path` while it decides: a blob's data flat per algorithm, anything else at its path. */
export function gcTrashPath(runId: string, path: string): string {
  const blob = BLOB_DATA.exec(path);
  return blob ? `${gcTrashRunDir(runId)}/blobs/${blob[1]}/${blob[2]}` : `${gcTrashRunDir(runId)}/${path.slice(ROOT.length + 1)}`;
}

/** Where a file found at `inRun` below a run's trash folder came from (the inverse of gcTrashPath). */
export function gcTrashOrigin(inRun: string): string {
  const blob = TRASHED_BLOB.exec(inRun);
  return blob ? `${BLOBS_ROOT}/${blob[1]}/${blob[2]!.slice(0, 2)}/${blob[2]}/data` : `${ROOT}/${inRun}`;
}

/** The last path component. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Whether the path's last component is `name`, without making a string of it (for listings of thousands). */
export function isNamed(path: string, name: string): boolean {
  return path.endsWith(name) && (path.length === name.length || path.charCodeAt(path.length - name.length - 1) === 0x2f);
}

/** Whether the path's last component starts with `_` (`_layers`, `_manifests`, `_uploads`), without making a string of it. */
export function isUnderscored(path: string): boolean {
  return path.charCodeAt(path.lastIndexOf('/') + 1) === 0x5f;
}

/** The path without its last component ('/' for a top-level one). */
export function parentOf(path: string): string {
  return path.slice(0, path.lastIndexOf('/')) || '/';
}
