import { describe, expect, it } from 'vitest';
import type { CertMaterial } from '../../src/lib/certs/index.js';
import { assessHealth } from '../../src/lib/node/index.js';

const NOW = Date.parse('2026-12-01T00:00:00Z');
const DAY = 86_400_000;
const cert = (notAfter: number, origin = '/etc/derp/cert.pem'): CertMaterial =>
  ({ cert: '', key: '', origin, notAfter: new Date(notAfter), notBefore: new Date(NOW - DAY), names: [], sha256: '' }) as unknown as CertMaterial;

describe('assessHealth', () => {
  it('is ok with every listener up and the certificate outside the margin', () => {
    expect(assessHealth({ draining: false, listeners: { relay: true, STUN: true }, certificate: cert(NOW + 30 * DAY), marginDays: 7, now: NOW })).toEqual({ ok: true, problems: [] });
  });

  it('names every problem at once', () => {
    const s = assessHealth({ draining: true, listeners: { relay: false, metrics: false }, certificate: cert(NOW - 1), marginDays: 7, now: NOW });
    expect(s.ok).toBe(false);
    expect(s.problems).toEqual(['draining: stopping after SIGTERM', 'relay listener down', 'metrics listener down', 'certificate expired at 2026-11-30T23:59:59.999Z']);
  });

  it('reports an ACME placeholder and a certificate inside the margin', () => {
    expect(assessHealth({ draining: false, listeners: {}, certificate: cert(NOW + 365 * DAY, 'placeholder'), marginDays: 7, now: NOW }).problems).toEqual([
      'certificate: waiting for the first ACME certificate',
    ]);
    expect(assessHealth({ draining: false, listeners: {}, certificate: cert(NOW + 3.5 * DAY), marginDays: 7, now: NOW }).problems).toEqual([
      'certificate expires in 3.5 days (margin 7 days), at 2026-12-04T12:00:00.000Z',
    ]);
    // No TLS, no certificate check.
    expect(assessHealth({ draining: false, listeners: {}, certificate: null, marginDays: 7, now: NOW }).ok).toBe(true);
  });
});
