/**
 * Reading a config file: JSON or YAML by content, syntax errors with positions, the schema, and the
 * seed's `derp.servers` deployment form read as a DERP map, every problem raised at once.
 */
import { readFile, stat } from 'node:fs/promises';
import { readDeployment } from '../derpmap/deployment.js';
import { Issues } from '../derpmap/issues.js';
import { decodeDocument } from '../derpmap/parse.js';
import type { DERPMap } from '../derpmap/types.js';
import { checkMap } from '../derpmap/validate.js';
import { ConfigFileError, describeError, type ConfigIssue } from '../errors.js';
import { MAX_CONFIG_BYTES } from './constants.js';
import type { FieldValues } from './fields.js';
import { readConfigValue } from './schema.js';

export interface LoadedConfig {
  /** The file name errors use. */
  source: string;
  /** The text, kept so later (cross-field) problems can be located too. */
  text: string;
  format: 'json' | 'yaml';
  values: FieldValues;
  /** `derp.servers` as a DERP map; null when the file has none. */
  derpMap: DERPMap | null;
}

/** Issues (with positions) → ConfigIssues, in file order (unpositioned ones last). */
export function configIssuesOf(issues: Issues): ConfigIssue[] {
  const at = (i: ConfigIssue) => (i.line ?? Infinity) * 1e6 + (i.column ?? 0);
  return issues.toList().map((i): ConfigIssue => ({ ...i })).sort((a, b) => at(a) - at(b));
}

/** Parses config text; `source` names it in every error. Throws ConfigFileError. */
export function parseConfigText(text: string, source: string): LoadedConfig {
  const issues = new Issues(source, text);
  const { ok, value } = decodeDocument(text, issues, 'auto', 'a serve configuration');
  if (!ok) throw new ConfigFileError(configIssuesOf(issues));
  const { values, servers } = readConfigValue(value, issues);
  let derpMap: DERPMap | null = null;
  if (servers !== undefined) {
    const { map, broken, pathOf } = readDeployment({ derp: { servers } }, issues);
    checkMap(map, issues, pathOf, broken);
    derpMap = map;
  }
  if (issues.count > 0) throw new ConfigFileError(configIssuesOf(issues));
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  return { source, text, format: /^\s*[{["]/.test(body) ? 'json' : 'yaml', values, derpMap };
}

/** Reads and parses a config file (≤ 1 MiB, UTF-8). Throws ConfigFileError, also when unreadable. */
export async function loadConfigFile(file: string): Promise<LoadedConfig> {
  const fail = (message: string, cause?: unknown): never => {
    throw new ConfigFileError([{ source: file, path: '', message }], cause === undefined ? {} : { cause });
  };
  let data: Buffer;
  try {
    const st = await stat(file);
    if (!st.isFile()) fail('not a regular file');
    if (st.size > MAX_CONFIG_BYTES) fail(`larger than ${MAX_CONFIG_BYTES} bytes`);
    data = await readFile(file);
  } catch (err) {
    if (err instanceof ConfigFileError) throw err;
    return fail(`cannot read the config file: ${describeError(err)}`, err);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return fail('not UTF-8 text', err);
  }
  return parseConfigText(text, file);
}
