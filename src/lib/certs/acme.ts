/**
 * ACME mode (RFC 8555, acme-client): obtains a certificate for one host name, keeps it in the cert
 * directory, and renews it at two thirds of its lifetime. Until the first certificate arrives a
 * self-signed placeholder is served (clients fail verification: closed, not open). A failed attempt is
 * retried with jittered exponential backoff while the certificate in hand keeps serving.
 */
import * as https from 'node:https';
import { isIP } from 'node:net';
import { connect as tlsConnect, rootCertificates } from 'node:tls';
import * as acme from 'acme-client';
import { AcmeError, CertificateError, describeError } from '../errors.js';
import { generateSelfSigned } from './selfsigned-cert.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { ACME_HTTP_TIMEOUT_MS, ACME_PROBE_TIMEOUT_MS, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING, MAX_TIMER_MS, RENEW_FRACTION, RETRY_BASE_MS, RETRY_MAX_MS } from './constants.js';
import { BaseCertSource, type CertMaterial, type CertSource, type ChallengeResponder, type ReloadResult } from './source.js';
import { CertStore } from './store.js';
import { validateCertPair } from './validate.js';

export type AcmeChallengeType = 'http-01' | 'tls-alpn-01';

export interface AcmeOptions {
  hostname: string;
  email?: string;
  /** RFC 8555 directory URL (default Let's Encrypt production). */
  directory?: string;
  /** Let's Encrypt staging (ignored when `directory` is given). */
  staging?: boolean;
  certDir: string;
  /** Challenge types in order of preference (default http-01, then tls-alpn-01). */
  challenges?: AcmeChallengeType[];
  /**
   * Extra PEM CA certificates to trust for the directory (a private CA). acme-client has one HTTP
   * client per process, so this applies to every ACME request in the process.
   */
  directoryCa?: string;
  /** Fraction of the lifetime after which to renew (default 2/3). */
  renewFraction?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /**
   * Retries of one failed HTTP request inside acme-client (default 5, waiting 5, 10, … s). Process-wide,
   * like directoryCa; our own backoff (retryBaseMs…) comes on top.
   */
  httpRetries?: number;
  /** acme-client's polling of order/authorization status (default 5 s to 30 s). */
  pollMinMs?: number;
  pollMaxMs?: number;
  /** For tests: clock and jitter source. */
  now?: () => number;
  random?: () => number;
}

/** Wait before retry number `failures` (1, 2, …): base·2^(n-1) capped at max, jittered ×[0.5, 1.5), never above max. */
export function retryDelayMs(failures: number, baseMs: number, maxMs: number, random: number): number {
  const d = Math.min(maxMs, baseMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
  return Math.min(maxMs, Math.round(d * (0.5 + random)));
}

interface Pending {
  http: Map<string, string>;
  alpn: Map<string, { cert: string; key: string }>;
}

export class AcmeCertSource extends BaseCertSource implements CertSource {
  readonly mode = 'acme' as const;
  readonly directory: string;
  readonly hostname: string;
  readonly challenges: ChallengeResponder;
  private readonly store: CertStore;
  private readonly pending: Pending = { http: new Map(), alpn: new Map() };
  private readonly now: () => number;
  private readonly random: () => number;
  private accountKey = '';
  private timer: NodeJS.Timeout | undefined;
  private dueAt = 0;
  private failures = 0;
  private inFlight: Promise<void> | null = null;
  private closed = false;
  private issuedOnce = false;

  constructor(
    private readonly opts: AcmeOptions,
    private readonly logger: Logger = silentLogger,
  ) {
    super();
    this.hostname = opts.hostname.toLowerCase();
    this.directory = opts.directory ?? (opts.staging ? LETS_ENCRYPT_STAGING : LETS_ENCRYPT_PRODUCTION);
    this.store = new CertStore(opts.certDir);
    this.store.paths(this.hostname); // validates the name early
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    const pending = this.pending;
    this.challenges = {
      http01: (token) => pending.http.get(token),
      tlsAlpnPending: () => pending.alpn.size > 0,
      tlsAlpn01: (servername) => pending.alpn.get(servername.toLowerCase()),
    };
  }

  /** True once a CA-issued certificate (new or from disk) is serving. */
  get issued(): boolean {
    return this.issuedOnce;
  }

  private get origin(): string {
    return `acme:${this.hostname}`;
  }

  async start(): Promise<void> {
    await this.store.init();
    if (this.opts.directoryCa !== undefined) {
      acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...rootCertificates, this.opts.directoryCa], keepAlive: false });
    }
    if (this.opts.httpRetries !== undefined) {
      // Set by acme-client on its axios instance (src/axios.js), not in axios' own types.
      const d = acme.axios.defaults as { acmeSettings?: { retryMaxAttempts: number } };
      if (d.acmeSettings !== undefined) d.acmeSettings.retryMaxAttempts = this.opts.httpRetries;
    }
    // axios waits forever by default: a CA that accepts and never answers would stall renewal for good.
    if (!acme.axios.defaults.timeout) acme.axios.defaults.timeout = ACME_HTTP_TIMEOUT_MS;
    this.accountKey = await this.loadOrCreateAccountKey();
    const stored = await this.loadStored();
    if (stored !== undefined) {
      this.material = stored;
      this.issuedOnce = true;
      this.note({ type: 'loaded', origin: stored.origin, notAfter: stored.notAfter, sha256: stored.sha256 });
      this.logger.log('info', 'ACME certificate loaded from the cert directory', { hostname: this.hostname, notAfter: stored.notAfter.toISOString() });
      this.scheduleRenewal(stored);
    } else {
      const p = await generateSelfSigned(this.hostname);
      const info = validateCertPair(p.certPem, p.keyPem, new Date(this.now()), { certFile: 'placeholder' });
      this.material = { ...info, cert: p.certPem, key: p.keyPem, origin: 'placeholder' };
      this.schedule(0);
    }
  }

  /** Resolves once a CA-issued certificate serves (rejects when closed first). */
  whenIssued(): Promise<CertMaterial> {
    if (this.issued) return Promise.resolve(this.current());
    return new Promise((resolve, reject) => {
      const done = (): void => {
        this.off('change', onChange);
        this.off('closed', onClosed);
      };
      const onChange = (m: CertMaterial): void => {
        done();
        resolve(m);
      };
      const onClosed = (): void => {
        done();
        reject(new AcmeError(this.directory, this.hostname, 'wait', 'source closed before a certificate was issued'));
      };
      this.on('change', onChange);
      this.on('closed', onClosed);
    });
  }

  /** SIGHUP: re-read the stored certificate (it may have been restored by hand); renew now when due or failing. */
  async reload(): Promise<ReloadResult> {
    let changed = false;
    try {
      const stored = await this.loadStored();
      if (stored !== undefined && stored.sha256 !== this.material?.sha256) {
        this.setMaterial(stored);
        this.issuedOnce = true;
        changed = true;
        this.scheduleRenewal(stored);
      }
    } catch (err) {
      this.logger.log('warn', 'stored ACME certificate refused on reload', { reason: describeError(err) });
      return { changed: false, error: err instanceof Error ? err : new Error(String(err)) };
    }
    if (!changed && (!this.issued || this.failures > 0 || this.now() >= this.dueAt)) this.schedule(0);
    return { changed };
  }

  /** Stops scheduling. An attempt in flight finishes on its own (acme-client cannot be aborted); its result is dropped. */
  close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.emit('closed');
    return Promise.resolve();
  }

  // ---------------------------------------------------------------- scheduling

  private dueTime(m: CertMaterial): number {
    const nb = m.notBefore.getTime();
    return nb + (m.notAfter.getTime() - nb) * (this.opts.renewFraction ?? RENEW_FRACTION);
  }

  private scheduleRenewal(m: CertMaterial): void {
    this.dueAt = this.dueTime(m);
    const delay = Math.max(0, this.dueAt - this.now());
    this.note({ type: 'scheduled', origin: this.origin, nextAttempt: new Date(this.now() + delay) });
    this.schedule(delay);
  }

  /** Chains timers for waits beyond Node's 24.8-day limit. */
  private schedule(delayMs: number): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    const at = this.now() + delayMs;
    const arm = (): void => {
      const left = at - this.now();
      if (left > 0) {
        this.timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
        this.timer.unref();
        return;
      }
      this.inFlight ??= this.attempt()
        // attempt() handles ACME failures itself; this catches a throwing event listener, which must not kill the process.
        .catch((err: unknown) => this.logger.log('error', 'certificate event handler failed', { reason: describeError(err) }))
        .finally(() => (this.inFlight = null));
    };
    if (delayMs <= 0) arm();
    else {
      this.timer = setTimeout(arm, Math.min(delayMs, MAX_TIMER_MS));
      this.timer.unref();
    }
  }

  private retryDelay(): number {
    return retryDelayMs(this.failures, this.opts.retryBaseMs ?? RETRY_BASE_MS, this.opts.retryMaxMs ?? RETRY_MAX_MS, this.random());
  }

  private async attempt(): Promise<void> {
    const renewing = this.issued;
    let m: CertMaterial;
    try {
      m = await this.issue();
    } catch (err) {
      if (this.closed) return;
      this.failures++;
      const delay = this.retryDelay();
      const reason = describeError(err);
      const nextAttempt = new Date(this.now() + delay);
      this.logger.log('warn', renewing ? 'ACME renewal failed; the current certificate keeps serving' : 'ACME issuance failed', {
        hostname: this.hostname,
        directory: this.directory,
        reason,
        attempt: this.failures,
        nextAttempt: nextAttempt.toISOString(),
      });
      this.note({ type: 'failed', origin: this.origin, reason, attempt: this.failures, nextAttempt });
      this.schedule(delay);
      return;
    }
    if (this.closed) return;
    this.failures = 0;
    this.issuedOnce = true;
    this.setMaterial(m);
    this.logger.log('info', renewing ? 'ACME certificate renewed' : 'ACME certificate issued', { hostname: this.hostname, notAfter: m.notAfter.toISOString(), sha256: m.sha256 });
    this.note({ type: renewing ? 'renewed' : 'issued', origin: this.origin, notAfter: m.notAfter, sha256: m.sha256 });
    this.scheduleRenewal(m);
  }

  // ---------------------------------------------------------------- ACME

  private async issue(): Promise<CertMaterial> {
    // A fresh client per attempt: registration is idempotent for a known key (RFC 8555 §7.3.1), and a
    // CA that lost the account (or a new directory) must not wedge every later attempt.
    const client = new acme.Client({ directoryUrl: this.directory, accountKey: this.accountKey, backoffMin: this.opts.pollMinMs, backoffMax: this.opts.pollMaxMs });
    const [key, csr] = await acme.crypto.createCsr({ commonName: this.hostname, altNames: [this.hostname] }, await acme.crypto.createPrivateEcdsaKey());
    let chain: string;
    try {
      await this.register(client);
      chain = await client.auto({
        csr,
        email: this.opts.email,
        termsOfServiceAgreed: true,
        challengePriority: this.opts.challenges ?? ['http-01', 'tls-alpn-01'],
        // The CA checks for itself; a self-check from inside a NAT or before DNS settles only misleads.
        skipChallengeVerification: true,
        challengeCreateFn: async (authz, challenge, keyAuthorization) => {
          // acme-client's types know http-01 and dns-01 only; its auto mode hands over any type offered.
          const type: string = challenge.type;
          if (challenge.type === 'http-01') this.pending.http.set(challenge.token, keyAuthorization);
          else if (type === 'tls-alpn-01') {
            const [k, c] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, await acme.crypto.createPrivateEcdsaKey());
            this.pending.alpn.set(authz.identifier.value.toLowerCase(), { cert: c.toString(), key: k.toString() });
          } else throw new Error(`challenge type ${type} is not supported`);
        },
        challengeRemoveFn: (authz, challenge) => {
          if (challenge.type === 'http-01') this.pending.http.delete(challenge.token);
          else this.pending.alpn.delete(authz.identifier.value.toLowerCase());
          return Promise.resolve();
        },
      });
    } catch (cause) {
      throw new AcmeError(this.directory, this.hostname, 'order', await this.explain(cause), { cause });
    }
    const keyPem = key.toString();
    const info = validateCertPair(chain, keyPem, new Date(this.now()), { certFile: `certificate from ${this.directory}` });
    if (!info.names.includes(this.hostname)) throw new AcmeError(this.directory, this.hostname, 'check', `issued certificate is for ${info.names.join(', ')}`);
    await this.store.saveCert(this.hostname, { cert: chain, key: keyPem, directory: this.directory });
    return { ...info, cert: chain, key: keyPem, origin: this.origin };
  }

  /**
   * Registers (or finds) the account before auto(), which then skips its own registration. auto() answers
   * an existing account (HTTP 200) with an update; without an email that update carries nothing a CA may
   * change, and pebble refuses it, so every attempt after the first failed. Without an email, ask for the
   * existing account (a POST-as-GET then) and register only when that fails.
   */
  private async register(client: acme.Client): Promise<void> {
    const email = this.opts.email;
    if (email !== undefined && email !== '') {
      await client.createAccount({ termsOfServiceAgreed: true, contact: [`mailto:${email}`] });
      return;
    }
    try {
      await client.createAccount({ onlyReturnExisting: true });
    } catch {
      // No such account (or the CA refused the lookup): a plain registration reports the real error.
      await client.createAccount({ termsOfServiceAgreed: true });
    }
  }

  /**
   * acme-client loses the network error once its retries run out (its interceptor reads `.config` of an
   * undefined response), so for that case find the real reason with one TLS connection to the directory.
   */
  private async explain(cause: unknown): Promise<string> {
    const text = describeError(cause);
    if (!(cause instanceof TypeError)) return text;
    const u = new URL(this.directory);
    const reason = await new Promise<string | null>((resolve) => {
      const sock = tlsConnect({
        host: u.hostname,
        port: Number(u.port || 443),
        servername: isIP(u.hostname) ? undefined : u.hostname,
        ca: this.opts.directoryCa === undefined ? undefined : [...rootCertificates, this.opts.directoryCa],
      });
      const done = (r: string | null): void => {
        clearTimeout(timer);
        sock.destroy();
        resolve(r);
      };
      const timer = setTimeout(() => done(`no TLS connection to ${u.host} within ${ACME_PROBE_TIMEOUT_MS} ms`), ACME_PROBE_TIMEOUT_MS);
      sock.once('secureConnect', () => done(null));
      sock.once('error', (err) => done(`cannot reach the CA: ${describeError(err)}`));
    });
    return reason ?? `request failed after connecting to ${u.host} (${text})`;
  }

  private async loadOrCreateAccountKey(): Promise<string> {
    const file = this.store.accountKeyPath();
    const existing = await this.store.read(file);
    if (existing !== undefined) return existing;
    const k = (await acme.crypto.createPrivateEcdsaKey()).toString();
    await this.store.writePrivate(file, k);
    return k;
  }

  /** The stored pair when it is for this CA and name and still valid; otherwise undefined (and logged). */
  private async loadStored(): Promise<CertMaterial | undefined> {
    const s = await this.store.loadCert(this.hostname);
    if (s === undefined) return undefined;
    if (s.directory !== this.directory) {
      this.logger.log('info', 'stored certificate is from another ACME directory; ordering a new one', { stored: s.directory, directory: this.directory });
      return undefined;
    }
    const p = this.store.paths(this.hostname);
    try {
      const info = validateCertPair(s.cert, s.key, new Date(this.now()), { certFile: p.cert, keyFile: p.key });
      if (!info.names.includes(this.hostname)) throw new CertificateError(p.cert, 'unparseable', `is for ${info.names.join(', ')}, not ${this.hostname}`);
      return { ...info, cert: s.cert, key: s.key, origin: this.origin };
    } catch (err) {
      this.logger.log('warn', 'stored ACME certificate not usable; ordering a new one', { reason: describeError(err) });
      return undefined;
    }
  }
}
