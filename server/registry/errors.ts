/**
 * The errors the registry throws: what went wrong, with its data, and never an HTTP status or header.
 *
 * A `RegistryError` names an OCI (or registry:2) error code, a message and a JSON `detail` for the client. Where the
 * code alone does not say what happened (an out-of-order chunk and a malformed upload are both BLOB_UPLOAD_INVALID)
 * it also carries a `reason`: one of the situations below, with the data an answer needs (the upload's offset, the
 * blob's size). The HTTP layer (server/http/errors.ts) holds the table of statuses and the one mapping from an error
 * to a response.
 */

/** Each code the registry answers with, and its default message. */
export const ERROR_MESSAGES = {
  BLOB_UNKNOWN: 'blob unknown to registry',
  BLOB_UPLOAD_INVALID: 'blob upload invalid',
  BLOB_UPLOAD_UNKNOWN: 'blob upload unknown to registry',
  DIGEST_INVALID: 'provided digest did not match uploaded content',
  MANIFEST_BLOB_UNKNOWN: 'manifest references a manifest or blob unknown to registry',
  MANIFEST_INVALID: 'manifest invalid',
  MANIFEST_UNKNOWN: 'manifest unknown to registry',
  NAME_INVALID: 'invalid repository name',
  NAME_UNKNOWN: 'repository name not known to registry',
  SIZE_INVALID: 'provided length did not match content length',
  UNAUTHORIZED: 'authentication required',
  DENIED: 'requested access to the resource is denied',
  UNSUPPORTED: 'the operation is unsupported',
  TOOMANYREQUESTS: 'too many requests',
  /** registry:2's code for a bad `n` on a listing (outside the OCI table). */
  PAGINATION_NUMBER_INVALID: 'invalid number of results requested',
  /** The server's own failures (5xx), as registry:2; outside the OCI table, which governs 4xx bodies only. */
  UNKNOWN: 'unknown error',
  /** registry:2's answer while a health check fails (5xx). */
  UNAVAILABLE: 'service unavailable',
} as const;

export type ErrorCode = keyof typeof ERROR_MESSAGES;

/**
 * What happened, where the code does not say it alone. Data only: server/http/errors.ts decides the status and
 * headers each one is answered with.
 */
export type ErrorReason =
  /** A chunk does not start where the upload ends. */
  | { kind: 'upload-out-of-order'; uuid: string; offset: number }
  /** Another request is writing to the upload; it ends at `offset` for now. */
  | { kind: 'upload-busy'; uuid: string; offset: number }
  /** A chunk's `Content-Range` could not be read. */
  | { kind: 'content-range-invalid' }
  /** A `Range` asked of a blob of `size` bytes lies outside it. */
  | { kind: 'range-not-satisfiable'; size: number }
  /** A body larger than the `limit` in bytes this request may carry. */
  | { kind: 'body-too-large'; limit: number }
  /** More tags than one request may name. */
  | { kind: 'too-many-tags'; limit: number }
  /** The path names an endpoint, but not for this method. */
  | { kind: 'method-not-allowed'; allowed: readonly string[] }
  /** No endpoint at this path. */
  | { kind: 'no-such-endpoint' }
  /** A query parameter that may appear once appeared more than once. */
  | { kind: 'parameter-repeated'; parameter: string }
  /** A request the web UI's API cannot read (a malformed body, cursor or parameter): 400 whatever the code. */
  | { kind: 'invalid-request' }
  /** Credentials are missing or refused; `challenge` says how to authenticate (the scheme and its parameters). */
  | { kind: 'authentication-required'; challenge: string }
  /** Too many failed attempts: a throttle refuses this client for now. */
  | { kind: 'rate-limited' }
  /** The storage backend failed. */
  | { kind: 'storage-failed' }
  /** An upstream registry answered something this mirror cannot use. */
  | { kind: 'upstream-failed' }
  /**
   * A content policy refused the request (DENIED: an immutable tag, a quota): the caller's rights are not in question,
   * so it is not counted as an authorization failure.
   */
  | { kind: 'policy-refused'; policy: 'immutabletags' | 'quotas' };

export interface RegistryErrorOptions {
  /** Arbitrary JSON giving the client what it needs to fix the request. */
  detail?: unknown;
  /** What happened, where the code alone does not say it. */
  reason?: ErrorReason;
  cause?: unknown;
}

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly detail: unknown;
  readonly reason: ErrorReason | undefined;

  constructor(code: ErrorCode, message?: string, options: RegistryErrorOptions = {}) {
    super(message ?? ERROR_MESSAGES[code], { cause: options.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.detail = options.detail;
    this.reason = options.reason;
  }

  /** The JSON body the spec prescribes. */
  toJSON(): { errors: { code: ErrorCode; message: string; detail?: unknown }[] } {
    return { errors: [{ code: this.code, message: this.message, detail: this.detail ?? {} }] };
  }
}

export function isRegistryError(err: unknown): err is RegistryError {
  return err instanceof RegistryError;
}
