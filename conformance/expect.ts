/**
 * Assertions for conformance checks. Each throws a CheckFailure whose message says what was expected and what the
 * registry did, prefixed with the request (`PUT /v2/x/manifests/latest → 400`), so a report line is enough to
 * reproduce the problem with curl.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Reply } from './client.js';

export class CheckFailure extends Error {
  override name = 'CheckFailure';
}

export function fail(message: string): never {
  throw new CheckFailure(message);
}

function bodyHint(res: Reply): string {
  return res.body.length ? ` (body: ${JSON.stringify(res.snippet())})` : '';
}

/** The reply's status is one of `statuses`; returns it. */
export function expectStatus(res: Reply, ...statuses: number[]): number {
  if (!statuses.includes(res.status)) {
    fail(`${res.describe()}: expected status ${statuses.join(' or ')}, got ${res.status}${bodyHint(res)}`);
  }
  return res.status;
}

/** The header is present (and equal to `expected` when given); returns its value. */
export function expectHeader(res: Reply, name: string, expected?: string | RegExp): string {
  const value = res.header(name);
  if (value === undefined) {
    fail(`${res.describe()}: expected header ${name}${expected !== undefined ? `: ${expected}` : ''}, but it is missing`);
  }
  if (typeof expected === 'string' && value !== expected) {
    fail(`${res.describe()}: expected header ${name}: ${expected}, got ${name}: ${value}`);
  }
  if (expected instanceof RegExp && !expected.test(value)) {
    fail(`${res.describe()}: expected header ${name} to match ${expected}, got ${name}: ${value}`);
  }
  return value;
}

/** The media type of a Content-Type header, without parameters (`application/json; charset=utf-8` → `application/json`). */
export function mediaTypeOf(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0]!.trim().toLowerCase();
}

export function expectContentType(res: Reply, expected: string): void {
  const got = res.header('content-type');
  if (mediaTypeOf(got) !== expected.toLowerCase()) {
    fail(`${res.describe()}: expected Content-Type ${expected}, got ${got ?? '(none)'}`);
  }
}

export function expectBody(res: Reply, expected: Uint8Array): void {
  if (!res.body.equals(expected)) {
    const got = res.body.length <= 200 ? JSON.stringify(res.text()) : `${res.body.length} bytes`;
    const want = expected.length <= 200 ? JSON.stringify(Buffer.from(expected).toString('utf8')) : `${expected.length} bytes`;
    fail(`${res.describe()}: body differs from what was expected: expected ${want}, got ${got}`);
  }
}

export function expectEmptyBody(res: Reply): void {
  if (res.body.length !== 0) fail(`${res.describe()}: expected no body, got ${res.body.length} bytes${bodyHint(res)}`);
}

export function expectEqual<T>(actual: T, expected: T, what: string): void {
  if (!isDeepStrictEqual(actual, expected)) {
    fail(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

export function expectTrue(condition: unknown, message: string): asserts condition {
  if (!condition) fail(message);
}

export interface ErrorEnvelope {
  errors: { code: string; message?: string; detail?: unknown }[];
}

/**
 * The body is the spec's JSON error envelope ("Error Codes"): `{"errors":[{"code","message","detail"}]}`, every code
 * uppercase letters and underscores, message a string when present. Returns the parsed envelope.
 */
export function expectErrorEnvelope(res: Reply): ErrorEnvelope {
  let parsed: unknown;
  try {
    parsed = JSON.parse(res.text());
  } catch {
    fail(`${res.describe()}: expected a JSON error envelope {"errors":[…]}, got ${JSON.stringify(res.snippet()) || 'an empty body'}`);
  }
  const errors = (parsed as { errors?: unknown })?.errors;
  if (!Array.isArray(errors) || errors.length === 0) {
    fail(`${res.describe()}: expected a non-empty "errors" array in the error body, got ${JSON.stringify(res.snippet())}`);
  }
  for (const e of errors) {
    if (typeof e?.code !== 'string' || !/^[A-Z_]+$/.test(e.code)) {
      fail(`${res.describe()}: error code must be uppercase letters and underscores, got ${JSON.stringify(e?.code)}`);
    }
    if (e.message !== undefined && typeof e.message !== 'string') {
      fail(`${res.describe()}: error "message" must be a string when present, got ${JSON.stringify(e.message)}`);
    }
  }
  return parsed as ErrorEnvelope;
}

/**
 * An error reply: the status is `status`, and the body is the JSON envelope containing one of `codes`.
 * The spec lets a 4xx body be in any format, but if it is JSON it must be the envelope; every registry we aim to
 * replace answers with the envelope, so a check that names a code requires it.
 */
export function expectError(res: Reply, status: number | number[], codes: string | string[]): ErrorEnvelope {
  expectStatus(res, ...(Array.isArray(status) ? status : [status]));
  const envelope = expectErrorEnvelope(res);
  const wanted = Array.isArray(codes) ? codes : [codes];
  const got = envelope.errors.map((e) => e.code);
  if (!got.some((c) => wanted.includes(c))) {
    fail(`${res.describe()}: expected error code ${wanted.join(' or ')}, got ${got.join(', ')}`);
  }
  return envelope;
}

/** If the body is JSON at all, it must be the error envelope (spec "Error Codes"); other formats are allowed. */
export function expectEnvelopeIfJson(res: Reply): void {
  if (res.body.length === 0) return;
  try {
    JSON.parse(res.text());
  } catch {
    return;
  }
  expectErrorEnvelope(res);
}

/** Parses an RFC 5988 / 8288 `Link` header and returns the target of rel="next", if any. */
export function nextLink(res: Reply): string | undefined {
  const header = res.header('link');
  if (!header) return undefined;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*((?:;\s*[^;]+)*)$/.exec(part);
    if (!m) fail(`${res.describe()}: Link header is not in RFC 5988 form: ${header}`);
    const rels = /;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;]+))/i.exec(m[2]!);
    const rel = rels?.[1] ?? rels?.[2] ?? '';
    if (rel.split(/\s+/).includes('next')) return m[1]!;
  }
  return undefined;
}
