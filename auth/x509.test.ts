import test from 'ava';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selfSignedCertificate } from './x509.js';

/** Read a PEM certificate with the openssl command: an independent parser. */
function opensslText(pem: string): string {
  return execFileSync('openssl', ['x509', '-noout', '-text'], { input: pem }).toString();
}

for (const [label, pair, sigAlg] of [
  ['ECDSA P-256', () => generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'ecdsa-with-SHA256'],
  ['ECDSA P-384', () => generateKeyPairSync('ec', { namedCurve: 'P-384' }), 'ecdsa-with-SHA384'],
  ['RSA 2048', () => generateKeyPairSync('rsa', { modulusLength: 2048 }), 'sha256WithRSAEncryption'],
] as const) {
  test(`a self-signed CA certificate for ${label} that Node and openssl both read and verify`, (t) => {
    const { privateKey, publicKey } = pair();
    const pem = selfSignedCertificate(privateKey, { commonName: 'wharf token issuer' });
    const cert = new X509Certificate(pem);
    t.true(cert.verify(publicKey), 'signed by its own key');
    t.true(cert.checkIssued(cert));
    t.true(cert.ca);
    t.is(cert.subject, 'CN=wharf token issuer');
    t.true(cert.publicKey.equals(publicKey));
    const years = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / (365 * 24 * 3600_000);
    t.true(years > 9.9 && years < 10.1, `${years} years`);
    const text = opensslText(pem);
    t.regex(text, new RegExp(`Signature Algorithm: ${sigAlg}`));
    t.regex(text, /CA:TRUE/);
    t.regex(text, /Digital Signature, Certificate Sign/);
    // openssl verifies the self-signature too.
    const dir = mkdtempSync(join(tmpdir(), 'wharf-x509-'));
    try {
      writeFileSync(join(dir, 'c.pem'), pem);
      const verified = execFileSync('openssl', ['verify', '-CAfile', join(dir, 'c.pem'), join(dir, 'c.pem')]).toString();
      t.regex(verified, /: OK/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('validity dates from 2050 on are GeneralizedTime, before as UTCTime', (t) => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = selfSignedCertificate(privateKey, { commonName: 'x', notBefore: new Date('2045-01-01T00:00:00Z'), notAfter: new Date('2055-06-01T12:00:00Z') });
  const cert = new X509Certificate(pem);
  t.is(new Date(cert.validFrom).toISOString(), '2045-01-01T00:00:00.000Z');
  t.is(new Date(cert.validTo).toISOString(), '2055-06-01T12:00:00.000Z');
});

test('keys it cannot certify are refused with a reason', (t) => {
  const { privateKey } = generateKeyPairSync('ed25519');
  t.throws(() => selfSignedCertificate(privateKey, { commonName: 'x' }), { message: /ed25519/ });
});
