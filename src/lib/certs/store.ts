/**
 * The ACME certificate directory: account key, and per host name the certificate chain, its key and a
 * small record of which CA issued it. Files are 0600 in a 0700 directory, written (and synced) to a
 * temporary name and renamed into place, so neither a crash nor a full disk leaves half a key.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
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
    await this.commit([[file, await this.writeTemp(file, data)]]);
  }

  /** Writes `data` under a temporary name next to `file` (0600, synced); on failure nothing is left. */
  private async writeTemp(file: string, data: string): Promise<string> {
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      const fh = await open(tmp, 'wx', FILE_MODE);
      try {
        await fh.writeFile(data);
        await fh.sync(); // a crash after the rename must not leave an empty file under the real name
      } finally {
        await fh.close();
      }
      await chmod(tmp, FILE_MODE); // the umask may have narrowed it further; never wider
      return tmp;
    } catch (cause) {
      await unlink(tmp).catch(() => undefined); // best effort: the write error below is what matters
      throw new CertificateError(file, 'unreadable', `cannot write: ${describeError(cause)}`, { cause });
    }
  }

  /** Renames written temporaries into place, in order (renaming needs no free space). */
  private async commit(files: [file: string, tmp: string][]): Promise<void> {
    for (let i = 0; i < files.length; i++) {
      const [file, tmp] = files[i]!;
      try {
        await rename(tmp, file);
      } catch (cause) {
        await Promise.all(files.slice(i).map(([, t]) => unlink(t).catch(() => undefined)));
        throw new CertificateError(file, 'unreadable', `cannot write: ${describeError(cause)}`, { cause });
      }
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

  /**
   * All three files are written before any is renamed: a full disk (or any write error) leaves the old
   * key, certificate and record as they were, never a new key beside the old certificate. Renamed key
   * first, then the certificate, then the record.
   */
  async saveCert(hostname: string, c: StoredCert): Promise<void> {
    const p = this.paths(hostname);
    const meta: Meta = { directory: c.directory, issuedAt: new Date().toISOString() };
    const written: [string, string][] = [];
    try {
      for (const [file, data] of [[p.key, c.key], [p.cert, c.cert], [p.meta, `${JSON.stringify(meta, null, 2)}\n`]] as const) {
        written.push([file, await this.writeTemp(file, data)]);
      }
    } catch (err) {
      await Promise.all(written.map(([, t]) => unlink(t).catch(() => undefined)));
      throw err;
    }
    await this.commit(written);
  }
}
