/**
 * OCI error codes, registered once with their default HTTP status and message.
 *
 * The registry layer throws `RegistryError` with one of these codes; the HTTP layer turns it into the spec's JSON
 * envelope `{"errors":[{"code","message","detail"}]}` with the status found here (or the one the error carries,
 * where one situation needs a different status, such as 416 for an out-of-order chunk).
 */

export const ERROR_CODES = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  /** Not in the spec's table, which governs 4xx bodies only: the server's own failures (5xx), as registry:2. */
  UNKNOWN: { status: 500, message: 'unknown error' },
  /** registry:2's answer while a health check fails (5xx, outside the spec's table). */
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface RegistryErrorOptions {
  /** Overrides the code's default HTTP status. */
  status?: number;
  /** Arbitrary JSON giving the client what it needs to fix the request. */
  detail?: unknown;
  /** Extra response headers (e.g. `Range` on a 416, `Allow` on a 405). */
  headers?: Record<string, string>;
  cause?: unknown;
}

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, message?: string, options: RegistryErrorOptions = {}) {
    super(message ?? ERROR_CODES[code].message, { cause: options.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.status = options.status ?? ERROR_CODES[code].status;
    this.detail = options.detail;
    this.headers = options.headers ?? {};
  }

  /** The JSON body the spec prescribes. */
  toJSON(): { errors: { code: ErrorCode; message: string; detail?: unknown }[] } {
    return { errors: [{ code: this.code, message: this.message, detail: this.detail ?? {} }] };
  }
}

export function isRegistryError(err: unknown): err is RegistryError {
  return err instanceof RegistryError;
}
