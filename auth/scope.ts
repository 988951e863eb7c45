/**
 * The Docker token spec's scope grammar and the access entries of a token's `access` claim.
 *
 *   scope        = resourcetype [ "(" resourceclass ")" ] ":" resourcename ":" action *( "," action )
 *   resourcename = may itself contain ":" (a registry host with a port: `localhost:5000/app`)
 *
 * So a scope splits at its first colon (the type) and its last colon (the actions); everything between is the name.
 * Parsing does not judge the name: the policy grants repository access only to names the API accepts
 * (`./repository-name.ts`), so a name with a host and port, or with `..`, is parsed and then granted nothing.
 */

export interface Access {
  /** `repository` or `registry`. */
  type: string;
  /** The resource class in parentheses (`repository(plugin)`), if any. */
  class?: string;
  /** A repository name, or `catalog` for `registry`. */
  name: string;
  actions: string[];
}

/** The most scopes read from one request and the longest scope accepted: bounds the work a client can cause. */
export const MAX_SCOPES = 32;
export const MAX_SCOPE_LENGTH = 512;

const TYPE = /^([a-z0-9]+)(?:\(([a-z0-9]+)\))?$/;
const ACTION = /^(?:[a-z]+|\*)$/;

/** Parse one scope string; undefined when it does not follow the grammar. Actions are de-duplicated. */
export function parseScope(scope: string): Access | undefined {
  if (scope.length === 0 || scope.length > MAX_SCOPE_LENGTH) return undefined;
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return undefined;
  const typeMatch = TYPE.exec(scope.slice(0, first));
  const name = scope.slice(first + 1, last);
  const actions = scope.slice(last + 1).split(',').filter((a) => a !== '');
  if (!typeMatch || name === '' || actions.length === 0 || !actions.every((a) => ACTION.test(a))) return undefined;
  if (/[\s"\\]/.test(name)) return undefined;
  const access: Access = { type: typeMatch[1]!, name, actions: [...new Set(actions)] };
  if (typeMatch[2]) access.class = typeMatch[2];
  return access;
}

/**
 * Parse the `scope` parameters of a token request. Each parameter may hold several scopes separated by spaces
 * (the OAuth2 form); invalid ones are dropped, as the spec's servers do. Same resource entries are merged.
 */
export function parseScopes(values: readonly string[]): Access[] {
  const out: Access[] = [];
  for (const value of values) {
    for (const part of value.split(' ')) {
      if (part === '') continue;
      const access = parseScope(part);
      if (access) out.push(access);
      if (out.length >= MAX_SCOPES) return mergeAccess(out);
    }
  }
  return mergeAccess(out);
}

export function formatScope(access: Access): string {
  const type = access.class ? `${access.type}(${access.class})` : access.type;
  return `${type}:${access.name}:${access.actions.join(',')}`;
}

/** Merge entries for the same resource, keeping action order of first appearance. */
export function mergeAccess(list: readonly Access[]): Access[] {
  const byKey = new Map<string, Access>();
  for (const a of list) {
    const key = `${a.type}\u0000${a.class ?? ''}\u0000${a.name}`;
    const seen = byKey.get(key);
    if (seen) seen.actions = [...new Set([...seen.actions, ...a.actions])];
    else byKey.set(key, { ...a, actions: [...a.actions] });
  }
  return [...byKey.values()];
}

/** Whether `granted` (a token's access claim) allows `action` on the resource. `*` grants every action. */
export function allows(granted: readonly Access[], type: string, name: string, action: string): boolean {
  return granted.some((g) => g.type === type && g.name === name && (g.actions.includes(action) || g.actions.includes('*')));
}

/** The entries of `required` (each action separately) that `granted` does not cover. */
export function missingAccess(granted: readonly Access[], required: readonly Access[]): Access[] {
  const missing: Access[] = [];
  for (const r of required) {
    const lacking = r.actions.filter((action) => !allows(granted, r.type, r.name, action));
    if (lacking.length > 0) missing.push({ ...r, actions: lacking });
  }
  return missing;
}

/** Read a token's `access` claim defensively: anything malformed is ignored, never trusted. */
export function readAccessClaim(claim: unknown): Access[] {
  if (!Array.isArray(claim)) return [];
  const out: Access[] = [];
  for (const entry of claim.slice(0, 256)) {
    if (!entry || typeof entry !== 'object') continue;
    const { type, name, actions } = entry as Record<string, unknown>;
    if (typeof type !== 'string' || typeof name !== 'string' || !Array.isArray(actions)) continue;
    out.push({ type, name, actions: actions.filter((a): a is string => typeof a === 'string') });
  }
  return out;
}
