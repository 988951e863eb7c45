/**
 * Signing keys and certificates for tokens: key identifiers (the libtrust fingerprint registry:2 and Docker Hub use,
 * and the RFC 7638 JWK thumbprint), certificate bundles, JWKS files, and the key + self-signed certificate the
 * built-in token server generates on first start (the key with Node's crypto, the certificate with ./x509.ts).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { selfSignedCertificate } from './x509.js';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(bytes: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/**
 * libtrust's key ID: SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, in 12 groups of 4 joined by
 * colons. registry:2 looks up a token's `kid` among the keys of its root certificates by this ID.
 */
export function libtrustKeyId(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  const b32 = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return b32.match(/.{4}/g)!.join(':');
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key. */
export function jwkThumbprint(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' }) as Record<string, string>;
  const members: Record<string, string[]> = { EC: ['crv', 'kty', 'x', 'y'], RSA: ['e', 'kty', 'n'], OKP: ['crv', 'kty', 'x'] };
  const names = members[jwk.kty!];
  if (!names) throw new Error(`unsupported key type ${jwk.kty}`);
  const canonical = `{${names.map((n) => `${JSON.stringify(n)}:${JSON.stringify(jwk[n])}`).join(',')}}`;
  return createHash('sha256').update(canonical).digest('base64url');
}

/** Every certificate of a PEM bundle. Throws when the text holds none. */
export function parseCertificateBundle(pem: string, source = 'certificate bundle'): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${source}: no PEM certificate found`);
  return blocks.map((b) => new X509Certificate(b));
}

/** The public keys of a JWKS document (`{"keys":[…]}`), by their `kid` (or thumbprint when they have none). */
export function parseJwks(text: string, source = 'jwks'): Map<string, KeyObject> {
  const doc = JSON.parse(text) as { keys?: unknown };
  if (!doc || !Array.isArray(doc.keys)) throw new Error(`${source}: expected {"keys": [...]}`);
  const out = new Map<string, KeyObject>();
  for (const jwk of doc.keys as Record<string, unknown>[]) {
    if (!jwk || typeof jwk !== 'object' || 'd' in jwk) throw new Error(`${source}: every key must be a public JWK`);
    const key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
    out.set(typeof jwk.kid === 'string' ? jwk.kid : jwkThumbprint(key), key);
  }
  return out;
}

export interface SigningMaterial {
  privateKey: KeyObject;
  publicKey: KeyObject;
  certificate: X509Certificate;
  /** The certificate as PEM, as written to disk. */
  certificatePem: string;
  /** True when this call created the key or the certificate. */
  generated: boolean;
}

/**
 * Write a file complete or not at all, and only if it does not exist yet: several processes starting together
 * (cluster workers, replicas on shared storage) must all end up with the same key, the first one written.
 */
async function writeOnce(path: string, data: string, mode: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * Load the token signing key and its certificate; create what is missing. A missing key is generated (ECDSA P-256,
 * written with mode 0600); a missing certificate is made self-signed for the key (valid ten years, subject
 * CN = `commonName`). The certificate is what a registry (Wharf or registry:2) lists in its
 * `rootcertbundle` to trust the tokens.
 */
export async function ensureSigningMaterial(keyPath: string, certPath: string, commonName: string): Promise<SigningMaterial> {
  let generated = false;
  if (!existsSync(keyPath)) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeOnce(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    generated = true;
  }
  const privateKey = createPrivateKey(await readFile(keyPath));
  const publicKey = createPublicKey(privateKey);
  if (!existsSync(certPath)) {
    await writeOnce(certPath, selfSignedCertificate(privateKey, { commonName }), 0o644);
    generated = true;
  }
  const certificatePem = await readFile(certPath, 'utf8');
  const certificate = parseCertificateBundle(certificatePem, certPath)[0]!;
  const certKey = certificate.publicKey.export({ type: 'spki', format: 'der' });
  if (!certKey.equals(publicKey.export({ type: 'spki', format: 'der' }))) {
    throw new Error(`the certificate ${certPath} is not for the key ${keyPath}`);
  }
  return { privateKey, publicKey, certificate, certificatePem, generated };
}
