/** Home-region selection with hysteresis (netcheck.go addReportHistoryAndSetPreferredDERP), pure. */
import { describe, expect, it } from 'vitest';
import type { DERPMap } from '../../src/lib/derpmap/types.js';
import { choosePreferred, NetcheckHistory, probePlan } from '../../src/lib/netcheck/index.js';

const one = (lat: Record<number, number>, previous = 0) => choosePreferred({ regionLatency: lat, history: [lat], previous });

describe('choosePreferred', () => {
  it('picks the lowest latency, 0 when nothing answered', () => {
    expect(one({ 1: 30, 2: 12, 3: 50 })).toBe(2);
    expect(one({})).toBe(0);
  });

  it('keeps the old home unless the new one is ≥ 10 ms and ≥ 1/3 faster', () => {
    expect(one({ 1: 25, 2: 16 }, 1)).toBe(1); // 9 ms better: too little
    expect(one({ 1: 100, 2: 80 }, 1)).toBe(1); // 20 ms but only 20 % better
    expect(one({ 1: 100, 2: 60 }, 1)).toBe(2); // 40 ms and 40 % better
  });

  it('switches when the old home did not answer this time', () => {
    expect(one({ 2: 40 }, 1)).toBe(2);
  });

  it('uses the best latency over the history window', () => {
    // Region 2 was fast a moment ago: a single slow sample does not hide that.
    expect(choosePreferred({ regionLatency: { 1: 20, 2: 40 }, history: [{ 1: 20, 2: 5 }, { 1: 20, 2: 40 }], previous: 0 })).toBe(2);
  });

  it('applies HomeParams.RegionScore and never picks excluded regions', () => {
    expect(choosePreferred({ regionLatency: { 1: 10, 2: 12 }, history: [{ 1: 10, 2: 12 }], previous: 0, regionScore: { 2: 0.5 } })).toBe(2);
    expect(choosePreferred({ regionLatency: { 1: 10, 2: 12 }, history: [{ 1: 10, 2: 12 }], previous: 0, excluded: new Set([1]) })).toBe(2);
  });

  it('keeps a home with recent DERP traffic when nothing answered, and honours a forced home', () => {
    const now = 1_000_000;
    expect(choosePreferred({ regionLatency: {}, history: [{}], previous: 3, now, lastDerpActivity: () => now - 60_000 })).toBe(3);
    expect(choosePreferred({ regionLatency: {}, history: [{}], previous: 3, now, lastDerpActivity: () => now - 200_000 })).toBe(0);
    expect(choosePreferred({ regionLatency: { 1: 10, 2: 50 }, history: [{ 1: 10, 2: 50 }], previous: 0, force: 2 })).toBe(2);
  });
});

describe('NetcheckHistory', () => {
  const map: DERPMap = {
    regions: {
      1: { regionId: 1, regionCode: 'a', regionName: 'A', nodes: [] },
      2: { regionId: 2, regionCode: 'b', regionName: 'B', nodes: [] },
      3: { regionId: 3, regionCode: 'c', regionName: 'C', nodes: [], avoid: true },
    },
  };

  it('keeps the home across reports unless clearly better, and forgets samples after 5 min 5 s', () => {
    const h = new NetcheckHistory();
    let t = 0;
    expect(h.add({ 1: 20, 2: 25, 3: 1 }, { map, now: (t += 30_000) })).toBe(1);
    expect(h.add({ 1: 24, 2: 18 }, { map, now: (t += 30_000) })).toBe(1); // 6 ms better: stay
    expect(h.add({ 1: 60, 2: 18 }, { map, now: (t += 30_000) })).toBe(2); // clearly better now
    expect(h.preferred).toBe(2);
    // Much later region 2 is slow; its old 18 ms sample has expired, so region 1 wins.
    expect(h.add({ 1: 10, 2: 90 }, { map, now: t + 10 * 60_000 })).toBe(1);
    expect(h.size).toBe(1);
  });
});

describe('probePlan', () => {
  const node = (id: string, ipv4: string, ipv6: string) => ({ id, hostname: 'h', ipv4, ipv6, stunPort: 3478, derpPort: 443, region: 'x', regionCode: 1, canStun: true, canRelay: true });
  it('3 tries at 0/100/200 ms over Nodes[try % len], skipping nodes without the family', () => {
    const r = { regionId: 1, regionCode: 'x', regionName: 'X', nodes: [node('1a', '192.0.2.1', 'none'), node('1b', '192.0.2.2', '2001:db8::2')] };
    expect(probePlan(r, 4).map((p) => [p.delayMs, p.node, p.host])).toEqual([[0, '1a', '192.0.2.1'], [100, '1b', '192.0.2.2'], [200, '1a', '192.0.2.1']]);
    expect(probePlan(r, 6).map((p) => [p.delayMs, p.node])).toEqual([[100, '1b']]);
    expect(probePlan({ ...r, noMeasureNoHome: true }, 4)).toEqual([]);
  });
});
