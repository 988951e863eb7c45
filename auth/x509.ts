/**
 * A minimal self-signed X.509 v3 certificate writer, so the token server can make the certificate for its signing
 * key with Node alone (Node's crypto makes keys and signatures but cannot write certificates).
 *
 *   Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature BIT STRING }
 *   TBSCertificate ::= SEQUENCE { [0] version(v3), serialNumber, signature, issuer, validity, subject,
 *                                 subjectPublicKeyInfo, [3] extensions }
 *
 * Only what a token-signing root needs: subject = issuer = CN, basicConstraints CA:TRUE, keyUsage
 * digitalSignature + keyCertSign, ECDSA (P-256/384/521, signed with SHA-256/384/512) or RSA (SHA-256) keys.
 * Encoded in DER (minimal lengths and integers), as strict parsers such as Go's crypto/x509 demand.
 */
import { createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

const seq = (...c: Buffer[]) => tlv(0x30, ...c);

/** A non-negative INTEGER from big-endian bytes, minimally encoded. */
function integer(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  let b = bytes.subarray(i);
  if (b[0]! & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 4.1.2.5). */
function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  return date.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${iso}Z`));
}

function name(commonName: string): Buffer {
  return seq(tlv(0x31, seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(commonName, 'utf8')))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [tlv(0x01, Buffer.from([0xff]))] : []), tlv(0x04, value));
}

const EC_HASH: Record<string, [string, string]> = {
  prime256v1: ['sha256', '1.2.840.10045.4.3.2'],
  secp384r1: ['sha384', '1.2.840.10045.4.3.3'],
  secp521r1: ['sha512', '1.2.840.10045.4.3.4'],
};

export interface CertificateOptions {
  commonName: string;
  notBefore?: Date;
  /** Default: ten years after notBefore. */
  notAfter?: Date;
}

/** A self-signed CA certificate for `privateKey`, as PEM. */
export function selfSignedCertificate(privateKey: KeyObject, options: CertificateOptions): string {
  let hash: string;
  let algorithm: Buffer;
  if (privateKey.asymmetricKeyType === 'ec') {
    const curve = privateKey.asymmetricKeyDetails?.namedCurve ?? '';
    const entry = EC_HASH[curve];
    if (!entry) throw new Error(`unsupported EC curve ${curve} (use P-256, P-384 or P-521)`);
    hash = entry[0];
    algorithm = seq(oid(entry[1]));
  } else if (privateKey.asymmetricKeyType === 'rsa') {
    hash = 'sha256';
    algorithm = seq(oid('1.2.840.113549.1.1.11'), tlv(0x05));
  } else {
    throw new Error(`cannot make a certificate for a ${privateKey.asymmetricKeyType} key (use ECDSA or RSA)`);
  }
  const notBefore = options.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = options.notAfter ?? new Date(notBefore.getTime() + 3650 * 24 * 3600_000);
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  serial[0]! |= 0x01; // positive and non-zero
  const subject = name(options.commonName);
  const extensions = tlv(0xa3, seq(
    extension('2.5.29.19', true, seq(tlv(0x01, Buffer.from([0xff])))), // basicConstraints: CA
    // keyUsage: digitalSignature (bit 0) and keyCertSign (bit 5) → 0b10000100, 2 unused bits
    extension('2.5.29.15', true, tlv(0x03, Buffer.from([0x02, 0x84]))),
  ));
  const tbs = seq(
    tlv(0xa0, integer(Buffer.from([2]))),
    integer(serial),
    algorithm,
    subject,
    seq(time(notBefore), time(notAfter)),
    subject,
    spki,
    extensions,
  );
  const signature = sign(hash, tbs, privateKey); // DER-encoded ECDSA signature / PKCS#1 v1.5 for RSA
  const der = seq(tbs, algorithm, tlv(0x03, Buffer.from([0]), signature));
  const b64 = der.toString('base64').match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}
