/** Certificates for the certificate tests: any validity window, mismatched keys, and a TLS peek helper. */
import 'reflect-metadata';
import { createHash, webcrypto } from 'node:crypto';
import * as tls from 'node:tls';
import * as x509 from '@peculiar/x509';

const DAY = 24 * 60 * 60 * 1000;

export interface TestPair {
  cert: string;
  key: string;
  sha256: string;
}

function pemKey(pkcs8: ArrayBuffer): string {
  return `-----BEGIN PRIVATE KEY-----\n${Buffer.from(pkcs8).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
}

/** A self-signed ECDSA P-256 leaf for 127.0.0.1 (and `name`), valid from `notBefore` to `notAfter`. */
export async function makePair(o: { name?: string; notBefore?: Date; notAfter?: Date } = {}): Promise<TestPair> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(12))).toString('hex').replace(/^[89a-f]/, '1'),
    name: `CN=${o.name ?? '127.0.0.1'}`,
    notBefore: o.notBefore ?? new Date(now - DAY),
    notAfter: o.notAfter ?? new Date(now + 30 * DAY),
    signingAlgorithm: alg,
    keys: keys as unknown as x509.X509CertificateCreateSelfSignedParams['keys'],
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }, ...(o.name ? [{ type: 'dns' as const, value: o.name }] : [])])],
  });
  const der = Buffer.from(cert.rawData);
  return { cert: `${cert.toString('pem')}\n`, key: pemKey(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)), sha256: createHash('sha256').update(der).digest('hex') };
}

export const days = (n: number): number => n * DAY;

/** Opens a TLS connection, returns the SHA-256 of the leaf the server presented, and closes it. */
export function servedSha256(port: number, opts: { servername?: string; ca?: string[]; host?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: opts.host ?? '127.0.0.1', port, servername: opts.servername, ALPNProtocols: ['http/1.1'], ...(opts.ca ? { ca: opts.ca } : { rejectUnauthorized: false }) }, () => {
      const raw = s.getPeerCertificate().raw;
      s.destroy();
      resolve(createHash('sha256').update(raw).digest('hex'));
    });
    s.once('error', reject);
  });
}
