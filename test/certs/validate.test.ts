import { describe, expect, it } from 'vitest';
import { validateCertPair } from '../../src/lib/certs/index.js';
import { CertificateError } from '../../src/lib/errors.js';
import { days, makePair } from './fixtures.js';

function refusal(f: () => unknown): CertificateError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(CertificateError);
    return err as CertificateError;
  }
  throw new Error('expected a CertificateError');
}

describe('validateCertPair', () => {
  it('returns validity, names and the leaf hash of a good pair', async () => {
    const p = await makePair({ name: 'relay.example.com' });
    const info = validateCertPair(p.cert, p.key);
    expect(info.sha256).toBe(p.sha256);
    expect(info.names).toEqual(['127.0.0.1', 'relay.example.com']);
    expect(info.notAfter.getTime()).toBeGreaterThan(info.notBefore.getTime());
    expect(info.chainLength).toBe(1);
  });

  it('names the file and the reason for each kind of bad pair', async () => {
    const p = await makePair();
    const other = await makePair();
    const where = { certFile: '/etc/derp/cert.pem', keyFile: '/etc/derp/key.pem' };
    let e = refusal(() => validateCertPair('', p.key, new Date(), where));
    expect([e.reason, e.file, e.code]).toEqual(['empty-chain', '/etc/derp/cert.pem', 'DERP_ERR_CERT']);
    e = refusal(() => validateCertPair('hello, not a certificate', p.key, new Date(), where));
    expect(e.reason).toBe('unparseable');
    expect(e.message).toContain('/etc/derp/cert.pem');
    e = refusal(() => validateCertPair('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', p.key, new Date(), where));
    expect(e.reason).toBe('unparseable');
    e = refusal(() => validateCertPair(p.cert, 'garbage', new Date(), where));
    expect([e.reason, e.file]).toEqual(['unparseable', '/etc/derp/key.pem']);
    e = refusal(() => validateCertPair(p.cert, other.key, new Date(), where));
    expect([e.reason, e.file]).toEqual(['key-mismatch', '/etc/derp/key.pem']);
    expect(e.message).toContain('does not match the certificate in /etc/derp/cert.pem');
  });

  it('refuses expired and not-yet-valid certificates, against an injectable clock', async () => {
    const p = await makePair({ notBefore: new Date(Date.now() - days(10)), notAfter: new Date(Date.now() - days(1)) });
    const e = refusal(() => validateCertPair(p.cert, p.key));
    expect(e.reason).toBe('expired');
    expect(e.message).toMatch(/expired at \d{4}-/);
    expect(validateCertPair(p.cert, p.key, new Date(Date.now() - days(5))).sha256).toBe(p.sha256);
    const future = await makePair({ notBefore: new Date(Date.now() + days(1)), notAfter: new Date(Date.now() + days(10)) });
    expect(refusal(() => validateCertPair(future.cert, future.key)).reason).toBe('not-yet-valid');
  });

  it('counts the chain and checks the key against the leaf only', async () => {
    const leaf = await makePair();
    const ca = await makePair();
    expect(validateCertPair(leaf.cert + ca.cert, leaf.key).chainLength).toBe(2);
    expect(refusal(() => validateCertPair(ca.cert + leaf.cert, leaf.key)).reason).toBe('key-mismatch');
  });
});
