/**
 * The config file's zod schema, built from the field table (nesting by dotted path, unknown keys
 * refused), and reading a decoded document into FieldValues with every problem recorded at its path.
 */
import { z } from 'zod';
import { SERVER_FIELDS } from '../derpmap/deployment.js';
import { isPlainObject, safeKeys } from '../derpmap/fields.js';
import { describeValue, type Issues, type PathSeg } from '../derpmap/issues.js';
import { MAX_CONFIG_DEPTH } from './constants.js';
import { FIELD_PATHS, fieldSpec, type FieldPath, type FieldValues } from './fields.js';
import { suggest } from './suggest.js';

interface Leaf {
  kind: 'leaf';
  path: FieldPath;
}
interface Group {
  kind: 'group';
  /** Dotted path of the group ("" = the document). */
  path: string;
  children: Map<string, Leaf | Group>;
}

function buildTree(): Group {
  const root: Group = { kind: 'group', path: '', children: new Map() };
  for (const path of FIELD_PATHS) {
    const segs = path.split('.');
    let g = root;
    segs.slice(0, -1).forEach((seg, i) => {
      let next = g.children.get(seg);
      if (next === undefined) {
        next = { kind: 'group', path: segs.slice(0, i + 1).join('.'), children: new Map() };
        g.children.set(seg, next);
      }
      if (next.kind !== 'group') throw new Error(`field table: ${path} nests under the field ${next.path}`);
      g = next;
    });
    g.children.set(segs.at(-1)!, { kind: 'leaf', path });
  }
  return root;
}

/** The settings in file form, in table order. */
export const FIELD_TREE: Group = buildTree();

function zodOf(g: Group): z.ZodType {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, child] of g.children) shape[name] = (child.kind === 'leaf' ? fieldSpec(child.path).schema : zodOf(child)).optional();
  return z.strictObject(shape);
}

/** The whole file: every field optional, unknown keys refused. */
export const CONFIG_FILE_SCHEMA: z.ZodType = zodOf(FIELD_TREE);

function nodeAt(path: readonly PathSeg[]): Leaf | Group | undefined {
  let node: Leaf | Group = FIELD_TREE;
  for (const seg of path) {
    if (node.kind === 'leaf') return node; // inside a leaf's value (e.g. an array element)
    const next: Leaf | Group | undefined = node.children.get(String(seg));
    if (next === undefined) return undefined;
    node = next;
  }
  return node;
}

function valueAt(value: unknown, path: readonly PathSeg[]): unknown {
  let v = value;
  for (const seg of path) {
    if (Array.isArray(v) && typeof seg === 'number') v = v[seg];
    else if (isPlainObject(v)) v = v[String(seg)];
    else return undefined;
  }
  return v;
}

/** Field names of the whole table by their last segment, for "did you mean" across groups. */
const BY_LAST_NAME = new Map(FIELD_PATHS.map((p) => [p.split('.').at(-1)!.toLowerCase(), p]));
const FLAG_NAMES = new Map(FIELD_PATHS.flatMap((p) => {
  const f = fieldSpec(p).flag;
  return f === undefined ? [] : [[f.name, p] as const];
}));

/**
 * `unknown field (did you mean "port"?)`: a near sibling, else (with `crossGroup`) the same name or a
 * flag's name as a field of another group.
 */
export function unknownFieldMessage(key: string, siblings: Iterable<string>, groupPath: string, crossGroup = true): string {
  let hint = suggest(key, siblings);
  if (hint === undefined && crossGroup) {
    const elsewhere = BY_LAST_NAME.get(key.toLowerCase()) ?? FLAG_NAMES.get(key.replace(/^--/, ''));
    if (elsewhere !== undefined && elsewhere !== (groupPath ? `${groupPath}.${key}` : key)) hint = elsewhere;
  }
  return hint === undefined ? 'unknown field' : `unknown field (did you mean ${JSON.stringify(hint)}?)`;
}

/**
 * Copies plain objects, dropping null (YAML's empty value = not set) and refusing prototype keys,
 * documents nested deeper than MAX_CONFIG_DEPTH and YAML aliases that contain themselves (a cycle).
 */
function clean(v: unknown, path: PathSeg[], issues: Issues, onPath = new Set<object>()): unknown {
  const isArray = Array.isArray(v);
  if (!isArray && !isPlainObject(v)) return v;
  if (onPath.has(v)) {
    issues.add(path, 'a YAML alias refers to a node that contains it (a cycle)');
    return undefined;
  }
  if (path.length >= MAX_CONFIG_DEPTH) {
    issues.add(path, `nested more than ${MAX_CONFIG_DEPTH} levels deep`);
    return undefined;
  }
  onPath.add(v);
  try {
    if (isArray) return v.map((x, i) => clean(x, [...path, i], issues, onPath));
    const out: Record<string, unknown> = {};
    for (const k of safeKeys(v, path, issues)) if (v[k] !== null) out[k] = clean(v[k], [...path, k], issues, onPath);
    return out;
  } finally {
    onPath.delete(v);
  }
}

function groupExpect(g: Group): string {
  return g.path === '' ? 'a mapping of serve settings' : `a mapping with ${[...g.children.keys()].join(', ')}`;
}

/**
 * Reads a decoded config document; problems go to `issues` (values are only complete without any).
 * `servers` is `derp.servers` when it is a list, to be read as a deployment even if other fields failed.
 */
export function readConfigValue(raw: unknown, issues: Issues): { values: FieldValues; servers: unknown[] | undefined } {
  const before = issues.count;
  const value = clean(raw, [], issues);
  const r = CONFIG_FILE_SCHEMA.safeParse(value);
  if (!r.success) {
    const seen = new Set<string>();
    for (const iss of r.error.issues) {
      const path = iss.path.filter((s): s is string | number => typeof s !== 'symbol');
      if (iss.code === 'unrecognized_keys') {
        const g = nodeAt(path);
        const siblings = g?.kind === 'group' ? [...g.children.keys()] : [];
        for (const key of iss.keys) issues.addAtKey([...path, key], unknownFieldMessage(key, siblings, g?.kind === 'group' ? g.path : ''));
        continue;
      }
      const id = path.join('\0');
      if (seen.has(id)) continue;
      seen.add(id);
      const node = nodeAt(path);
      const expect = node === undefined ? iss.message : node.kind === 'leaf' ? fieldSpec(node.path).expect : groupExpect(node);
      issues.add(path, `expected ${expect}, found ${describeValue(valueAt(value, path))}`);
    }
  }
  const found = valueAt(value, ['derp', 'servers']);
  const servers = Array.isArray(found) && found.length > 0 ? found : undefined;
  if (servers !== undefined) checkServerKeys(servers, issues);
  return { values: issues.count > before || !r.success ? {} : flatten(r.data), servers };
}

/** The deployment reader ignores unknown keys (as Go's decoder does); a config file refuses them. */
function checkServerKeys(servers: unknown[], issues: Issues): void {
  const known = new Set(SERVER_FIELDS.map((f) => f.toLowerCase()));
  servers.forEach((s, i) => {
    if (!isPlainObject(s)) return;
    for (const k of Object.keys(s)) {
      if (!known.has(k.toLowerCase())) issues.addAtKey(['derp', 'servers', i, k], unknownFieldMessage(k, SERVER_FIELDS, 'derp.servers', false));
    }
  });
}

function flatten(data: unknown): FieldValues {
  const out: Record<string, unknown> = {};
  for (const path of FIELD_PATHS) {
    const v = valueAt(data, path.split('.'));
    if (v !== undefined) out[path] = v;
  }
  // Every value passed its field's schema just now.
  return out as FieldValues;
}
