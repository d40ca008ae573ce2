/** The serve flags come from the field table, carry no defaults, and only given ones reach the resolver. */
import { describe, expect, it } from 'vitest';
import { givenFieldFlags, serveFieldFlags } from '../../src/lib/cli/serve-flags.js';
import { FIELD_PATHS, FIELDS, type FieldSpec } from '../../src/lib/config/index.js';
import Serve from '../../src/commands/serve.js';

describe('serveFieldFlags', () => {
  it('has one flag per table entry with a flag, none with a default, and derp serve has them all', () => {
    const flags = serveFieldFlags();
    const expected = FIELD_PATHS.flatMap((p) => {
      const f = (FIELDS[p] as FieldSpec).flag;
      return f === undefined ? [] : [f.name];
    });
    expect(Object.keys(flags).sort()).toEqual([...expected].sort());
    for (const [name, flag] of Object.entries(flags)) {
      expect({ name, default: flag.default }).toEqual({ name, default: undefined });
      expect(Object.keys(Serve.flags)).toContain(name);
    }
    expect(Object.keys(Serve.flags).sort()).toEqual([...expected, 'config'].sort());
    expect(flags.stun).toMatchObject({ type: 'boolean', allowNo: true });
    expect(flags['trusted-proxy']).toMatchObject({ type: 'option', multiple: true });
  });

  it('givenFieldFlags drops what was not given and what is not a field', () => {
    expect(givenFieldFlags({ addr: undefined, stun: false, config: 'x.yaml', 'trusted-proxy': [], 'stun-port': 0 })).toEqual({ stun: false, 'stun-port': 0 });
  });
});
