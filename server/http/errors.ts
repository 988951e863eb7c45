/**
 * The one mapping from an error to an HTTP response: the OCI code table with each code's status, and the status and
 * headers each situation of server/registry/errors.ts is answered with. Nothing below the HTTP layer names a status
 * or a header; everything that answers an error (server/http/app.ts) goes through `errorResponse`.
 */
import { InvalidPathError, StorageError, storageCondition } from '../../storage-drivers/driver.js';
import { RegistryError, type ErrorCode, type ErrorReason } from '../registry/errors.js';

/** The status each code is answered with, unless its reason says otherwise (the spec's table, and registry:2's). */
export const ERROR_STATUS: Readonly<Record<ErrorCode, number>> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  PAGINATION_NUMBER_INVALID: 400,
  UNKNOWN: 500,
  UNAVAILABLE: 503,
};

/** The `Range` header value for an upload holding `offset` bytes (registry:2 and the spec: `0-<last byte>`). */
export function uploadRangeHeader(offset: number): string {
  return `0-${Math.max(offset - 1, 0)}`;
}

/**
 * The token endpoint's error codes (RFC 6749 §5.2), and `temporarily_unavailable` (§4.1.2.1) for a client locked out
 * by the password throttle.
 */
export type OAuthErrorCode =
  | 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'unauthorized_client' | 'unsupported_grant_type'
  | 'invalid_scope' | 'temporarily_unavailable' | 'server_error';

/**
 * An error of the token endpoint (server/http/token.ts), answered as OAuth2 prescribes:
 * `{"error","error_description"}`, 400 unless its reason says otherwise (401 with a challenge for refused client
 * credentials, 413 for a body over the limit, 405 for a method the endpoint does not take); `server_error`, the
 * endpoint's own failure, is 500.
 */
export class OAuthError extends Error {
  readonly error: OAuthErrorCode;
  readonly reason: ErrorReason | undefined;

  constructor(error: OAuthErrorCode, description: string, reason?: ErrorReason, options?: { cause?: unknown }) {
    super(description, options);
    this.name = 'OAuthError';
    this.error = error;
    this.reason = reason;
  }
}

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
  /** The code it answers with, for the log. */
  code: string;
  /** The `code` label of `wharf_auth_failures_total` when this refuses credentials or access. */
  authFailure?: 'UNAUTHORIZED' | 'DENIED' | 'TOOMANYREQUESTS';
}

/** The status and headers a reason is answered with; undefined status means the code's own. */
function answerFor(reason: ErrorReason | undefined): { status?: number; headers: Record<string, string> } {
  if (reason === undefined) return { headers: {} };
  switch (reason.kind) {
    case 'upload-out-of-order':
    case 'upload-busy':
      return { status: 416, headers: { Range: uploadRangeHeader(reason.offset) } };
    case 'content-range-invalid':
      return { status: 416, headers: {} };
    case 'range-not-satisfiable':
      return { status: 416, headers: { 'Content-Range': `bytes */${reason.size}` } };
    case 'body-too-large':
      return { status: 413, headers: {} };
    case 'too-many-tags':
      return { status: 414, headers: {} };
    case 'method-not-allowed':
      return { status: 405, headers: { Allow: reason.allowed.join(', ') } };
    case 'no-such-endpoint':
      return { status: 404, headers: {} };
    case 'parameter-repeated':
    case 'invalid-request':
      return { status: 400, headers: {} };
    case 'authentication-required':
      return { status: 401, headers: { 'WWW-Authenticate': reason.challenge } };
    case 'rate-limited':
      return { status: 429, headers: {} };
    case 'storage-failed':
      return { status: 503, headers: {} };
    case 'upstream-failed':
      return { status: 502, headers: {} };
    case 'policy-refused':
      return { headers: {} };
  }
}

/** Any thrown value as the registry error it is answered with (storage failures and bugs included). */
export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  if (err instanceof InvalidPathError) return new RegistryError('NAME_INVALID', 'invalid name', { detail: {} });
  if (err instanceof StorageError) return new RegistryError('UNKNOWN', storageMessage(err), { reason: { kind: 'storage-failed' } });
  return new RegistryError('UNKNOWN', 'internal server error');
}

/**
 * What a storage failure is answered with. A full or read-only filesystem is named, so that the client (and the
 * operator reading its output) knows why pushes fail and that reads go on; no path or other detail goes out.
 */
function storageMessage(err: StorageError): string {
  switch (storageCondition(err)) {
    case 'full':
      return 'storage backend error: no space left on the storage';
    case 'read-only':
      return 'storage backend error: the storage is read-only';
    default:
      return 'storage backend error';
  }
}

/**
 * What the token endpoint threw, as its OAuth2 answer: its own errors as they are, anything else (a bug, a failing
 * dependency) as `server_error`, whose text stays in the log (the cause) and out of the body.
 */
export function asOAuthError(err: unknown): unknown {
  if (err instanceof OAuthError) return err;
  return new OAuthError('server_error', 'internal server error', undefined, { cause: err });
}

/** The status a registry error is answered with. */
export function errorStatus(err: RegistryError): number {
  return answerFor(err.reason).status ?? ERROR_STATUS[err.code];
}

const AUTH_FAILURES = new Set<string>(['UNAUTHORIZED', 'DENIED', 'TOOMANYREQUESTS']);

/** The OAuth2 answer of the token endpoint. */
function oauthResponse(err: OAuthError): ErrorResponse {
  const answer = answerFor(err.reason);
  const status = answer.status ?? (err.error === 'server_error' ? 500 : 400);
  const authFailure = err.error === 'invalid_client' || err.error === 'invalid_grant' ? 'UNAUTHORIZED'
    : err.error === 'temporarily_unavailable' ? 'TOOMANYREQUESTS' : undefined;
  return {
    status,
    // RFC 6749 §5.1 asks this of the token endpoint's answers; its errors are not to be cached either.
    headers: { ...answer.headers, 'Cache-Control': 'no-store' },
    body: { error: err.error, error_description: err.message },
    code: err.error,
    authFailure,
  };
}

/**
 * The response for anything thrown while answering: the OAuth2 body for the token endpoint's errors, else the spec's
 * JSON envelope `{"errors":[{"code","message","detail"}]}` (5xx for the unexpected).
 */
export function errorResponse(thrown: unknown): ErrorResponse {
  if (thrown instanceof OAuthError) return oauthResponse(thrown);
  const err = toRegistryError(thrown);
  const answer = answerFor(err.reason);
  return {
    status: answer.status ?? ERROR_STATUS[err.code],
    headers: answer.headers,
    body: err.toJSON(),
    code: err.code,
    authFailure: AUTH_FAILURES.has(err.code) && err.reason?.kind !== 'policy-refused' ? (err.code as ErrorResponse['authFailure']) : undefined,
  };
}
