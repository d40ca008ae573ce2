/**
 * Reading one JSON/YAML object level: case-insensitive keys like Go's encoding/json (last match wins,
 * null = leave unset, unknown keys ignored), prototype-pollution keys rejected, then zod type checks
 * whose issues become "expected X, found Y" at the field's path.
 */
import type { z } from 'zod';
import { describeValue, type Issues, type PathSeg } from './issues.js';

/** Keys that could reach Object.prototype if a consumer copied them naively. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Own keys of `obj`, reporting (and dropping) prototype-pollution keys. */
export function safeKeys(obj: Record<string, unknown>, path: readonly PathSeg[], issues: Issues): string[] {
  const keys: string[] = [];
  for (const k of Object.keys(obj)) {
    if (FORBIDDEN_KEYS.has(k)) issues.add([...path, k], `forbidden key ${JSON.stringify(k)}`);
    else keys.push(k);
  }
  return keys;
}

/** Copies the known `fields` of `obj` under their canonical names (case-insensitive match). */
export function pickFields(
  obj: Record<string, unknown>,
  fields: readonly string[],
  path: readonly PathSeg[],
  issues: Issues,
): Record<string, unknown> {
  const byLower = new Map(fields.map((f) => [f.toLowerCase(), f]));
  const out: Record<string, unknown> = {};
  for (const k of safeKeys(obj, path, issues)) {
    const field = byLower.get(k.toLowerCase());
    const v = obj[k];
    if (field !== undefined && v !== null) out[field] = v;
  }
  return out;
}

/** Runs a zod object schema; each issue becomes `expected <expect[field]>, found <value>`. */
export function checkShape<T>(
  schema: z.ZodType<T>,
  value: Record<string, unknown>,
  path: readonly PathSeg[],
  issues: Issues,
  expect: Readonly<Record<string, string>>,
): T | undefined {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  for (const iss of r.error.issues) {
    const field = iss.path[0];
    const found = typeof field === 'string' || typeof field === 'number' ? value[field] : value;
    const what = typeof field === 'string' ? expect[field] : undefined;
    const msg =
      found === undefined && typeof field === 'string'
        ? `required field missing (expected ${what ?? 'a value'})`
        : `expected ${what ?? iss.message}, found ${describeValue(found)}`;
    issues.add([...path, ...iss.path.filter((s): s is string | number => typeof s !== 'symbol')], msg);
  }
  return undefined;
}
