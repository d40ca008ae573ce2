// schemas/probe.schema.json against reports built like the runner's, and against types.ts's lists.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CHECK_NAMES, CHECK_STATUSES, CHECK_UNITS, PROBE_SCHEMA, PROBE_TRANSPORTS } from '../../src/lib/probe/types.js';
import { ROOT } from '../helpers/cli.js';
import { assertMatchesSchema } from '../helpers/schema.js';
import { buildReport, fullReport } from './fixtures.js';

const FILE = 'probe.schema.json';

interface Defs {
  $id: string;
  properties: { schema: { const: string } };
  $defs: Record<'checkName' | 'checkStatus' | 'nodeStatus' | 'unit' | 'transport', { enum: string[] }>;
}
const schema = JSON.parse(readFileSync(join(ROOT, 'schemas', FILE), 'utf8')) as Defs;

/** A deep copy of the full report, changed by `edit`. */
function broken(edit: (doc: Record<string, unknown> & { nodes: Array<Record<string, unknown> & { checks: Array<Record<string, unknown>> }> }) => void): unknown {
  const doc = JSON.parse(JSON.stringify(fullReport())) as Parameters<typeof edit>[0];
  edit(doc);
  return doc;
}

describe('schemas/probe.schema.json', () => {
  it('accepts a full report: every status, every unit, mesh, details, skipped', () => {
    const r = fullReport();
    expect(new Set(r.nodes.flatMap((n) => n.checks.map((c) => c.status)))).toEqual(new Set(CHECK_STATUSES));
    expect(new Set(r.nodes.flatMap((n) => n.checks.flatMap((c) => (c.unit ? [c.unit] : []))))).toEqual(new Set(CHECK_UNITS));
    expect(() => assertMatchesSchema(FILE, r)).not.toThrow();
  });

  it('accepts an empty run and a --server run', () => {
    expect(() => assertMatchesSchema(FILE, buildReport([]))).not.toThrow();
    expect(() => assertMatchesSchema(FILE, buildReport([], { source: { servers: ['https://a.example/derp'] } }))).not.toThrow();
  });

  it('refuses a wrong status', () => {
    expect(() => assertMatchesSchema(FILE, broken((d) => (d.nodes[0]!.checks[0]!.status = 'ok')))).toThrow(/checks\/0\/status/);
  });

  it('refuses a missing field', () => {
    expect(() => assertMatchesSchema(FILE, broken((d) => delete d.nodes[1]!.checks[0]!.message))).toThrow(/message/);
    expect(() => assertMatchesSchema(FILE, broken((d) => delete d.summary))).toThrow(/summary/);
  });

  it('refuses an unknown check name, an unknown field, a value without unit, a mesh without peer', () => {
    expect(() => assertMatchesSchema(FILE, broken((d) => (d.nodes[0]!.checks[0]!.check = 'ping')))).toThrow(/check/);
    expect(() => assertMatchesSchema(FILE, broken((d) => (d.checks = ['stun4', 'ping'])))).toThrow(/\/checks\/1/);
    expect(() => assertMatchesSchema(FILE, broken((d) => (d.extra = 1)))).toThrow(/additional/);
    expect(() => assertMatchesSchema(FILE, broken((d) => delete d.nodes[0]!.checks[0]!.unit))).toThrow(/unit/);
    expect(() => assertMatchesSchema(FILE, broken((d) => delete d.nodes[0]!.checks[6]!.peer))).toThrow(/peer/);
    expect(() => assertMatchesSchema(FILE, broken((d) => (d.nodes[0]!.checks[0]!.peer = '900b')))).toThrow();
    expect(() => assertMatchesSchema(FILE, broken((d) => (d.schema = 'derp.probe/v2')))).toThrow(/schema/);
  });

  it('enumerates exactly what types.ts defines (they cannot drift apart)', () => {
    expect(schema.$defs.checkName.enum).toEqual([...CHECK_NAMES]);
    expect(schema.$defs.checkStatus.enum).toEqual([...CHECK_STATUSES]);
    expect(schema.$defs.nodeStatus.enum).toEqual(CHECK_STATUSES.filter((s) => s !== 'skipped'));
    expect(schema.$defs.unit.enum).toEqual([...CHECK_UNITS]);
    expect(schema.$defs.transport.enum).toEqual([...PROBE_TRANSPORTS]);
    expect(schema.properties.schema.const).toBe(PROBE_SCHEMA);
  });
});
