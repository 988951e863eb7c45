import test from 'ava';
import bcrypt from 'bcryptjs';
import { Htpasswd, HtpasswdError } from './htpasswd.js';
import { addressKey, Throttle } from './throttle.js';

const y = bcrypt.hashSync('secret', 4).replace(/^\$2b\$/, '$2y$');
const a = bcrypt.hashSync('pa:ss', 4).replace(/^\$2b\$/, '$2a$');
const b = bcrypt.hashSync('hunter2', 4);

test('bcrypt entries of every prefix ($2y$ from htpasswd -B, $2a$, $2b$) verify', async (t) => {
  const file = new Htpasswd(`# comment\nalice:${y}\nbob:${a}\r\ncarol:${b}\n\n`);
  t.is(file.size, 3);
  t.true(await file.verify('alice', 'secret'));
  t.true(await file.verify('bob', 'pa:ss'));
  t.true(await file.verify('carol', 'hunter2'));
});

test('a wrong password, another user\'s password and an unknown user are refused', async (t) => {
  const file = new Htpasswd(`alice:${y}\ncarol:${b}\n`);
  t.false(await file.verify('alice', 'Secret'));
  t.false(await file.verify('alice', 'hunter2'));
  t.false(await file.verify('nobody', 'secret'));
  t.false(await file.verify('alice', ''));
  // a cached success does not make a different password pass
  t.true(await file.verify('alice', 'secret'));
  t.false(await file.verify('alice', 'secret '));
});

test('non-bcrypt entries are refused when the file is read, naming the line', (t) => {
  t.throws(() => new Htpasswd('alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n', 'users'), { instanceOf: HtpasswdError, message: /users: line 1: .*bcrypt/ });
  t.throws(() => new Htpasswd('alice:plaintext\n'), { instanceOf: HtpasswdError });
  t.throws(() => new Htpasswd('no-colon\n'), { instanceOf: HtpasswdError, message: /user:hash/ });
});

test('throttle: failures lock the (account, address) pair and the address, then expire; success clears the pair', (t) => {
  let clock = 0;
  const th = new Throttle({ accountFailures: 3, addressFailures: 5, windowMs: 1000, now: () => clock });
  th.failure('alice', '10.0.0.1');
  th.failure('alice', '10.0.0.1');
  t.false(th.isLocked('alice', '10.0.0.1'));
  th.failure('alice', '10.0.0.1');
  t.true(th.isLocked('alice', '10.0.0.1'), 'the pair is locked');
  t.false(th.isLocked('alice', '10.0.0.2'), 'the account is not locked for other addresses');
  t.false(th.isLocked('bob', '10.0.0.2'));
  th.failure('bob', '10.0.0.1');
  th.failure('carol', '10.0.0.1');
  t.true(th.isLocked('dave', '10.0.0.1'), 'address locked for any account');
  clock = 2001;
  t.false(th.isLocked('alice', '10.0.0.1'), 'lock ends when the window has passed');
  th.failure('erin', '10.0.0.9');
  th.failure('erin', '10.0.0.9');
  th.success('erin', '10.0.0.9');
  th.failure('erin', '10.0.0.9');
  t.false(th.isLocked('erin', '10.0.0.9'));
});

test("throttle: many addresses failing on one account shut out unknown addresses, not the owner's known one", (t) => {
  let clock = 0;
  const th = new Throttle({ accountFailures: 3, addressFailures: 10, accountTotalFailures: 6, windowMs: 1000, now: () => clock });
  th.success('alice', '10.0.0.1');
  for (let i = 0; i < 6; i++) th.failure('alice', `10.9.9.${i}`);
  t.true(th.isLocked('alice', '10.8.8.8'), 'a new address is refused for the account under attack');
  t.false(th.isLocked('alice', '10.0.0.1'), 'the address that logged in before is not');
  t.false(th.isLocked('bob', '10.8.8.8'), 'other accounts are not affected');
  clock = 2001;
  t.false(th.isLocked('alice', '10.8.8.8'), 'ends with the window');
  const many = new Throttle({ accountFailures: 500, addressFailures: 500, accountTotalFailures: 200, windowMs: 1000, now: () => 0 });
  for (let i = 0; i < 200; i++) many.failure('bob', `10.1.${i >> 8}.${i & 255}`);
  t.true(many.isLocked('bob', '10.2.2.2'), 'limits above 64 are reached');
});

test('throttle: IPv6 addresses count by their /64, IPv4-mapped ones as IPv4', (t) => {
  t.is(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  t.is(addressKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
  t.is(addressKey('2001:0db8::5'), '2001:db8:0:0::/64');
  t.is(addressKey('::1'), '0:0:0:0::/64');
  t.is(addressKey('::ffff:10.0.0.1'), '10.0.0.1');
  t.is(addressKey('10.0.0.1'), '10.0.0.1');
  const th = new Throttle({ accountFailures: 2, addressFailures: 3, windowMs: 1000, now: () => 0 });
  for (let i = 1; i <= 3; i++) th.failure(`user${i}`, `2001:db8:1:2::${i}`);
  t.true(th.isLocked('other', '2001:db8:1:2::ffff'), 'a fresh address in the same /64 is the same client');
  t.false(th.isLocked('other', '2001:db8:1:3::1'));
});

test('the example users file of docs/examples/auth works with the passwords its README gives', async (t) => {
  const { readFileSync } = await import('node:fs');
  const { fileURLToPath } = await import('node:url');
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const file = new Htpasswd(readFileSync(`${root}docs/examples/auth/htpasswd`, 'utf8'));
  const readme = readFileSync(`${root}docs/examples/auth/README.md`, 'utf8');
  for (const user of ['alice', 'bob', 'robot']) {
    const password = new RegExp(`\\| ${user} +\\| \`([^\`]+)\``).exec(readme)?.[1];
    t.truthy(password, user);
    t.true(await file.verify(user, password!), user);
  }
});

test('throttle: at most maxEntries keys are kept, and the least recently failed one goes first', (t) => {
  const th = new Throttle({ accountFailures: 2, addressFailures: 100, accountTotalFailures: 100, maxEntries: 4, now: () => 0 });
  th.failure('alice', '10.0.0.1');
  th.failure('alice', '10.0.0.1');
  t.true(th.isLocked('alice', '10.0.0.1'));
  // Three keys per failure (pair, address, account): bob's failure pushes out alice's pair, the oldest key.
  th.failure('bob', '10.0.0.1');
  t.false(th.isLocked('alice', '10.0.0.1'), 'the least recently failed key was dropped');
  th.failure('bob', '10.0.0.1');
  t.true(th.isLocked('bob', '10.0.0.1'), 'a recent key is kept');
});

test('throttle: a new throttle takes memory as keys come, not for maxEntries slots up front', (t) => {
  // Every process makes one; lru-cache with `max` would allocate 100,000 slots per cache at once (2.8 MB each).
  const before = process.memoryUsage();
  const made = Array.from({ length: 20 }, () => new Throttle());
  const after = process.memoryUsage();
  const grown = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
  t.true(grown < 8 * 1024 * 1024, `20 throttles took ${(grown / 1048576).toFixed(1)} MB`);
  made[0]!.failure('alice', '10.0.0.1');
  t.false(made[0]!.isLocked('alice', '10.0.0.1'));
});

test('throttle: a known address stays known for knownMs, then the account under attack refuses it too', (t) => {
  let clock = 0;
  const th = new Throttle({ accountFailures: 100, addressFailures: 100, accountTotalFailures: 2, windowMs: 10_000, knownMs: 1000, now: () => clock });
  th.success('alice', '10.0.0.1');
  th.failure('alice', '10.9.9.1');
  th.failure('alice', '10.9.9.2');
  t.false(th.isLocked('alice', '10.0.0.1'));
  clock = 1001;
  t.true(th.isLocked('alice', '10.0.0.1'), 'no longer known');
});

test.serial('htpasswd: a verified password is remembered for a minute, by the exact credentials', async (t) => {
  let clock = 0;
  const file = new Htpasswd(`alice:${y}\n`, 'users', () => clock);
  // Count bcrypt runs: Htpasswd calls the same module's hash.
  const original = bcrypt.hash;
  let runs = 0;
  (bcrypt as { hash: unknown }).hash = (...args: Parameters<typeof original>) => { runs++; return original(...args); };
  try {
    t.true(await file.verify('alice', 'secret'));
    t.true(await file.verify('alice', 'secret'));
    t.is(runs, 1, 'the second check came from the cache');
    t.false(await file.verify('alice', 'wrong'));
    t.is(runs, 2, 'another password is checked with bcrypt');
    clock = 60_001;
    t.true(await file.verify('alice', 'secret'));
    t.is(runs, 3, 'checked with bcrypt again after the minute');
  } finally {
    (bcrypt as { hash: unknown }).hash = original;
  }
});
