/** Self-signed mode: one ECDSA P-256 certificate made at start (server/selfsigned.ts); reload() keeps it. */
import { generateSelfSigned } from './selfsigned-cert.js';
import { BaseCertSource, type CertSource, type ReloadResult } from './source.js';
import { validateCertPair } from './validate.js';

export class SelfSignedCertSource extends BaseCertSource implements CertSource {
  readonly mode = 'self-signed' as const;
  /** `sha256-raw:<hex>` for DERP map nodes that pin it (after start()). */
  certName = '';

  constructor(private readonly hostOrIp: string) {
    super();
  }

  async start(): Promise<void> {
    const c = await generateSelfSigned(this.hostOrIp);
    const info = validateCertPair(c.certPem, c.keyPem, new Date(), { certFile: `self-signed:${this.hostOrIp}` });
    this.certName = c.certName;
    this.material = { ...info, cert: c.certPem, key: c.keyPem, origin: 'self-signed' };
    this.note({ type: 'loaded', origin: 'self-signed', notAfter: info.notAfter, sha256: info.sha256 });
  }

  /** A new self-signed certificate would break every pin: nothing to reload. */
  reload(): Promise<ReloadResult> {
    return Promise.resolve({ changed: false });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
