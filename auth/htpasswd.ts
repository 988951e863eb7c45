/**
 * htpasswd files with bcrypt entries (`user:$2y$…`), as registry:2 reads them. Other hash kinds (MD5, SHA1, crypt)
 * are refused when the file is read, never treated as plain text.
 *
 * A password check always runs one bcrypt comparison, also for an unknown user (against a dummy hash at the highest
 * cost found in the file, whatever that cost), so its duration does not tell whether the user exists. bcrypt's own
 * comparison of the computed hash is done here with `timingSafeEqual`. Recently verified credentials are remembered
 * by a SHA-256 of user, password and hash for a minute, so a client sending Basic credentials on every request does
 * not pay bcrypt on each. Costs outside bcrypt's 04-31 are refused when the file is read.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';

const BCRYPT = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/;
const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export class HtpasswdError extends Error {}

export class Htpasswd {
  private readonly users: Map<string, string>;
  private readonly dummyHash: string;
  /** The bcrypt cost an unknown user's check pays: the highest of the file (10 for a file without entries). */
  readonly dummyCost: number;
  /** Recently verified credentials (a hash of user, password and entry) → until when; at most 10000. */
  private readonly verified = new LRUCache<string, number>({ max: 10_000 });

  /** Parse the file's text. Throws HtpasswdError naming the line of an entry it cannot use. */
  constructor(text: string, source = 'htpasswd', private readonly now: () => number = Date.now) {
    this.users = new Map();
    let cost = 0;
    text.split(/\r?\n/).forEach((raw, i) => {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) return;
      const colon = line.indexOf(':');
      if (colon <= 0) throw new HtpasswdError(`${source}: line ${i + 1}: expected user:hash`);
      const user = line.slice(0, colon);
      const hash = line.slice(colon + 1);
      const m = BCRYPT.exec(hash);
      if (!m) throw new HtpasswdError(`${source}: line ${i + 1}: user ${JSON.stringify(user)} has no bcrypt hash ($2y$, $2a$ or $2b$); create entries with htpasswd -B`);
      const entryCost = Number(m[1]);
      if (entryCost < 4 || entryCost > 31) throw new HtpasswdError(`${source}: line ${i + 1}: user ${JSON.stringify(user)} has a bcrypt cost outside 04-31`);
      cost = Math.max(cost, entryCost);
      this.users.set(user, hash);
    });
    // A salt of that cost and a random digest: comparing against it costs what a real entry costs and never matches.
    // Built without hashing, so a file with high costs does not slow down the start (or each SIGHUP).
    this.dummyCost = Math.min(Math.max(cost || 10, 4), 31);
    const digest = Array.from(randomBytes(31), (b) => BCRYPT_ALPHABET[b % 64]).join('');
    this.dummyHash = `${bcrypt.genSaltSync(this.dummyCost)}${digest}`;
  }

  static fromFile(path: string): Htpasswd {
    return new Htpasswd(readFileSync(path, 'utf8'), path);
  }

  has(user: string): boolean {
    return this.users.has(user);
  }

  /** The user's entry (the bcrypt hash), to bind tokens to it; undefined for an unknown user. */
  credentialOf(user: string): string | undefined {
    return this.users.get(user);
  }

  get size(): number {
    return this.users.size;
  }

  /** Whether `password` is `user`'s. Takes one bcrypt comparison whether or not the user exists. */
  async verify(user: string, password: string): Promise<boolean> {
    const hash = this.users.get(user);
    const cacheKey = createHash('sha256').update(`${user}\0${password}\0${hash ?? ''}`).digest('base64');
    const until = this.verified.get(cacheKey);
    if (hash !== undefined && until !== undefined && until > this.now()) return true;
    const ok = await compareBcrypt(password, hash ?? this.dummyHash);
    if (ok && hash !== undefined) {
      this.verified.set(cacheKey, this.now() + 60_000);
      return true;
    }
    return false;
  }
}

/** bcrypt comparison with a constant-time check of the result. `$2y$` is the same algorithm as `$2b$`. */
async function compareBcrypt(password: string, hash: string): Promise<boolean> {
  const normal = hash.replace(/^\$2y\$/, '$2b$');
  const salt = normal.slice(0, 29);
  const computed = await bcrypt.hash(password, salt);
  const a = Buffer.from(computed);
  const b = Buffer.from(normal);
  return a.length === b.length && timingSafeEqual(a, b);
}
