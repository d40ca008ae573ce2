/** Parsing, validation and conversion of DERP maps (fixtures in test/fixtures/derpmap). */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  derpUrlOf, fromSeedJson, fromTailscaleJson, fromYamlDeployment, MAX_NODES_PER_REGION, MAX_REGIONS, MapValidationError,
  nodeLetters, parseDerpMap, regionsOf, stunTargets, toSeedJson, toTailscaleJson, toYamlDeployment, type DERPServer,
  type MapIssue,
} from '../../src/lib/derpmap/index.js';

const FIX = resolve(import.meta.dirname, '../fixtures/derpmap');
const text = (f: string) => readFileSync(join(FIX, f), 'utf8');

function issuesOf(fn: () => unknown): MapIssue[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof MapValidationError) return [...err.issues];
    throw err;
  }
  throw new Error('expected a MapValidationError');
}

describe('Tailscale JSON', () => {
  it('reads every field per spec §9.2', () => {
    const { map, format } = parseDerpMap(text('tailscale.json'), 'tailscale.json');
    expect(format).toBe('tailscale');
    expect(regionsOf(map).map((r) => r.regionId)).toEqual([1, 4, 900]);
    expect(map.homeParams).toEqual({ regionScore: { 1: 0.9, 4: 1.5 } });
    expect(map.omitDefaultRegions).toBe(true);
    const nyc = map.regions[1]!;
    expect(nyc).toMatchObject({ regionCode: 'nyc', regionName: 'New York City', latitude: 40.7128, longitude: -74.006 });
    expect(nyc.nodes[0]).toEqual({
      id: '1a', hostname: 'derp1.example.com', ipv4: '192.0.2.10', ipv6: '2001:db8::10', stunPort: 3478, derpPort: 443,
      region: 'nyc', regionCode: 1, canStun: true, canRelay: true, canPort80: true,
    });
    expect(nyc.nodes[1]).toMatchObject({ ipv6: 'none', stunPort: 3479 });
    expect(map.regions[4]!.avoid).toBe(true);
    const home = map.regions[900]!;
    expect(home.noMeasureNoHome).toBe(true);
    expect(home.nodes[0]).toMatchObject({ stunPort: -1, canStun: false, derpPort: 8443, canRelay: true, certName: expect.stringMatching(/^sha256-raw:[0-9a-f]{64}$/) });
    expect(home.nodes[1]).toMatchObject({ id: '900s', canRelay: false, canStun: true, ipv4: '' });
    expect(home.nodes[2]).toMatchObject({ insecureForTests: true, stunTestIP: '127.0.0.1' });
  });

  it('round-trips losslessly (canonical Go output: defaults omitted, Go key order)', () => {
    const original = JSON.parse(text('tailscale.json')) as unknown;
    expect(JSON.stringify(toTailscaleJson(fromTailscaleJson(original)))).toBe(JSON.stringify(original));
  });

  it('accepts any key casing like Go, ignores unknown keys, treats 0/absent as defaults, deletes null regions', () => {
    const { map } = parseDerpMap(
      JSON.stringify({
        regions: { '7': { regionid: 7, REGIONCODE: 'x', nodes: [{ name: '7a', regionID: 7, hostname: 'h.example', stunport: 0, derpport: 0, Extra: 1 }] }, '8': null },
      }),
      'casing.json',
      'tailscale',
    );
    expect(Object.keys(map.regions)).toEqual(['7']);
    expect(map.regions[7]!.nodes[0]).toMatchObject({ id: '7a', regionCode: 7, hostname: 'h.example', stunPort: 3478, derpPort: 443, canStun: true });
  });
});

describe('seed schemas', () => {
  it('detects and reads the seed JSON', () => {
    const { map, format } = parseDerpMap(text('seed.json'), 'seed.json');
    expect(format).toBe('seed');
    expect(map.regions[900]!.nodes[1]).toMatchObject({ id: '900b', stunPort: -1, canStun: false, derpPort: 8443, ipv6: '2001:db8::7' });
    expect(map.regions[901]!.nodes[0]!.canRelay).toBe(false);
    expect(toSeedJson(map)).toEqual(JSON.parse(text('seed.json')));
  });

  it('reads the YAML deployment form with deterministic region IDs (900…) and node names (900a…)', () => {
    const { map, format } = parseDerpMap(text('seed.yaml'), 'seed.yaml');
    expect(format).toBe('yaml');
    expect(regionsOf(map).map((r) => [r.regionId, r.regionCode, r.nodes.map((n) => n.id)])).toEqual([
      [900, 'us-east', ['900a', '900b']],
      [901, 'eu-west', ['901a']],
    ]);
    expect(map.regions[900]!.nodes[1]).toMatchObject({ hostname: 'derp-use2.tachikoma.dev', ipv6: 'none', stunPort: -1, canStun: false, derpPort: 8443 });
    // Written back, it reads to the same model.
    expect(parseDerpMap(toYamlDeployment(map), 'again.yaml').map).toEqual(map);
    expect(fromYamlDeployment({ derp: { servers: [{ region: 'x', hostname: 'x.example' }] } }).regions[900]!.nodes[0]!.id).toBe('900a');
  });

  it('explicit regionIds are never reused for automatic ones', () => {
    const { map } = parseDerpMap('derp:\n  servers:\n    - {region: a, hostname: a.example}\n    - {region: b, regionId: 900, hostname: b.example}\n', 'ids.yaml');
    expect(regionsOf(map).map((r) => [r.regionId, r.regionCode])).toEqual([[900, 'b'], [901, 'a']]);
  });

  it('names nodes like Tailscale', () => {
    expect([0, 1, 25, 26, 27, 99].map(nodeLetters)).toEqual(['a', 'b', 'z', 'aa', 'ab', 'cv']);
  });

  it('Tailscale → seed → Tailscale and → YAML → Tailscale are lossless', () => {
    const map = parseDerpMap(text('tailscale.json'), 't').map;
    const ts = toTailscaleJson(map);
    expect(toTailscaleJson(fromSeedJson(JSON.parse(JSON.stringify(toSeedJson(map))) as unknown))).toEqual(ts);
    expect(toTailscaleJson(parseDerpMap(toYamlDeployment(map), 'y').map)).toEqual(ts);
  });

  it('refuses to export a node with neither STUN nor relay (§9.3)', () => {
    const map = parseDerpMap(text('seed.json'), 's').map;
    const n: DERPServer = map.regions[901]!.nodes[0]!;
    n.canStun = false;
    const issues = issuesOf(() => toTailscaleJson(map));
    expect(issues.map((i) => i.path)).toEqual(['Regions["901"].Nodes[0].STUNOnly']);
  });
});

describe('validation', () => {
  it('a non-object node keeps its index, so later issues name the right nodes', () => {
    const map = { Regions: { '900': { RegionID: 900, RegionCode: 'a', Nodes: ['x', { Name: '900a', RegionID: 900, HostName: 'h1' }, { Name: '900a', RegionID: 900, HostName: 'h2' }] } } };
    const issues = issuesOf(() => parseDerpMap(JSON.stringify(map), 'm.json'));
    expect(issues.map((i) => [i.path, i.message])).toEqual([
      ['Regions["900"].Nodes[0]', 'expected a node object, found "x"'],
      ['Regions["900"].Nodes[2].Name', 'node name "900a" is already used by Regions["900"].Nodes[1]'],
    ]);
  });

  it('reports every semantic problem with its path and line', () => {
    const issues = issuesOf(() => parseDerpMap(text('broken-semantic.json'), 'broken-semantic.json'));
    const by = (p: string) => issues.filter((i) => i.path === p).map((i) => i.message);
    expect(issues.every((i) => i.source === 'broken-semantic.json' && typeof i.line === 'number')).toBe(true);
    expect(by('Regions["900"].RegionID')).toEqual(['region ID 901 does not match its key "900"']);
    expect(by('Regions["900"].Nodes[1].Name')[0]).toContain('"900a" is already used by Regions["900"].Nodes[0]');
    expect(by('Regions["900"].Nodes[1].IPv4')[0]).toContain('found "999.1.1.1"');
    expect(by('Regions["900"].Nodes[2].HostName')).toHaveLength(1);
    expect(by('Regions["900"].Nodes[2].STUNOnly')[0]).toContain('useless');
    expect(by('Regions["900"].Nodes[3].IPv4')[0]).toContain('both "none"');
    expect(by('Regions["900"].Nodes[4].STUNPort')).toEqual(['expected an integer from -1 to 65535, found 70000']);
    expect(by('Regions["900"].Nodes[4].DERPPort')).toEqual(['expected an integer from 0 to 65535, found "443"']);
    expect(by('Regions["abc"]')[0]).toContain('decimal region ID');
    const stun = issues.find((i) => i.path === 'Regions["900"].Nodes[4].STUNPort')!;
    expect(stun.line).toBe(12);
  });

  it('gives line and column for JSON and YAML syntax errors', () => {
    const [j] = issuesOf(() => parseDerpMap(text('broken-syntax.json'), 'broken-syntax.json'));
    expect(j).toMatchObject({ source: 'broken-syntax.json', line: 5, column: 48 });
    expect(j!.message).toContain('JSON syntax error');
    const [y] = issuesOf(() => parseDerpMap(text('broken-syntax.yaml'), 'broken-syntax.yaml'));
    expect(y!.message).toContain('YAML syntax error');
    expect(y!.line).toBeGreaterThanOrEqual(4);
  });

  it('YAML deployment problems point at derp.servers[i]', () => {
    const issues = issuesOf(() => parseDerpMap(text('broken-seed.yaml'), 'broken-seed.yaml'));
    expect(issues.map((i) => [i.path, i.line])).toEqual([
      ['derp.servers[0].stunPort', 5],
      ['derp.servers[1].derpPort', 8],
      ['derp.servers[1].region', 7],
    ]);
    expect(issues[0]!.message).toBe('expected an integer from -1 to 65535, found "3478"');
  });

  it('hostile input: non-objects, prototype keys, too many regions or nodes, deep nesting, empty', () => {
    expect(issuesOf(() => parseDerpMap(text('not-object.json'), 'n'))[0]!.message).toContain('expected a JSON object');
    expect(issuesOf(() => parseDerpMap('"x"', 'n'))[0]!.message).toContain('found "x"');
    expect(issuesOf(() => parseDerpMap('', 'n'))[0]!.message).toContain('empty');
    const proto = issuesOf(() => parseDerpMap(text('proto.json'), 'proto.json'));
    expect(proto.map((i) => i.path)).toEqual(['__proto__', 'Regions["__proto__"]', 'Regions["1"].Nodes[0].constructor']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();

    const many = { Regions: Object.fromEntries(Array.from({ length: MAX_REGIONS + 1 }, (_, i) => [String(i + 1), {}])) };
    expect(issuesOf(() => parseDerpMap(JSON.stringify(many), 'many'))[0]!.message).toContain(`too many regions: ${MAX_REGIONS + 1}`);
    const nodes = Array.from({ length: MAX_NODES_PER_REGION + 1 }, (_, i) => ({ Name: `n${i}`, RegionID: 1, HostName: 'h' }));
    expect(issuesOf(() => parseDerpMap(JSON.stringify({ Regions: { '1': { RegionID: 1, Nodes: nodes } } }), 'n'))[0]!.message).toContain('too many nodes');

    const deep = '{"Regions":{"1":{"Extra":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}}}';
    expect(issuesOf(() => parseDerpMap(deep, 'deep')).map((i) => i.path)).toEqual(['Regions["1"].RegionID', 'Regions["1"].Nodes']);
    const deepYaml = 'a: ' + '['.repeat(100_000);
    expect(issuesOf(() => parseDerpMap(deepYaml, 'deep.yaml')).length).toBeGreaterThan(0);
    expect(issuesOf(() => parseDerpMap('{"Regions": {}}', 'e'))[0]!.message).toBe('the map has no regions');
  });

  it('a forced format overrides detection (seed JSON read as Tailscale is wrong, §9.4)', () => {
    const issues = issuesOf(() => parseDerpMap(text('seed.json'), 'seed.json', 'tailscale'));
    expect(issues.some((i) => i.path === 'Regions["900"].Nodes[0].Name' && i.message.includes('empty'))).toBe(true);
  });
});

describe('helpers', () => {
  const map = parseDerpMap(text('tailscale.json'), 't').map;
  const node = (id: string) => regionsOf(map).flatMap((r) => r.nodes).find((n) => n.id === id)!;

  it('stunTargets follows §5.1', () => {
    expect(stunTargets(node('1a'))).toEqual([
      { family: 4, host: '192.0.2.10', port: 3478, resolve: false },
      { family: 6, host: '2001:db8::10', port: 3478, resolve: false },
    ]);
    expect(stunTargets(node('1b'))).toEqual([{ family: 4, host: '192.0.2.11', port: 3479, resolve: false }]);
    expect(stunTargets(node('4a')).map((t) => [t.family, t.host, t.resolve])).toEqual([[4, 'derp4.example.com', true], [6, 'derp4.example.com', true]]);
    expect(stunTargets(node('900a'))).toEqual([]);
    expect(stunTargets(node('900t'))).toEqual([{ family: 4, host: '127.0.0.1', port: 3478, resolve: false }]);
  });

  it('derpUrlOf adds the port only when not 443', () => {
    expect(derpUrlOf(node('1a'))).toBe('https://derp1.example.com/derp');
    expect(derpUrlOf(node('900a'))).toBe('https://198.51.100.5:8443/derp');
  });
});

// Found by the property tests (properties.test.ts): yaml printed a Node warning for such documents.
describe('YAML input prints nothing', () => {
  it('a mapping or sequence used as a key is an issue or an unknown key, never a process warning on stderr', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      for (const t of ['? [a]\n: b\n', '? {x: 1}\n: 2\nRegions: {}\n']) {
        try {
          parseDerpMap(t, 'k.yaml');
        } catch (e) {
          expect(e).toBeInstanceOf(MapValidationError);
        }
      }
      // Node emits warnings on a later tick.
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.map((w) => w.message)).toEqual([]);
  });
});
