/** Validates a command's --json output against its published JSON Schema (schemas/*.schema.json, draft 2020-12). */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { ROOT } from './cli.js';

export const SCHEMA_DIR = join(ROOT, 'schemas');

let ajv: Ajv2020 | undefined;
const compiled = new Map<string, ValidateFunction>();

function load(): Ajv2020 {
  if (ajv) return ajv;
  // strict: unknown keywords and loose types in a schema are errors, so the schemas stay precise.
  ajv = new Ajv2020({ strict: true, allErrors: true });
  for (const name of readdirSync(SCHEMA_DIR).filter((n) => n.endsWith('.schema.json'))) {
    ajv.addSchema(JSON.parse(readFileSync(join(SCHEMA_DIR, name), 'utf8')) as object, name);
  }
  return ajv;
}

function describe(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`).join('\n');
}

/** Throws with every violation listed when `doc` does not match `schemas/<file>`. */
export function assertMatchesSchema(file: string, doc: unknown): void {
  let v = compiled.get(file);
  if (!v) {
    v = load().getSchema(file);
    if (!v) throw new Error(`no schema ${file} in ${SCHEMA_DIR}`);
    compiled.set(file, v);
  }
  if (!v(doc)) throw new Error(`output does not match ${file}:\n${describe(v.errors)}`);
}
