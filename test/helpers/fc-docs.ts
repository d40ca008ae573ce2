/**
 * fast-check generators of hostile documents for the parser property tests (DERP maps, config files):
 * random text, text edits of a valid document, wrong types at any path of its decoded value, deep
 * nesting, huge and odd numbers, prototype keys, and YAML-only constructs.
 */
import fc from 'fast-check';
import { stringify as yamlStringify } from 'yaml';

type Path = (string | number)[];

/** Placeholder string replaced, after serialising, by a raw text fragment (deep nesting, huge numbers). */
const RAW = '\u0000raw\u0000';

/** Every path of `v` (the root included), depth first. */
export function pathsOf(v: unknown, at: Path = []): Path[] {
  const out: Path[] = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...pathsOf(x, [...at, i])));
  else if (v !== null && typeof v === 'object') for (const k of Object.keys(v)) out.push(...pathsOf((v as Record<string, unknown>)[k], [...at, k]));
  return out;
}

/** A copy of `v` with the value at `path` replaced (own properties only, so "__proto__" stays data). */
export function setAt(v: unknown, path: Path, value: unknown): unknown {
  if (path.length === 0) return value;
  const [head, ...rest] = path;
  // An earlier edit may have replaced a parent with a scalar: rebuild it.
  if (v === null || typeof v !== 'object') v = typeof head === 'number' ? [] : {};
  const copy = (Array.isArray(v) ? [...(v as unknown[])] : { ...(v as Record<string, unknown>) }) as Record<string | number, unknown>;
  Object.defineProperty(copy, head!, { value: setAt((v as Record<string | number, unknown>)[head!], rest, value), enumerable: true, writable: true, configurable: true });
  return copy;
}

/** Raw fragments that a JSON value cannot hold but JSON / YAML text can. */
const rawFragment = fc.oneof(
  fc.integer({ min: 1, max: 1_500 }).map((d) => '['.repeat(d) + ']'.repeat(d)),
  fc.integer({ min: 1, max: 1_000 }).map((d) => '{"a":'.repeat(d) + '1' + '}'.repeat(d)),
  fc.constantFrom('1e999', '-1e999', '1e-999', '123456789012345678901234567890', '-0', '9007199254740993', '0.1e400'),
);

/** Wrong or odd values for any field. */
export const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom<unknown>(null, true, false, 0, -1, 1.5, -0, 2 ** 53, 2 ** 53 + 2, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, 65_536, '', ' ', 'none', '0', '-1', '1e3', '::', '999', [], {}, [[]], [{}]),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constant(RAW),
  fc.dictionary(fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty'), fc.jsonValue({ maxDepth: 2 }), { minKeys: 1 }).map((o) => {
    const own: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) Object.defineProperty(own, k, { value: v, enumerable: true, writable: true, configurable: true });
    return own;
  }),
);

/** Structural mutations of a decoded document: 1–4 paths replaced by odd values or given odd keys. */
export function mutatedValue(base: unknown): fc.Arbitrary<unknown> {
  const paths = pathsOf(base);
  const edit = fc.tuple(fc.nat({ max: paths.length - 1 }), oddValue, fc.option(fc.constantFrom('__proto__', 'constructor', 'Regions', 'regions', 'derp', 'servers', 'X'), { nil: undefined }));
  return fc.array(edit, { minLength: 1, maxLength: 4 }).map((edits) => {
    let v = base;
    for (const [i, odd, key] of edits) {
      const p = paths[i]!;
      // A new key where the path is an object, else a replaced value.
      v = key !== undefined && isObjectAt(v, p) ? setAt(v, [...p, key], odd) : setAt(v, p, odd);
    }
    return v;
  });
}

function isObjectAt(v: unknown, p: Path): boolean {
  let cur = v;
  for (const k of p) {
    if (cur === null || typeof cur !== 'object') return false;
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return cur !== null && typeof cur === 'object' && !Array.isArray(cur);
}

/** How each serialiser writes the RAW placeholder. */
const RAW_TOKEN = { json: JSON.stringify(RAW), yaml: yamlStringify(RAW).trim() };

/** A value as JSON or YAML text, each RAW placeholder replaced by a fragment. */
export function serialised(value: unknown): fc.Arbitrary<string> {
  return fc.tuple(fc.constantFrom('json' as const, 'yaml' as const), fc.array(rawFragment, { minLength: 4, maxLength: 4 })).map(([how, frags]) => {
    const text = how === 'json' ? JSON.stringify(value) : yamlStringify(value, { aliasDuplicateObjects: false });
    let i = 0;
    return text.split(RAW_TOKEN[how]).reduce((acc, part) => acc + frags[i++ % frags.length]! + part);
  });
}

/** Text edits: delete, duplicate or replace a slice, insert odd text, flip case, truncate. */
export function editedText(base: string): fc.Arbitrary<string> {
  const insert = fc.oneof(
    fc.string({ maxLength: 10 }),
    fc.constantFrom('{', '}', '[', ']', ':', ',', '"', "'", '\n', '\t', '  ', '- ', '&a ', '*a', '!!binary ', '<<: ', '? ', '#', '\\', '\uFEFF', '\u0000', '1e999', '.nan', '.inf', '~', 'null', '__proto__: 1\n', '"__proto__":{"x":1},'),
  );
  const edit = fc.tuple(fc.nat(), fc.nat({ max: 40 }), fc.constantFrom('delete', 'duplicate', 'replace', 'insert', 'case'), insert);
  return fc.tuple(fc.array(edit, { minLength: 1, maxLength: 5 }), fc.option(fc.nat(), { nil: undefined })).map(([edits, truncate]) => {
    let t = base;
    for (const [pos, len, how, ins] of edits) {
      const a = t.length === 0 ? 0 : pos % t.length;
      const b = Math.min(t.length, a + len);
      if (how === 'delete') t = t.slice(0, a) + t.slice(b);
      else if (how === 'duplicate') t = t.slice(0, b) + t.slice(a, b) + t.slice(b);
      else if (how === 'replace') t = t.slice(0, a) + ins + t.slice(b);
      else if (how === 'insert') t = t.slice(0, a) + ins + t.slice(a);
      else t = t.slice(0, a) + t.slice(a, b).toUpperCase() + t.slice(b);
    }
    return truncate === undefined ? t : t.slice(0, truncate % (t.length + 1));
  });
}

/** Arbitrary text: any string, JSON of any value, YAML of any value, YAML with anchors and tags. */
export const anyText: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 100 }),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.jsonValue().map((v) => yamlStringify(v)),
  fc.constantFrom('a: &x [*x]', 'a: &a [1]\nb: [*a, *a, *a]', '!!binary aGVsbG8=', '--- 1\n--- 2', '%YAML 1.2\n---\n{}', 'a: !!timestamp 2001-12-14', '? [a]\n: b', '<<: {a: 1}', 'a: 1\na: 2', '{"a":1,"a":2}', '\uFEFF{}', '[', '{', '"'),
);

/** Every document generator above, around one valid document (text and decoded value). */
export function hostileDocs(text: string, value: unknown): fc.Arbitrary<string> {
  return fc.oneof(anyText, editedText(text), mutatedValue(value).chain(serialised));
}
