/**
 * Key lists: `nodekey:<64 hex>` per line, `#` comments (whole-line or trailing), blank lines ignored,
 * duplicates fine. A bad line is a KeyListError naming source:line and what was wrong.
 */
import { readFile, stat } from 'node:fs/promises';
import { describeError, KeyListError } from '../errors.js';
import { NODE_PUBLIC_PREFIX } from '../protocol/keys.js';
import { MAX_KEY_LIST_BYTES } from './constants.js';

const KEY_HEX = /^[0-9a-fA-F]{64}$/;

/** Why `text` is not a `nodekey:<64 hex>`, or null when it is. */
export function nodeKeyProblem(text: string): string | null {
  if (!text.startsWith(NODE_PUBLIC_PREFIX)) {
    return KEY_HEX.test(text) ? `lacks the "${NODE_PUBLIC_PREFIX}" prefix` : `expected "${NODE_PUBLIC_PREFIX}" followed by 64 hex digits`;
  }
  const hex = text.slice(NODE_PUBLIC_PREFIX.length);
  if (!KEY_HEX.test(hex)) return `expected 64 hex digits after "${NODE_PUBLIC_PREFIX}", found ${hex.length} characters${/^[0-9a-fA-F]*$/.test(hex) ? '' : ' (not all hex)'}`;
  return null;
}

/** `nodekey:` + lower-case hex: the form lists are compared in. */
export function canonicalKey(text: string): string {
  return text.toLowerCase();
}

function shown(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);
}

/** Parses list text; throws KeyListError at the first bad line. */
export function parseKeyList(text: string, source: string): Set<string> {
  const keys = new Set<string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const hash = lines[i]!.indexOf('#');
    const body = (hash === -1 ? lines[i]! : lines[i]!.slice(0, hash)).trim();
    if (body === '') continue;
    if (/\s/.test(body)) throw new KeyListError(source, i + 1, `one key per line, found ${shown(body)}`);
    const problem = nodeKeyProblem(body);
    if (problem !== null) throw new KeyListError(source, i + 1, `${problem}: ${shown(body)}`);
    keys.add(canonicalKey(body));
  }
  return keys;
}

/** Keys given inline (config file `admission.allowKeys`); `source` names the field. */
export function keySetOf(keys: readonly string[], source: string): Set<string> {
  const out = new Set<string>();
  keys.forEach((k, i) => {
    const problem = nodeKeyProblem(k.trim());
    if (problem !== null) throw new KeyListError(`${source}[${i}]`, undefined, `${problem}: ${shown(k)}`);
    out.add(canonicalKey(k.trim()));
  });
  return out;
}

/** Reads and parses a key list file (≤ 16 MiB, UTF-8). */
export async function loadKeyList(file: string): Promise<Set<string>> {
  let text: string;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new KeyListError(file, undefined, 'not a regular file');
    if (st.size > MAX_KEY_LIST_BYTES) throw new KeyListError(file, undefined, `larger than ${MAX_KEY_LIST_BYTES} bytes`);
    text = new TextDecoder('utf-8', { fatal: true }).decode(await readFile(file));
  } catch (err) {
    if (err instanceof KeyListError) throw err;
    throw new KeyListError(file, undefined, `cannot read the key list: ${describeError(err)}`, { cause: err });
  }
  return parseKeyList(text, file);
}
