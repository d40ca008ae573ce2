// The layering of src/lib, read off the real import statements: a module may import only modules of a
// lower layer (or the few same-layer pairs listed), so e.g. client/ can never again reach up into select/.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { describe, expect, it } from 'vitest';

const LIB = join(import.meta.dirname, '..', 'src', 'lib');

/** Lower number = lower layer. `errors` is src/lib/errors.ts. */
const LAYER: Record<string, number> = {
  errors: 0,
  util: 0,
  protocol: 1,
  derpmap: 2,
  keys: 2,
  certs: 2,
  client: 3,
  stun: 3,
  server: 3,
  admission: 3,
  netcheck: 4,
  metrics: 4,
  mesh: 4,
  abuse: 5,
  select: 5,
  config: 6,
  connect: 6,
  node: 7,
  probe: 7,
  loadgen: 7,
  cli: 8,
  demo: 8,
};

/** Same-layer imports that are allowed (importer → imported). */
const SAME_LAYER_OK = new Set<string>([]);

function moduleOf(file: string): string {
  const rel = relative(LIB, file).split(sep);
  return rel.length === 1 ? rel[0]!.replace(/\.[jt]s$/, '') : rel[0]!;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

function edges(): Array<{ file: string; from: string; to: string }> {
  const out: Array<{ file: string; from: string; to: string }> = [];
  for (const file of tsFiles(LIB)) {
    const from = moduleOf(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
      const target = join(file, '..', m[1]!);
      const to = moduleOf(target);
      if (to !== from) out.push({ file: relative(LIB, file), from, to });
    }
  }
  return out;
}

describe('src/lib layering', () => {
  it('knows every module', () => {
    const mods = new Set(tsFiles(LIB).map(moduleOf));
    const unknown = [...mods].filter((m) => !(m in LAYER));
    expect(unknown, 'give new modules a layer in test/structure.test.ts').toEqual([]);
  });

  it('has no import from a module to one above it (or beside it, unless listed)', () => {
    const bad = edges()
      .filter(({ from, to }) => {
        const a = LAYER[from];
        const b = LAYER[to];
        if (a === undefined || b === undefined) return true;
        return b > a || (b === a && !SAME_LAYER_OK.has(`${from}→${to}`));
      })
      .map(({ file, from, to }) => `${file}: ${from} (layer ${LAYER[from]}) imports ${to} (layer ${LAYER[to]})`);
    expect(bad).toEqual([]);
  });

  it('keeps client/ on protocol/ and the base only', () => {
    const allowed = new Set(['protocol', 'errors', 'util', 'derpmap']);
    const reached = new Set(edges().filter((e) => e.from === 'client').map((e) => e.to));
    expect([...reached].filter((m) => !allowed.has(m))).toEqual([]);
  });
});
