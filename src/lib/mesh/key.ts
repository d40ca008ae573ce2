/**
 * The region's mesh key: 64 hex digits in a file, as derper reads it (`--mesh-psk-file`,
 * types/key/derp.go: ParseDERPMesh). It is a bearer secret: never logged, compared in constant time.
 */
import { readFile, stat } from 'node:fs/promises';
import { KeyFileError } from '../errors.js';
import { KEY_LEN } from '../protocol/constants.js';

/** Parses the key text (surrounding whitespace allowed); `where` names the source in errors. */
export function parseMeshKey(text: string, where: string): Buffer {
  const t = text.trim();
  if (t === '') throw new KeyFileError(where, 'mesh key file is empty (expected 64 hex digits, e.g. from `openssl rand -hex 32`)');
  if (!/^[0-9a-fA-F]+$/.test(t)) throw new KeyFileError(where, `mesh key must be 64 hex digits; found ${t.length} characters that are not all hex`);
  if (t.length !== 2 * KEY_LEN) throw new KeyFileError(where, `mesh key must be 64 hex digits (32 bytes); found ${t.length}`);
  const key = Buffer.from(t, 'hex');
  if (key.every((b) => b === 0)) throw new KeyFileError(where, 'mesh key is all zeros (a zero key is never sent, so no peer could authenticate)');
  return key;
}

export interface MeshKeyFile {
  key: Buffer;
  /** Set when the file can be read by group or others (the key is still used). */
  warning?: string;
}

export async function readMeshKeyFile(path: string): Promise<MeshKeyFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'mesh key file does not exist' : code === 'EACCES' ? 'mesh key file is not readable by this user' : `cannot read the mesh key file (${code ?? 'error'})`;
    throw new KeyFileError(path, why, { cause: err });
  }
  const key = parseMeshKey(text, path);
  const mode = (await stat(path)).mode & 0o777;
  return (mode & 0o077) === 0 ? { key } : { key, warning: `mesh key file mode is ${mode.toString(8).padStart(4, '0')}; it should be readable by its owner only (chmod 600)` };
}
