/**
 * Manual mode: a certificate chain and key from files, re-read when either changes on disk (the
 * directories are watched, so replacement by rename — editors, certbot's symlink swaps — is seen) and on
 * reload(). A bad new pair is refused and logged; the old one keeps serving.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { CertificateError, describeError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { WATCH_DEBOUNCE_MS } from './constants.js';
import { BaseCertSource, type CertMaterial, type CertSource, type ReloadResult } from './source.js';
import { validateCertPair } from './validate.js';

export interface ManualCertOptions {
  certFile: string;
  keyFile: string;
  /** Watch the files' directories (default true). */
  watch?: boolean;
  debounceMs?: number;
}

async function readPem(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (cause) {
    throw new CertificateError(file, 'unreadable', `cannot read: ${describeError(cause)}`, { cause });
  }
}

export class ManualCertSource extends BaseCertSource implements CertSource {
  readonly mode = 'manual' as const;
  private readonly certFile: string;
  private readonly keyFile: string;
  private readonly watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Serialises reloads so two quick changes cannot interleave their reads. */
  private chain: Promise<ReloadResult> = Promise.resolve({ changed: false });
  private closed = false;

  constructor(
    private readonly opts: ManualCertOptions,
    private readonly logger: Logger = silentLogger,
  ) {
    super();
    this.certFile = resolve(opts.certFile);
    this.keyFile = resolve(opts.keyFile);
  }

  async start(): Promise<void> {
    const m = await this.load();
    this.material = m;
    this.note({ type: 'loaded', origin: m.origin, notAfter: m.notAfter, sha256: m.sha256 });
    if (this.opts.watch !== false) this.startWatching();
  }

  reload(): Promise<ReloadResult> {
    const run = this.chain.then(() => this.doReload());
    // A throwing 'change' listener fails this reload only, not every later one.
    this.chain = run.catch(() => ({ changed: false }));
    return run;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
    await this.chain;
  }

  private async load(): Promise<CertMaterial> {
    const [cert, key] = await Promise.all([readPem(this.certFile), readPem(this.keyFile)]);
    const info = validateCertPair(cert, key, new Date(), { certFile: this.certFile, keyFile: this.keyFile });
    return { ...info, cert, key, origin: `${this.certFile} + ${this.keyFile}` };
  }

  private async doReload(): Promise<ReloadResult> {
    if (this.closed) return { changed: false };
    let m: CertMaterial;
    try {
      m = await this.load();
    } catch (err) {
      const reason = describeError(err);
      this.logger.log('warn', 'new certificate refused; still serving the previous one', { reason, notAfter: this.material?.notAfter.toISOString() });
      this.note({ type: 'refused', origin: this.certFile, reason });
      return { changed: false, error: err instanceof Error ? err : new Error(reason) };
    }
    if (m.sha256 === this.material?.sha256) return { changed: false };
    this.setMaterial(m);
    this.logger.log('info', 'certificate reloaded', { file: this.certFile, notAfter: m.notAfter.toISOString(), sha256: m.sha256 });
    this.note({ type: 'loaded', origin: m.origin, notAfter: m.notAfter, sha256: m.sha256 });
    return { changed: true };
  }

  /**
   * Any change in the files' directories triggers a (debounced) re-read, not only events naming the
   * files: certbot swaps symlinks and Kubernetes secret volumes swap a `..data` link, so the event often
   * names something else. A re-read whose pair is unchanged does nothing.
   */
  private startWatching(): void {
    for (const dir of new Set([dirname(this.certFile), dirname(this.keyFile)])) {
      try {
        const w = watch(dir, { persistent: false }, () => this.schedule());
        w.on('error', (err) => this.logger.log('warn', 'certificate directory watch failed; changes need a reload (SIGHUP)', { dir, reason: describeError(err) }));
        this.watchers.push(w);
      } catch (err) {
        this.logger.log('warn', 'cannot watch certificate directory; changes need a reload (SIGHUP)', { dir, reason: describeError(err) });
      }
    }
  }

  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.reload().catch((err: unknown) => this.logger.log('error', 'certificate change handler failed', { reason: describeError(err) }));
    }, this.opts.debounceMs ?? WATCH_DEBOUNCE_MS);
    this.timer.unref();
  }
}
