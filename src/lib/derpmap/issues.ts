/**
 * Collecting map problems with their field path, and finding a path's line/column in the source text
 * (JSON is parsed again as YAML only when there is something to locate).
 */
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { MapValidationError, type MapIssue } from '../errors.js';

export type PathSeg = string | number;

/** Object keys that are record keys (shown as `["900"]`), not field names. */
const RECORD_PARENTS = new Set(['regions', 'regionscore']);

/** `Regions["900"].Nodes[1].STUNPort`. */
export function formatPath(segs: readonly PathSeg[]): string {
  let out = '';
  let prev: PathSeg | undefined;
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (typeof prev === 'string' && RECORD_PARENTS.has(prev.toLowerCase())) out += `[${JSON.stringify(s)}]`;
    else out += out ? `.${s}` : s;
    prev = s;
  }
  return out;
}

/** A short rendering of a found value for "expected X, found Y". */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return v.length > 60 ? `${JSON.stringify(v.slice(0, 60))}… (${v.length} characters)` : JSON.stringify(v);
  return String(v);
}

interface Pending {
  path: PathSeg[];
  message: string;
  line?: number;
  column?: number;
  /** Locate the last segment's key rather than its value (unknown fields). */
  atKey?: boolean;
}

/** Problems found in one source; `throwIfAny` raises them together as a MapValidationError. */
export class Issues {
  private readonly pending: Pending[] = [];

  constructor(
    readonly source: string,
    private readonly text?: string,
  ) {}

  add(path: readonly PathSeg[], message: string, pos?: { line: number; column: number }): void {
    this.pending.push({ path: [...path], message, ...pos });
  }

  /** Like `add`, positioned at the key of the last path segment (e.g. an unknown field's name). */
  addAtKey(path: readonly PathSeg[], message: string): void {
    this.pending.push({ path: [...path], message, atKey: true });
  }

  get count(): number {
    return this.pending.length;
  }

  toList(): MapIssue[] {
    const locate = this.text === undefined ? undefined : locator(this.text);
    return this.pending.map((p) => {
      const pos = p.line === undefined ? locate?.(p.path, p.atKey === true) : { line: p.line, column: p.column };
      const issue: MapIssue = { source: this.source, path: formatPath(p.path), message: p.message };
      if (pos?.line !== undefined) issue.line = pos.line;
      if (pos?.column !== undefined) issue.column = pos.column;
      return issue;
    });
  }

  throwIfAny(): void {
    if (this.pending.length > 0) throw new MapValidationError(this.source, this.toList());
  }
}

/**
 * Maps a field path to the line/column of its value (or of the deepest existing ancestor); with
 * `atKey`, of the last segment's key when it exists.
 */
function locator(text: string): (path: readonly PathSeg[], atKey?: boolean) => { line: number; column: number } | undefined {
  let doc: ReturnType<typeof parseDocument> | undefined;
  const lc = new LineCounter();
  return (path, atKey = false) => {
    try {
      doc ??= parseDocument(text, { lineCounter: lc, uniqueKeys: false });
    } catch (err) {
      // Locating is best effort: the issue itself is still reported, just without a line.
      if (err instanceof RangeError) return undefined;
      throw err;
    }
    let node: unknown = doc.contents;
    let found: YamlNode | undefined = isMap(node) || isSeq(node) || isScalar(node) ? node : undefined;
    for (const [i, seg] of path.entries()) {
      let next: unknown;
      if (isSeq(node) && typeof seg === 'number') next = node.items[seg];
      else if (isMap(node)) {
        const want = String(seg).toLowerCase();
        // Go's decoder: the last case-insensitive match wins.
        for (const pair of node.items) {
          if (isScalar(pair.key) && String(pair.key.value).toLowerCase() === want) next = atKey && i === path.length - 1 ? pair.key : pair.value;
        }
      }
      if (!(isMap(next) || isSeq(next) || isScalar(next))) break;
      node = next;
      found = next;
    }
    const offset = found?.range?.[0];
    if (offset === undefined) return undefined;
    const { line, col } = lc.linePos(offset);
    return { line, column: col };
  };
}

/** 1-based line and column of a character offset. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lastNl = -1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lastNl = i;
    }
  }
  return { line, column: offset - lastNl };
}

const WS = new Set([' ', '\t', '\n', '\r']);
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const ESCAPES = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't']);

/**
 * Offset of the first JSON syntax error (-1 if none). V8's JSON.parse messages often omit the
 * position, so this small iterative scanner finds it (no recursion: nesting depth cannot overflow).
 */
export function jsonSyntaxErrorOffset(t: string): number {
  let i = 0;
  const stack: string[] = [];
  let state: 'value' | 'after' | 'key' = 'value';
  const skipWs = () => {
    while (i < t.length && WS.has(t[i] as string)) i++;
  };
  const scanString = (): number => {
    i++;
    for (;;) {
      const c = t[i];
      if (c === undefined) return i;
      if (c === '"') {
        i++;
        return -1;
      }
      if (c === '\\') {
        const e = t[i + 1];
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(t.slice(i + 2, i + 6))) return i;
          i += 6;
          continue;
        }
        if (e === undefined || !ESCAPES.has(e)) return i;
        i += 2;
        continue;
      }
      if (c < ' ') return i;
      i++;
    }
  };
  for (;;) {
    skipWs();
    if (state === 'value') {
      const c = t[i];
      if (c === '{' || c === '[') {
        stack.push(c);
        i++;
        skipWs();
        if (t[i] === (c === '{' ? '}' : ']')) {
          stack.pop();
          i++;
          state = 'after';
        } else state = c === '{' ? 'key' : 'value';
        continue;
      }
      if (c === '"') {
        const e = scanString();
        if (e >= 0) return e;
        state = 'after';
        continue;
      }
      NUMBER.lastIndex = i;
      if (NUMBER.test(t)) {
        i = NUMBER.lastIndex;
        state = 'after';
        continue;
      }
      const lit = ['true', 'false', 'null'].find((l) => t.startsWith(l, i));
      if (lit === undefined) return i;
      i += lit.length;
      state = 'after';
      continue;
    }
    if (state === 'key') {
      if (t[i] !== '"') return i;
      const e = scanString();
      if (e >= 0) return e;
      skipWs();
      if (t[i] !== ':') return i;
      i++;
      state = 'value';
      continue;
    }
    const top = stack.at(-1);
    if (top === undefined) return i < t.length ? i : -1;
    if (t[i] === ',') {
      i++;
      state = top === '{' ? 'key' : 'value';
    } else if (t[i] === (top === '{' ? '}' : ']')) {
      stack.pop();
      i++;
    } else return i;
  }
}
