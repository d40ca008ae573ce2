/** Reading and writing derper-compatible key files (spec §2.1): JSON, mode 0600, written atomically. */
import { chmod, mkdir, open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BadKeyError, KeyFileError } from '../errors.js';
import { NodePrivateKey, formatKeyFile, parseKeyFile } from '../protocol/keys.js';

/** Loads the key in `file`, or when it does not exist (and `create`), generates one and writes it. */
export async function loadOrCreateKeyFile(file: string, create = true): Promise<{ key: NodePrivateKey; created: boolean }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && create) {
      const key = NodePrivateKey.generate();
      await writeKeyFile(file, key);
      return { key, created: true };
    }
    throw new KeyFileError(file, `cannot read: ${(err as Error).message}`, { cause: err });
  }
  try {
    return { key: parseKeyFile(text), created: false };
  } catch (err) {
    if (err instanceof BadKeyError) throw new KeyFileError(file, err.message, { cause: err });
    throw err;
  }
}

/** Writes atomically (temp file + rename), mode 0600, parent directories created. */
export async function writeKeyFile(file: string, key: NodePrivateKey, overwrite = false): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(formatKeyFile(key));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, 0o600);
    if (!overwrite) {
      // rename() replaces silently; refuse to clobber an existing key unless asked.
      const exists = await readFile(file).then(
        () => true,
        (e: NodeJS.ErrnoException) => {
          if (e.code === 'ENOENT') return false;
          throw e;
        },
      );
      if (exists) throw new KeyFileError(file, 'already exists (use --force to overwrite)');
    }
    await rename(tmp, file);
  } catch (err) {
    await import('node:fs/promises').then((fs) => fs.rm(tmp, { force: true }));
    if (err instanceof KeyFileError) throw err;
    throw new KeyFileError(file, `cannot write: ${(err as Error).message}`, { cause: err });
  }
}
