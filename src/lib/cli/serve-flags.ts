/**
 * `derp serve` flags generated from the config field table: one flag per field, with no oclif
 * defaults (the resolver defaults), so "not given" stays undefined and the file can fill it in.
 */
import { Flags, type Interfaces } from '@oclif/core';
import { FIELD_OF_FLAG, FIELD_PATHS, FIELDS, defaultPhrase, type FieldSpec, type GivenFlags } from '../config/index.js';

export type ServeFieldFlag =
  | Interfaces.BooleanFlag<boolean>
  | Interfaces.OptionFlag<number | undefined>
  | Interfaces.OptionFlag<string | undefined>
  | Interfaces.OptionFlag<string[] | undefined>;

function flagOf(spec: FieldSpec): ServeFieldFlag | undefined {
  const f = spec.flag;
  if (f === undefined) return undefined;
  const d = defaultPhrase(spec);
  const description = `${spec.description}${d ? `; ${d}` : ''}`;
  switch (f.kind) {
    case 'boolean':
      return Flags.boolean<boolean>({ description, allowNo: f.allowNo === true });
    case 'integer':
      return Flags.integer({ description });
    case 'number':
      // Not a number: passed on as given, so the resolver reports it like a bad file value.
      return Flags.custom<number>({ description, parse: async (s: string) => (s.trim() !== '' && Number.isFinite(Number(s)) ? Number(s) : (s as unknown as number)) })();
    case 'strings':
      return Flags.string({ description, multiple: true });
    case 'string':
      return Flags.string({ description, ...(f.options ? { options: [...f.options] } : {}) });
  }
}

/** Every field's flag, by flag name. */
export function serveFieldFlags(): Record<string, ServeFieldFlag> {
  const out: Record<string, ServeFieldFlag> = {};
  for (const path of FIELD_PATHS) {
    const spec: FieldSpec = FIELDS[path];
    const flag = flagOf(spec);
    if (flag !== undefined && spec.flag !== undefined) out[spec.flag.name] = flag;
  }
  return out;
}

/** The field flags the user gave (drops undefined, empty repeatables and non-field flags like --config). */
export function givenFieldFlags(parsed: Readonly<Record<string, unknown>>): GivenFlags {
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(parsed)) {
    if (!FIELD_OF_FLAG.has(name) || v === undefined || (Array.isArray(v) && v.length === 0)) continue;
    out[name] = v;
  }
  return out;
}
