/**
 * The ACME certificate directory: account key, and per host name the certificate chain, its key and a
 * small record of which CA issued it. Files are 0600 in a 0700 directory, written to a temporary name
 * and renamed into place so a crash never leaves half a key.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CertificateError, describeError } from '../errors.js';
import { DIR_MODE, FILE_MODE } from './constants.js';

export interface StoredCert {
  cert: string;
  key: string;
  /** The directory URL that issued it. */
  directory: string;
}

interface Meta {
  directory: string;
  issuedAt: string;
}

const NAME_RE = /^[a-z0-9.-]+$/i;

export class CertStore {
  constructor(readonly dir: string) {}

  /** Creates the directory (0700) or tightens an existing one. */
  async init(): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true, mode: DIR_MODE });
      const st = await stat(this.dir);
      if ((st.mode & 0o777) !== DIR_MODE) await chmod(this.dir, DIR_MODE);
    } catch (cause) {
      throw new CertificateError(this.dir, 'unreadable', `cannot create or secure the certificate directory: ${describeError(cause)}`, { cause });
    }
  }

  accountKeyPath(): string {
    return join(this.dir, 'account.key');
  }

  paths(hostname: string): { cert: string; key: string; meta: string } {
    // The host name becomes a file name: refuse anything that could climb out of the directory.
    if (!NAME_RE.test(hostname) || hostname.includes('..')) throw new CertificateError(hostname, 'unparseable', 'host name is not a valid DNS name');
    const base = join(this.dir, hostname.toLowerCase());
    return { cert: `${base}.crt`, key: `${base}.key`, meta: `${base}.json` };
  }

  /** Undefined when the file does not exist; other read errors are thrown. */
  async read(file: string): Promise<string | undefined> {
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new CertificateError(file, 'unreadable', `cannot read: ${describeError(err)}`, { cause: err });
    }
  }

  async writePrivate(file: string, data: string): Promise<void> {
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, data, { mode: FILE_MODE, flag: 'wx' });
      await chmod(tmp, FILE_MODE); // the umask may have narrowed it further; never wider
      await rename(tmp, file);
    } catch (cause) {
      await unlink(tmp).catch(() => undefined); // best effort: the write error below is what matters
      throw new CertificateError(file, 'unreadable', `cannot write: ${describeError(cause)}`, { cause });
    }
  }

  async loadCert(hostname: string): Promise<StoredCert | undefined> {
    const p = this.paths(hostname);
    const [cert, key, meta] = await Promise.all([this.read(p.cert), this.read(p.key), this.read(p.meta)]);
    if (cert === undefined || key === undefined || meta === undefined) return undefined;
    let m: Partial<Meta>;
    try {
      m = JSON.parse(meta) as Partial<Meta>;
    } catch (cause) {
      throw new CertificateError(p.meta, 'unparseable', 'not JSON', { cause });
    }
    if (typeof m.directory !== 'string') throw new CertificateError(p.meta, 'unparseable', 'has no "directory" string');
    return { cert, key, directory: m.directory };
  }

  /** Key first, then the certificate, then the record: a reader that sees the new record sees a matching pair. */
  async saveCert(hostname: string, c: StoredCert): Promise<void> {
    const p = this.paths(hostname);
    await this.writePrivate(p.key, c.key);
    await this.writePrivate(p.cert, c.cert);
    const meta: Meta = { directory: c.directory, issuedAt: new Date().toISOString() };
    await this.writePrivate(p.meta, `${JSON.stringify(meta, null, 2)}\n`);
  }
}
