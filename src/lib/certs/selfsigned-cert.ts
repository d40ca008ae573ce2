/**
 * A self-signed certificate like derper's manual mode makes for an IP-literal hostname
 * (cmd/derper/cert.go): ECDSA P-256, the host as SAN (IP or DNS), one year, server auth. Clients pin it
 * with `CertName: "sha256-raw:<hex of SHA-256 over the DER>"`.
 */
// @peculiar/x509 resolves its providers through tsyringe, which needs the Reflect metadata polyfill.
import 'reflect-metadata';
import { createHash, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

/** cmd/derper/cert.go: createSelfSignedIPCert — valid for 365 days. */
const VALIDITY_MS = 365 * 24 * 60 * 60 * 1000;
const SERIAL_BYTES = 16;

export interface SelfSignedCert {
  certPem: string;
  keyPem: string;
  /** `sha256-raw:<64 hex>` for DERPNode.CertName. */
  certName: string;
}

export async function generateSelfSigned(hostOrIp: string): Promise<SelfSignedCert> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const ipv = isIP(hostOrIp);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(SERIAL_BYTES))).toString('hex').replace(/^[89a-f]/, '1'),
    name: `CN=${hostOrIp}`,
    notBefore: new Date(now),
    notAfter: new Date(now + VALIDITY_MS),
    signingAlgorithm: alg,
    keys: keys as unknown as x509.X509CertificateCreateSelfSignedParams['keys'],
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([ipv ? { type: 'ip', value: hostOrIp } : { type: 'dns', value: hostOrIp }]),
    ],
  });
  const der = Buffer.from(cert.rawData);
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
  return {
    certPem: cert.toString('pem') + '\n',
    keyPem,
    certName: `sha256-raw:${createHash('sha256').update(der).digest('hex')}`,
  };
}
