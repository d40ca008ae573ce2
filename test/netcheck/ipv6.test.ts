// netcheck over IPv6: a STUN server on [::1] and a node whose IPv4 is "none".
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DERPMap } from '../../src/lib/derpmap/types.js';
import { runNetcheck } from '../../src/lib/netcheck/index.js';
import { StunServer } from '../../src/lib/stun/server.js';
import { hasIPv6Loopback } from '../stun/helpers.js';

const v6 = await hasIPv6Loopback();

describe.skipIf(!v6)('netcheck over IPv6', () => {
  let v6Stun: StunServer;
  let v4Stun: StunServer;
  beforeAll(async () => {
    v6Stun = new StunServer({ host: '::1', port: 0 });
    v4Stun = new StunServer({ host: '127.0.0.1', port: 0 });
    await Promise.all([v6Stun.start(), v4Stun.start()]);
  });
  afterAll(async () => {
    await Promise.all([v6Stun.stop(), v4Stun.stop()]);
  });

  it('measures a v6-only region over IPv6 and a v4-only one over IPv4 in one report', async () => {
    const node = (id: number, fam: 4 | 6, port: number) => ({
      id: `${id}a`,
      hostname: fam === 6 ? '::1' : '127.0.0.1',
      ipv4: fam === 4 ? '127.0.0.1' : 'none',
      ipv6: fam === 6 ? '::1' : 'none',
      stunPort: port,
      derpPort: 1,
      region: `r${id}`,
      regionCode: id,
      canStun: true,
      canRelay: false,
    });
    const map: DERPMap = {
      regions: {
        906: { regionId: 906, regionCode: 'six', regionName: 'IPv6 only', nodes: [node(906, 6, v6Stun.port)] },
        904: { regionId: 904, regionCode: 'four', regionName: 'IPv4 only', nodes: [node(904, 4, v4Stun.port)] },
      },
    };
    const rep = await runNetcheck(map, { ipv6: true, captivePortal: 'off', httpsFallback: 'off' });
    expect(rep.udp).toBe(true);
    expect(rep.ipv6).toBe(true);
    expect(rep.ipv4).toBe(true);
    expect(rep.globalV6).toMatch(/^\[::1\]:\d+$/);
    expect(rep.globalV4).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(rep.regionV6Latency[906]).toBeGreaterThan(0);
    expect(rep.regionV4Latency[906]).toBeUndefined();
    expect(rep.regionV4Latency[904]).toBeGreaterThan(0);
    expect(rep.regionV6Latency[904]).toBeUndefined();
    expect(rep.regions.map((r) => [r.regionId, r.method])).toEqual([
      [904, 'stun'],
      [906, 'stun'],
    ]);
  });
});
