/**
 * Text → model: JSON or YAML syntax (with line/column on errors), schema detection, reading,
 * semantic checks; every problem is raised together in one MapValidationError.
 */
import { parseDocument, LineCounter } from 'yaml';
import { isPlainObject } from './fields.js';
import { Issues, jsonSyntaxErrorOffset, lineColumn } from './issues.js';
import { readDeployment } from './deployment.js';
import { readSeed } from './seed.js';
import { readTailscale } from './tailscale.js';
import type { DERPMap, DerpMapFormat } from './types.js';
import { checkMap, seedPath, tailscalePath } from './validate.js';

export type DerpMapFormatOption = 'auto' | DerpMapFormat;
export const DERP_MAP_FORMATS: readonly DerpMapFormatOption[] = ['auto', 'tailscale', 'seed', 'yaml'];

/** yaml's default alias cap (billion-laughs guard), stated explicitly. */
const MAX_YAML_ALIASES = 100;

/** Exact keys that only one of the two JSON schemas uses (Go's decoder would accept either casing). */
const TAILSCALE_KEYS = new Set(['Regions', 'RegionID', 'RegionCode', 'RegionName', 'Nodes', 'Name', 'HostName', 'IPv4', 'IPv6', 'STUNPort', 'DERPPort', 'STUNOnly', 'HomeParams']);
const SEED_KEYS = new Set(['regions', 'regionId', 'regionCode', 'regionName', 'nodes', 'id', 'hostname', 'ipv4', 'ipv6', 'stunPort', 'derpPort', 'canStun', 'canRelay', 'homeParams']);
/** Enough of the document to tell the schemas apart without walking a hostile one completely. */
const DETECT_KEY_BUDGET = 2_000;

/**
 * Which schema a decoded document is in: a top-level `derp` key ⇒ YAML deployment; otherwise count
 * keys spelled exactly as each JSON schema spells them (first regions/nodes only); ties ⇒ Tailscale.
 */
export function detectFormat(value: unknown): DerpMapFormat {
  if (!isPlainObject(value)) return 'tailscale';
  const top = Object.keys(value);
  if (top.some((k) => k.toLowerCase() === 'derp') && !top.some((k) => k.toLowerCase() === 'regions')) return 'yaml';
  let ts = 0;
  let seed = 0;
  let budget = DETECT_KEY_BUDGET;
  const count = (o: unknown): void => {
    if (!isPlainObject(o)) return;
    for (const k of Object.keys(o)) {
      if (budget-- <= 0) return;
      if (TAILSCALE_KEYS.has(k)) ts++;
      if (SEED_KEYS.has(k)) seed++;
    }
  };
  count(value);
  const regions = Object.entries(value).find(([k]) => k.toLowerCase() === 'regions')?.[1];
  if (isPlainObject(regions)) {
    for (const r of Object.values(regions)) {
      if (budget <= 0) break;
      count(r);
      if (!isPlainObject(r)) continue;
      const nodes = Object.entries(r).find(([k]) => k.toLowerCase() === 'nodes')?.[1];
      if (Array.isArray(nodes)) for (const n of nodes.slice(0, 4)) count(n);
    }
  }
  return seed > ts ? 'seed' : 'tailscale';
}

/**
 * Decodes JSON (if it looks like JSON) or YAML; syntax errors are recorded with line/column. `what`
 * names the expected document in the empty-document message. Also used for config files.
 */
export function decodeDocument(text: string, issues: Issues, format: DerpMapFormatOption, what = 'a DERP map'): { ok: boolean; value: unknown } {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const first = body.trimStart()[0];
  if (body.trim() === '') {
    issues.add([], `empty document (expected ${what})`);
    return { ok: false, value: undefined };
  }
  if (format !== 'yaml' && (first === '{' || first === '[' || first === '"')) {
    try {
      return { ok: true, value: JSON.parse(body) as unknown };
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      const off = jsonSyntaxErrorOffset(body);
      const pos = off >= 0 ? lineColumn(body, off) : undefined;
      issues.add([], `JSON syntax error: ${err.message.split('\n')[0] ?? err.message}`, pos);
      return { ok: false, value: undefined };
    }
  }
  const lc = new LineCounter();
  let doc: ReturnType<typeof parseDocument>;
  try {
    // logLevel 'error': yaml would otherwise print process warnings (e.g. a mapping used as a key) to stderr.
    doc = parseDocument(body, { lineCounter: lc, prettyErrors: false, logLevel: 'error' });
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    issues.add([], 'YAML document is nested too deeply');
    return { ok: false, value: undefined };
  }
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const start = lc.linePos(e.pos[0]);
      issues.add([], `YAML syntax error: ${e.message.split('\n')[0] ?? e.message}`, { line: start.line, column: start.col });
    }
    return { ok: false, value: undefined };
  }
  try {
    return { ok: true, value: doc.toJS({ maxAliasCount: MAX_YAML_ALIASES }) as unknown };
  } catch (err) {
    // toJS throws a ReferenceError past the alias cap, a RangeError on runaway nesting.
    if (!(err instanceof Error)) throw err;
    issues.add([], `YAML document rejected: ${err.message}`);
    return { ok: false, value: undefined };
  }
}

/** Reads a decoded document in `format` (after detection) and runs the semantic checks. */
function readValue(value: unknown, format: DerpMapFormat, issues: Issues): DERPMap {
  if (format === 'yaml') {
    const { map, broken, pathOf } = readDeployment(value, issues);
    checkMap(map, issues, pathOf, broken);
    return map;
  }
  const { map, broken } = format === 'seed' ? readSeed(value, issues) : readTailscale(value, issues);
  checkMap(map, issues, format === 'seed' ? seedPath : tailscalePath, broken);
  return map;
}

/**
 * Parses a DERP map from text. `sourceName` (file, URL, "stdin") prefixes every error. `format`
 * 'auto' detects the schema; 'tailscale'/'seed' force a JSON schema (YAML syntax also accepted);
 * 'yaml' forces the deployment form. Throws MapValidationError listing every problem.
 */
export function parseDerpMap(text: string, sourceName: string, format: DerpMapFormatOption = 'auto'): { map: DERPMap; format: DerpMapFormat } {
  const issues = new Issues(sourceName, text);
  const { ok, value } = decodeDocument(text, issues, format);
  issues.throwIfAny();
  if (!ok) throw new Error('unreachable: decode failed without an issue');
  const fmt = format === 'auto' ? detectFormat(value) : format;
  const map = readValue(value, fmt, issues);
  issues.throwIfAny();
  return { map, format: fmt };
}
