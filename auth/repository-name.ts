/**
 * The grammar of repository names (distribution-spec "Pulling manifests"), in one place for the whole program.
 *
 * It lives here because `auth/` may import nothing from `server/`, and the token server must grant access only to
 * names the API would accept; `server/registry/reference.ts` re-exports it for the registry and the router.
 */

/** A path component of a repository name. */
const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
export const NAME_PATTERN = `${NAME_COMPONENT}(?:\\/${NAME_COMPONENT})*`;
const NAME_RE = new RegExp(`^${NAME_PATTERN}$`);
/** registry:2 and most clients cap a repository name at 255 characters. */
export const MAX_NAME_LENGTH = 255;

export function isValidRepositoryName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}
