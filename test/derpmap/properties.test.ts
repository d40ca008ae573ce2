/**
 * Property tests of the DERP map readers (src/lib/derpmap): Tailscale JSON, seed JSON and seed YAML,
 * from text (parseDerpMap, also forced to each format), from decoded values (fromTailscaleJson,
 * fromSeedJson, fromYamlDeployment), validateDerpMap, and loadDerpMap on real files: on any input they
 * return a map or throw MapValidationError (MapFetchError for unreadable files), nothing else. And a
 * valid generated map round-trips through toTailscaleJson / toSeedJson / toYamlDeployment and back.
 * Seed and run counts: test/helpers/fc.ts.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { parse as yamlParse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DERP_MAP_FORMATS,
  MapFetchError,
  MapValidationError,
  fromSeedJson,
  fromTailscaleJson,
  fromYamlDeployment,
  loadDerpMap,
  parseDerpMap,
  toSeedJson,
  toTailscaleJson,
  toYamlDeployment,
  validateDerpMap,
  type DERPMap,
} from '../../src/lib/derpmap/index.js';
import { fcParams } from '../helpers/fc.js';
import { hostileDocs, mutatedValue } from '../helpers/fc-docs.js';

const FIX = resolve(import.meta.dirname, '../fixtures/derpmap');
const FIXTURES = ['tailscale.json', 'seed.json', 'seed.yaml', 'broken-semantic.json', 'proto.json'].map((f) => {
  const text = readFileSync(join(FIX, f), 'utf8');
  return { name: f, text, value: f.endsWith('.yaml') ? (yamlParse(text) as unknown) : (JSON.parse(text) as unknown) };
});

/** Runs `f`; a MapValidationError (with at least one issue) is an answer too, anything else a failure. */
function typed<T>(f: () => T): T | MapValidationError {
  try {
    return f();
  } catch (e) {
    if (!(e instanceof MapValidationError)) throw e;
    expect(e.issues.length).toBeGreaterThan(0);
    return e;
  }
}

/** Every reader of text, and validation plus every writer of what it returned. */
function readEveryWay(text: string): void {
  for (const format of DERP_MAP_FORMATS) {
    const r = typed(() => parseDerpMap(text, 'prop', format));
    if (r instanceof MapValidationError) continue;
    typed(() => validateDerpMap(r.map));
    typed(() => toTailscaleJson(r.map));
    typed(() => toSeedJson(r.map));
    typed(() => toYamlDeployment(r.map));
  }
}

function readValueEveryWay(value: unknown): void {
  for (const from of [fromTailscaleJson, fromSeedJson, fromYamlDeployment]) typed(() => from(value, 'prop'));
}

const docs = fc.oneof(...FIXTURES.map((f) => hostileDocs(f.text, f.value)));

describe('DERP map readers throw only MapValidationError', () => {
  it('on arbitrary text, edited fixtures, wrong types at any path, deep nesting, odd numbers and prototype keys', () => {
    fc.assert(
      fc.property(docs, (text) => readEveryWay(text)),
      fcParams(80),
    );
  });

  it('on decoded values with wrong types at any path (the from* readers)', () => {
    fc.assert(
      fc.property(fc.oneof(...FIXTURES.map((f) => mutatedValue(f.value))), fc.jsonValue({ maxDepth: 4 }), (mutated, any) => {
        readValueEveryWay(mutated);
        readValueEveryWay(any);
        expect(({} as Record<string, unknown>).x).toBeUndefined();
      }),
      fcParams(300),
    );
  });
});

describe('loadDerpMap on real files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'derp-map-props-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('any bytes (invalid UTF-8 included) give a map, MapValidationError or MapFetchError', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.oneof(docs.map((t) => Buffer.from(t)), fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a))), fc.constantFrom(...DERP_MAP_FORMATS), async (bytes, format) => {
        const file = join(dir, `m${n++}`);
        await writeFile(file, bytes);
        try {
          await loadDerpMap(file, { format, maxBytes: 64 << 10 });
        } catch (e) {
          expect(e instanceof MapValidationError || e instanceof MapFetchError).toBe(true);
        }
      }),
      fcParams(100),
    );
  });
});

describe('valid maps round-trip', () => {
  const hostname = fc.domain();
  const node = (regionId: number, letter: string) =>
    fc.record(
      {
        Name: fc.constant(`${regionId}${letter}`),
        RegionID: fc.constant(regionId),
        HostName: hostname,
        IPv4: fc.oneof(fc.ipV4(), fc.constantFrom('', 'none')),
        IPv6: fc.oneof(fc.ipV6(), fc.constantFrom('', 'none')),
        STUNPort: fc.oneof(fc.integer({ min: 0, max: 65_535 }), fc.constant(-1)),
        DERPPort: fc.integer({ min: 0, max: 65_535 }),
        STUNOnly: fc.boolean(),
        CertName: fc.oneof(hostname, fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => `sha256-raw:${Buffer.from(b).toString('hex')}`)),
        InsecureForTests: fc.boolean(),
        CanPort80: fc.boolean(),
        STUNTestIP: fc.ipV4(),
      },
      { requiredKeys: ['Name', 'RegionID', 'HostName'] },
    ).map((n) => {
      // Two rules of §9.3 a node must meet: it offers STUN or relaying, and one address family is usable.
      const fixed = { ...n };
      if (fixed.STUNOnly && fixed.STUNPort === -1) fixed.STUNPort = 3478;
      if (fixed.IPv4 === 'none' && fixed.IPv6 === 'none') fixed.IPv6 = '';
      return fixed;
    });
  const region = (id: number) =>
    fc
      .record(
        {
          RegionID: fc.constant(id),
          RegionCode: fc.stringMatching(/^[a-z][a-z0-9-]{0,11}$/),
          RegionName: fc.string({ maxLength: 20 }),
          Latitude: fc.double({ min: -90, max: 90, noNaN: true }),
          Longitude: fc.double({ min: -180, max: 180, noNaN: true }),
          Avoid: fc.boolean(),
          NoMeasureNoHome: fc.boolean(),
          nodeCount: fc.integer({ min: 1, max: 4 }),
        },
        { requiredKeys: ['RegionID', 'RegionCode', 'nodeCount'] },
      )
      .chain(({ nodeCount, ...r }) => fc.tuple(...Array.from({ length: nodeCount }, (_, i) => node(id, 'abcd'[i]!))).map((Nodes) => ({ ...r, Nodes })));
  const tailscaleMap = fc
    .uniqueArray(fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })), { minLength: 1, maxLength: 4 })
    .chain((ids) =>
      fc.record(
        {
          Regions: fc.tuple(...ids.map(region)).map((rs) => Object.fromEntries(rs.map((r) => [String(r.RegionID), r]))),
          HomeParams: fc.record({ RegionScore: fc.dictionary(fc.constantFrom(...ids.map(String)), fc.double({ min: 0.01, max: 10, noNaN: true })) }),
          omitDefaultRegions: fc.boolean(),
        },
        { requiredKeys: ['Regions'] },
      ),
    );

  it('Tailscale JSON → model → Tailscale / seed JSON / seed YAML → model is the same model', () => {
    let valid = 0;
    fc.assert(
      fc.property(tailscaleMap, (ts) => {
        const r = typed(() => parseDerpMap(JSON.stringify(ts), 'gen'));
        // A generated combination the checks refuse (e.g. STUN-only without STUN) says why, and is skipped.
        if (r instanceof MapValidationError) {
          return;
        }
        const map: DERPMap = r.map;
        expect(r.format).toBe('tailscale');
        const out = typed(() => toTailscaleJson(map));
        if (out instanceof MapValidationError) return;
        valid++;
        expect(parseDerpMap(JSON.stringify(out), 'again').map).toEqual(map);
        expect(fromTailscaleJson(JSON.parse(JSON.stringify(out)) as unknown)).toEqual(map);
        const seedText = JSON.stringify(toSeedJson(map));
        expect(parseDerpMap(seedText, 'seed').format).toBe('seed');
        expect(toTailscaleJson(fromSeedJson(JSON.parse(seedText) as unknown))).toEqual(out);
        expect(toTailscaleJson(parseDerpMap(seedText, 'seed').map)).toEqual(out);
        const yamlText = toYamlDeployment(map);
        const fromYaml = parseDerpMap(yamlText, 'y');
        expect(fromYaml.format).toBe('yaml');
        // The one documented loss: the YAML form cannot say "no region name" (absent reads as the code).
        const yamlOut = JSON.parse(JSON.stringify(out)) as { Regions: Record<string, { RegionName?: string; RegionCode: string }> };
        for (const r of Object.values(yamlOut.Regions)) if (!r.RegionName) r.RegionName = r.RegionCode;
        expect(toTailscaleJson(fromYaml.map)).toEqual(yamlOut);
        expect(toTailscaleJson(fromYamlDeployment(yamlParse(yamlText) as unknown))).toEqual(yamlOut);
      }),
      fcParams(30),
    );
    // Most generated maps must be valid, or the round trip tested nothing.
    expect(valid).toBeGreaterThan(fcParams(30).numRuns! / 2);
  });
});
