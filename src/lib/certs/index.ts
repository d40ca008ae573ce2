/**
 * Certificates for `derp serve`: one CertSource per mode (manual files, self-signed, ACME), the checks
 * a pair must pass, and the TLS-ALPN-01 helper the relay installs. `createCertSource` maps serve's
 * flags (--cert-mode, --tls-cert/--tls-key, --hostname, --acme-*, --cert-dir, --http-port) to a source.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { AcmeCertSource, type AcmeChallengeType, type AcmeOptions } from './acme.js';
import { ManualCertSource } from './manual.js';
import { SelfSignedCertSource } from './selfsigned.js';
import type { CertMode, CertSource } from './source.js';

export * from './source.js';
export { validateCertPair, splitPemCerts, type CertInfo } from './validate.js';
export { ManualCertSource, type ManualCertOptions } from './manual.js';
export { SelfSignedCertSource } from './selfsigned.js';
export { AcmeCertSource, retryDelayMs, type AcmeOptions, type AcmeChallengeType } from './acme.js';
export { parseClientHello, type ClientHelloResult } from './clienthello.js';
export { installTlsAlpnChallenges } from './alpn.js';
export { LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING, RENEW_FRACTION } from './constants.js';

export const CERT_MODES: readonly CertMode[] = ['manual', 'self-signed', 'acme'];

/** serve's certificate flags, by field. */
export interface CertSourceOptions {
  /** Default: manual with tlsCert/tlsKey, self-signed with selfSigned, else acme when hostname is set. */
  certMode?: CertMode;
  tlsCert?: string;
  tlsKey?: string;
  /** Host name (or IP) of the self-signed certificate. */
  selfSigned?: string;
  /** ACME: the name to get a certificate for (also the self-signed name when selfSigned is absent). */
  hostname?: string;
  acmeEmail?: string;
  acmeDirectory?: string;
  acmeStaging?: boolean;
  certDir?: string;
  /** The port-80 listener (-1 = off): without it ACME can only use TLS-ALPN-01. */
  httpPort?: number;
  /** Extra PEM CA for a private ACME directory. */
  acmeDirectoryCa?: string;
  /** Fine-tuning for tests (renewal fraction, retry backoff, polling). */
  acmeTuning?: Pick<AcmeOptions, 'renewFraction' | 'retryBaseMs' | 'retryMaxMs' | 'httpRetries' | 'pollMinMs' | 'pollMaxMs' | 'now' | 'random'>;
}

/** `$XDG_STATE_HOME/derp/certs`, else `~/.local/state/derp/certs` (state, not cache: it holds the account key). */
export function defaultCertDir(env: NodeJS.ProcessEnv = process.env): string {
  const state = env.XDG_STATE_HOME !== undefined && env.XDG_STATE_HOME !== '' ? env.XDG_STATE_HOME : join(homedir(), '.local', 'state');
  return join(state, 'derp', 'certs');
}

function resolveMode(o: CertSourceOptions): CertMode {
  if (o.certMode !== undefined) {
    if (!CERT_MODES.includes(o.certMode)) throw new ConfigError(`--cert-mode must be one of ${CERT_MODES.join(', ')}, found ${JSON.stringify(o.certMode)}`, { context: { field: 'certMode' } });
    return o.certMode;
  }
  if (o.tlsCert !== undefined || o.tlsKey !== undefined) return 'manual';
  if (o.selfSigned !== undefined) return 'self-signed';
  if (o.hostname !== undefined) return 'acme';
  throw new ConfigError('no certificate: give --tls-cert/--tls-key, --self-signed <host>, or --cert-mode acme with --hostname', { context: { field: 'certMode' } });
}

/** Builds (does not start) the source serve asked for; a ConfigError names the missing or conflicting flag. */
export function createCertSource(o: CertSourceOptions, logger: Logger = silentLogger): CertSource {
  const mode = resolveMode(o);
  const conflict = (flag: string, value: unknown): void => {
    if (value !== undefined) throw new ConfigError(`${flag} does not apply to --cert-mode ${mode}`, { context: { field: flag } });
  };
  switch (mode) {
    case 'manual': {
      if (o.tlsCert === undefined || o.tlsKey === undefined) throw new ConfigError('--cert-mode manual needs both --tls-cert and --tls-key', { context: { field: o.tlsCert === undefined ? 'tlsCert' : 'tlsKey' } });
      conflict('--self-signed', o.selfSigned);
      conflict('--acme-directory', o.acmeDirectory);
      return new ManualCertSource({ certFile: o.tlsCert, keyFile: o.tlsKey }, logger);
    }
    case 'self-signed': {
      conflict('--tls-cert', o.tlsCert);
      conflict('--tls-key', o.tlsKey);
      const name = o.selfSigned ?? o.hostname;
      if (name === undefined || name === '') throw new ConfigError('--cert-mode self-signed needs --self-signed <host-or-ip> or --hostname', { context: { field: 'selfSigned' } });
      return new SelfSignedCertSource(name);
    }
    case 'acme': {
      conflict('--tls-cert', o.tlsCert);
      conflict('--tls-key', o.tlsKey);
      conflict('--self-signed', o.selfSigned);
      if (o.hostname === undefined || o.hostname === '') throw new ConfigError('--cert-mode acme needs --hostname (the DNS name to get a certificate for)', { context: { field: 'hostname' } });
      if (o.acmeDirectory !== undefined && o.acmeStaging === true) throw new ConfigError('give --acme-directory or --acme-staging, not both', { context: { field: 'acmeStaging' } });
      if (o.acmeDirectory !== undefined && !/^https:\/\//.test(o.acmeDirectory)) throw new ConfigError(`--acme-directory must be an https:// URL, found ${JSON.stringify(o.acmeDirectory)}`, { context: { field: 'acmeDirectory' } });
      const challenges: AcmeChallengeType[] = o.httpPort === -1 ? ['tls-alpn-01'] : ['http-01', 'tls-alpn-01'];
      return new AcmeCertSource(
        {
          hostname: o.hostname,
          email: o.acmeEmail,
          directory: o.acmeDirectory,
          staging: o.acmeStaging,
          certDir: o.certDir ?? defaultCertDir(),
          challenges,
          directoryCa: o.acmeDirectoryCa,
          ...o.acmeTuning,
        },
        logger,
      );
    }
  }
}
