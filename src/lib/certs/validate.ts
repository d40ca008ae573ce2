/**
 * Checks a PEM certificate chain and private key before they are served: parseable, non-empty, the key
 * belongs to the leaf, and the leaf is valid now. Anything else is a CertificateError naming the file.
 */
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import { CertificateError } from '../errors.js';

export interface CertInfo {
  notBefore: Date;
  notAfter: Date;
  /** DNS names and IP addresses from subjectAltName, else the subject CN. */
  names: string[];
  /** SHA-256 over the leaf's DER, lower-case hex (what `sha256-raw:` pins). */
  sha256: string;
  serialNumber: string;
  issuer: string;
  /** Certificates in the chain, leaf first. */
  chainLength: number;
}

export interface CertPairSource {
  /** Names the certificate in errors (a path, or e.g. "acme:<host>"). */
  certFile?: string;
  keyFile?: string;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Splits a PEM bundle into its CERTIFICATE blocks (other blocks are ignored). */
export function splitPemCerts(pem: string): string[] {
  return pem.match(PEM_CERT) ?? [];
}

function namesOf(cert: X509Certificate): string[] {
  const out: string[] = [];
  for (const part of (cert.subjectAltName ?? '').split(/,\s*/)) {
    const m = /^(DNS|IP Address):(.+)$/.exec(part.trim());
    if (m) out.push(m[2]!);
  }
  if (out.length === 0) {
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject);
    if (cn) out.push(cn[1]!);
  }
  return out;
}

/** Validates a chain + key pair; `now` is injectable for tests. */
export function validateCertPair(certPem: string | Buffer, keyPem: string | Buffer, now: Date = new Date(), where: CertPairSource = {}): CertInfo {
  const certFile = where.certFile ?? 'certificate';
  const keyFile = where.keyFile ?? 'private key';
  const blocks = splitPemCerts(certPem.toString());
  if (blocks.length === 0) {
    const text = certPem.toString().trim();
    throw new CertificateError(certFile, text === '' ? 'empty-chain' : 'unparseable', text === '' ? 'certificate chain is empty' : 'no PEM "CERTIFICATE" block found');
  }
  const chain: X509Certificate[] = [];
  for (const [i, b] of blocks.entries()) {
    try {
      chain.push(new X509Certificate(b));
    } catch (cause) {
      throw new CertificateError(certFile, 'unparseable', `certificate #${i + 1} of the chain is not valid X.509 PEM`, { cause });
    }
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (cause) {
    throw new CertificateError(keyFile, 'unparseable', 'not a PEM private key', { cause });
  }
  const leaf = chain[0]!;
  if (!leaf.checkPrivateKey(key)) throw new CertificateError(keyFile, 'key-mismatch', `private key does not match the certificate in ${certFile}`);
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (now.getTime() > notAfter.getTime()) throw new CertificateError(certFile, 'expired', `certificate expired at ${notAfter.toISOString()}`);
  if (now.getTime() < notBefore.getTime()) throw new CertificateError(certFile, 'not-yet-valid', `certificate is not valid before ${notBefore.toISOString()}`);
  return {
    notBefore,
    notAfter,
    names: namesOf(leaf),
    sha256: createHash('sha256').update(leaf.raw).digest('hex'),
    serialNumber: leaf.serialNumber,
    issuer: leaf.issuer.replace(/\n/g, ', '),
    chainLength: chain.length,
  };
}
