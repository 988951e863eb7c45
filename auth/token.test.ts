import test from 'ava';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { ensureSigningMaterial, jwkThumbprint, libtrustKeyId, parseJwks, type SigningMaterial } from './keys.js';
import { TokenIssuer, TokenVerifier } from './token.js';

const dir = mkdtempSync(join(tmpdir(), 'wharf-token-test-'));
let material: SigningMaterial;
let other: SigningMaterial;

test.before(async () => {
  material = await ensureSigningMaterial(join(dir, 'key.pem'), join(dir, 'cert.pem'), 'test issuer');
  other = await ensureSigningMaterial(join(dir, 'other.key'), join(dir, 'other.crt'), 'someone else');
});
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const NOW = 1_800_000_000_000;
const now = () => NOW;
const access = [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }];

function verifier(extra: Partial<ConstructorParameters<typeof TokenVerifier>[0]> = {}): TokenVerifier {
  return new TokenVerifier({ issuer: 'wharf', audience: 'registry', roots: [material.certificate], now, ...extra });
}

type Alg = 'ES256' | 'RS256' | 'PS256' | 'EdDSA';

function sign(payload: Record<string, unknown>, key: KeyObject = material.privateKey, header: Record<string, unknown> = {}, alg: Alg = 'ES256'): Promise<string> {
  const iat = Math.floor(NOW / 1000);
  return new SignJWT({ iss: 'wharf', aud: 'registry', sub: 'alice', iat, nbf: iat, exp: iat + 300, access, ...payload })
    .setProtectedHeader({ alg, kid: libtrustKeyId(material.publicKey), ...header })
    .sign(key);
}

test('a token issued with the generated key verifies, by libtrust kid, and carries its access', async (t) => {
  const issuer = new TokenIssuer({ privateKey: material.privateKey, issuer: 'wharf', expiresInSeconds: 300, now });
  const { token, expiresIn } = await issuer.issue('alice', 'registry', access);
  t.is(expiresIn, 300);
  const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString());
  t.is(header.alg, 'ES256');
  t.regex(header.kid, /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
  const v = await verifier().verify(token);
  t.is(v.subject, 'alice');
  t.deepEqual(v.access, access);
});

test('the certificate is self-signed for the key and the key file is private', async (t) => {
  const cert = new X509Certificate(readFileSync(join(dir, 'cert.pem')));
  t.true(cert.verify(material.publicKey));
  t.true(cert.checkIssued(cert));
  const mode = execFileSync('stat', ['-c', '%a', join(dir, 'key.pem')]).toString().trim();
  t.is(mode, '600');
});

test('an existing key and certificate are loaded, not replaced', async (t) => {
  const again = await ensureSigningMaterial(join(dir, 'key.pem'), join(dir, 'cert.pem'), 'test issuer');
  t.false(again.generated);
  t.is(libtrustKeyId(again.publicKey), libtrustKeyId(material.publicKey));
});

test('the RFC 7638 thumbprint also identifies a trusted key', async (t) => {
  t.is((await verifier().verify(await sign({}, material.privateKey, { kid: jwkThumbprint(material.publicKey) }))).subject, 'alice');
});

test('an x5c chain ending at a root certificate is accepted; one ending elsewhere is not', async (t) => {
  const x5c = [material.certificate.raw.toString('base64')];
  t.is((await verifier().verify(await sign({}, material.privateKey, { kid: undefined, x5c }))).subject, 'alice');
  const foreign = [other.certificate.raw.toString('base64')];
  await t.throwsAsync(verifier().verify(await sign({}, other.privateKey, { kid: undefined, x5c: foreign })), { message: /trusted root/ });
});

test('a jwk header is accepted only for a trusted key', async (t) => {
  const trustedJwk = material.publicKey.export({ format: 'jwk' });
  t.is((await verifier().verify(await sign({}, material.privateKey, { kid: undefined, jwk: trustedJwk }))).subject, 'alice');
  const selfSigned = other.publicKey.export({ format: 'jwk' });
  await t.throwsAsync(verifier().verify(await sign({}, other.privateKey, { kid: undefined, jwk: selfSigned })), { message: /untrusted jwk/ });
});

test('security: expired token is rejected (beyond the leeway)', async (t) => {
  const iat = Math.floor(NOW / 1000);
  await t.throwsAsync(verifier().verify(await sign({ iat: iat - 1000, nbf: iat - 1000, exp: iat - 61 })), { message: /expired/ });
  // within the 60 s leeway it is still fine
  await t.notThrowsAsync(verifier().verify(await sign({ exp: iat - 30 })));
});

test('security: a token without exp is rejected', async (t) => {
  const token = await new SignJWT({ iss: 'wharf', aud: 'registry', sub: 'a', access })
    .setProtectedHeader({ alg: 'ES256', kid: libtrustKeyId(material.publicKey) })
    .sign(material.privateKey);
  await t.throwsAsync(verifier().verify(token), { message: /expiry/ });
});

test('security: not-yet-valid token is rejected', async (t) => {
  const iat = Math.floor(NOW / 1000);
  await t.throwsAsync(verifier().verify(await sign({ nbf: iat + 600, exp: iat + 900 })), { message: /not active|not yet/ });
});

test('security: wrong audience and wrong issuer are rejected; an audience list containing ours is accepted', async (t) => {
  await t.throwsAsync(verifier().verify(await sign({ aud: 'other-registry' })), { message: /audience/ });
  await t.throwsAsync(verifier().verify(await sign({ iss: 'evil' })), { message: /issuer/ });
  t.is((await verifier().verify(await sign({ aud: ['x', 'registry'] }))).subject, 'alice');
});

test('security: alg none is rejected', async (t) => {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const iat = Math.floor(NOW / 1000);
  const body = enc({ iss: 'wharf', aud: 'registry', sub: 'alice', exp: iat + 300, access });
  const kid = libtrustKeyId(material.publicKey);
  await t.throwsAsync(verifier().verify(`${enc({ alg: 'none', kid })}.${body}.`), { message: /not allowed/ });
  await t.throwsAsync(verifier().verify(`${enc({ alg: 'None', kid })}.${body}.`), { message: /not allowed/ });
});

test('security: HS256 signed with the public key is rejected', async (t) => {
  const pem = material.publicKey.export({ type: 'spki', format: 'pem' }) as string;
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const { createHmac } = require_('node:crypto');
  const iat = Math.floor(NOW / 1000);
  const signingInput = `${enc({ alg: 'HS256', kid: libtrustKeyId(material.publicKey) })}.${enc({ iss: 'wharf', aud: 'registry', sub: 'alice', exp: iat + 300, access })}`;
  const sig = createHmac('sha256', pem).update(signingInput).digest('base64url');
  await t.throwsAsync(verifier().verify(`${signingInput}.${sig}`), { message: /not allowed/ });
  // even if a misconfiguration allowed HS256, the verifier drops non-asymmetric algorithms
  await t.throwsAsync(verifier({ algorithms: ['HS256', 'ES256'] }).verify(`${signingInput}.${sig}`), { message: /not allowed/ });
});

test('security: an algorithm that does not fit the key is rejected (RS256 claim on an EC key)', async (t) => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  await t.throwsAsync(verifier().verify(await sign({}, privateKey, {}, 'RS256')), { message: /does not fit/ });
});

test('security: unknown kid is rejected', async (t) => {
  await t.throwsAsync(verifier().verify(await sign({}, material.privateKey, { kid: 'AAAA:BBBB' })), { message: /unknown kid/ });
  await t.throwsAsync(verifier().verify(await sign({}, other.privateKey, { kid: libtrustKeyId(other.publicKey) })), { message: /unknown kid/ });
});

test('security: a token signed by another key under a trusted kid is rejected', async (t) => {
  await t.throwsAsync(verifier().verify(await sign({}, other.privateKey)), { message: /signature/ });
});

test('security: a tampered payload is rejected', async (t) => {
  const [h, p, s] = (await sign({})).split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  claims.access = [{ type: 'repository', name: '*', actions: ['*'] }];
  const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
  await t.throwsAsync(verifier().verify(forged), { message: /signature/ });
});

test('security: malformed and oversized tokens are rejected without throwing anything but TokenError', async (t) => {
  for (const bad of ['', 'abc', 'a.b', 'a.b.c', '!!!.###.$$$', `${'A'.repeat(20000)}.b.c`, 'eyJhbGciOiJFUzI1NiJ9.e30.']) {
    await t.throwsAsync(verifier().verify(bad), { instanceOf: Error, message: /token|algorithm|key/ }, bad.slice(0, 20));
  }
});

test('RSA (RS256, PS256) and EdDSA keys from a JWKS file verify; an algorithm outside signingalgorithms, an Ed448 key and an RSA key under 2048 bits do not', async (t) => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ed = generateKeyPairSync('ed25519');
  const jwks = parseJwks(JSON.stringify({ keys: [
    { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'rsa-1' },
    { ...ed.publicKey.export({ format: 'jwk' }), kid: 'ed-1' },
  ] }));
  const v = verifier({ roots: [], jwks });
  t.is((await v.verify(await sign({}, rsa.privateKey, { kid: 'rsa-1' }, 'RS256'))).subject, 'alice');
  t.is((await v.verify(await sign({}, rsa.privateKey, { kid: 'rsa-1' }, 'PS256'))).subject, 'alice');
  t.is((await v.verify(await sign({ sub: 'ed' }, ed.privateKey, { kid: 'ed-1' }, 'EdDSA'))).subject, 'ed');
  const iat = Math.floor(NOW / 1000);
  await t.throwsAsync(v.verify(await sign({ sub: 'ed', exp: iat - 600 }, ed.privateKey, { kid: 'ed-1' }, 'EdDSA')), { message: /expired/ });
  // EdDSA means Ed25519: a token signed with an Ed448 key is refused.
  const ed448 = generateKeyPairSync('ed448');
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc({ alg: 'EdDSA', kid: 'ed448' })}.${enc({ iss: 'wharf', aud: 'registry', sub: 'ed', exp: iat + 60, access })}`;
  const { sign: nodeSign } = require_('node:crypto');
  const ed448Token = `${input}.${nodeSign(null, Buffer.from(input), ed448.privateKey).toString('base64url')}`;
  const withEd448 = verifier({ roots: [], jwks: new Map([['ed448', ed448.publicKey]]) });
  await t.throwsAsync(withEd448.verify(ed448Token), { message: /does not fit/ });
  // An RSA key under 2048 bits is refused (jose's minimum).
  const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const weakInput = `${enc({ alg: 'RS256', kid: 'weak' })}.${enc({ iss: 'wharf', aud: 'registry', sub: 'w', exp: iat + 60, access })}`;
  const weakToken = `${weakInput}.${nodeSign('sha256', Buffer.from(weakInput), weak.privateKey).toString('base64url')}`;
  await t.throwsAsync(verifier({ roots: [], jwks: new Map([['weak', weak.publicKey]]) }).verify(weakToken), { message: /2048/ });
  // An algorithm left out of signingalgorithms is refused.
  await t.throwsAsync(verifier({ roots: [], jwks, algorithms: ['ES256'] }).verify(await sign({}, rsa.privateKey, { kid: 'rsa-1' }, 'RS256')), { message: /not allowed/ });
});

test('a malformed access claim grants nothing', async (t) => {
  t.deepEqual((await verifier().verify(await sign({ access: 'everything' }))).access, []);
  t.deepEqual((await verifier().verify(await sign({ access: [{ type: 'repository', name: 5, actions: ['pull'] }] }))).access, []);
});

function require_(id: string) {
  return createRequire(import.meta.url)(id);
}

test('processes generating the key at the same time all end up with the same one', async (t) => {
  const key = join(dir, 'race.key');
  const cert = join(dir, 'race.crt');
  const results = await Promise.all([1, 2, 3, 4].map(() => ensureSigningMaterial(key, cert, 'race')));
  const ids = new Set(results.map((r) => libtrustKeyId(r.publicKey)));
  t.is(ids.size, 1);
  t.is(libtrustKeyId(new X509Certificate(readFileSync(cert)).publicKey), [...ids][0]);
});
