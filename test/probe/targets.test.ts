/** Probe targets from a DERP map (region filter, STUN-only nodes) and from --server URLs. */
import { describe, expect, it } from 'vitest';
import type { DERPMap, DERPServer } from '../../src/lib/derpmap/types.js';
import { UnknownRegionError, probeRegionsFromMap, probeRegionsFromServers } from '../../src/lib/probe/index.js';
import { ConfigError } from '../../src/lib/errors.js';

const node = (id: string, regionId: number, code: string, extra: Partial<DERPServer> = {}): DERPServer => ({
  id, hostname: `${id}.example.com`, stunPort: 3478, derpPort: 443, region: code, regionCode: regionId, canStun: true, canRelay: true, ...extra,
});
const map: DERPMap = {
  regions: {
    902: { regionId: 902, regionCode: 'fra', regionName: 'Frankfurt', nodes: [node('902a', 902, 'fra'), node('902b', 902, 'fra', { canRelay: false })] },
    901: { regionId: 901, regionCode: 'nyc', regionName: 'New York', nodes: [node('901a', 901, 'nyc', { derpPort: 8443 })] },
  },
};

describe('probeRegionsFromMap', () => {
  it('every region and node in map order, with the DERP URL clients dial', () => {
    const r = probeRegionsFromMap(map);
    expect(r.map((x) => [x.regionId, x.targets.map((t) => t.node.id)])).toEqual([[901, ['901a']], [902, ['902a', '902b']]]);
    expect(r[0]!.targets[0]!.url).toBe('https://901a.example.com:8443/derp');
    // A STUN-only node is still a target (its DERP checks are skipped).
    expect(r[1]!.targets[1]!.node.canRelay).toBe(false);
  });

  it('--region by ID or code, repeatable; an unknown one names itself and what exists', () => {
    expect(probeRegionsFromMap(map, { regions: ['FRA'] }).map((x) => x.regionId)).toEqual([902]);
    expect(probeRegionsFromMap(map, { regions: ['902', '901'] }).map((x) => x.regionId)).toEqual([901, 902]);
    const err = (() => {
      try {
        probeRegionsFromMap(map, { regions: ['lon'] });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(UnknownRegionError);
    expect((err as Error).message).toBe('region "lon" is not in the map (regions: 901 (nyc), 902 (fra))');
  });
});

describe('probeRegionsFromServers', () => {
  it('one node per URL in region 0; http:// = plain HTTP; STUN at 3478 on the host unless told', () => {
    const [r] = probeRegionsFromServers(['https://derp.example.com', 'http://127.0.0.1:3340/derp']);
    expect(r!.regionId).toBe(0);
    const [a, b] = r!.targets;
    expect(a!.node).toMatchObject({ id: 'derp.example.com', hostname: 'derp.example.com', derpPort: 443, stunPort: 3478, canStun: true });
    expect(a!.node.plainHttp).toBeUndefined();
    expect(a!.url).toBe('https://derp.example.com/derp');
    expect(b!.node).toMatchObject({ id: '127.0.0.1:3340', ipv4: '127.0.0.1', ipv6: 'none', derpPort: 3340, plainHttp: true });
    expect(probeRegionsFromServers(['https://x.example'], { stunPort: -1 })[0]!.targets[0]!.node).toMatchObject({ canStun: false, stunPort: -1 });
    expect(probeRegionsFromServers(['https://x.example'], { stunPort: 3479 })[0]!.targets[0]!.node.stunPort).toBe(3479);
  });

  it('bad URLs and duplicates are ConfigErrors', () => {
    expect(() => probeRegionsFromServers(['ftp://x'])).toThrow(ConfigError);
    expect(() => probeRegionsFromServers(['https://a.example', 'https://a.example/derp'])).toThrow(/given twice/);
  });
});
