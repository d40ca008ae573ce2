// ServerSelector from pure inputs: a hand-built map, latency reports, connect outcomes and a fake clock.
import { describe, expect, it } from 'vitest';
import type { DERPMap, DERPRegion, DERPServer } from '../../src/lib/derpmap/types.js';
import { ConfigError, NoHealthyServerError } from '../../src/lib/errors.js';
import { HEALTH_FRESHNESS_MS, ServerSelector, latencyReportFrom, type LatencyReport } from '../../src/lib/select/index.js';

function node(regionId: number, code: string, letter: string, extra: Partial<DERPServer> = {}): DERPServer {
  return {
    id: `${regionId}${letter}`,
    hostname: `derp${regionId}${letter}.test`,
    ipv4: '127.0.0.1',
    stunPort: -1,
    derpPort: 443,
    region: code,
    regionCode: regionId,
    canStun: false,
    canRelay: true,
    ...extra,
  };
}

function region(id: number, code: string, nodes = 1, extra: Partial<DERPRegion> = {}): DERPRegion {
  return { regionId: id, regionCode: code, regionName: code.toUpperCase(), nodes: [...'abc'.slice(0, nodes)].map((l) => node(id, code, l)), ...extra };
}

function mapOf(...regions: DERPRegion[]): DERPMap {
  return { regions: Object.fromEntries(regions.map((r) => [r.regionId, r])) };
}

function report(at: number, lat: Record<number, number>): LatencyReport {
  return { at, regions: Object.entries(lat).map(([id, ms]) => ({ regionId: Number(id), latencyMs: ms, method: 'stun' as const, node: null })) };
}

/** A selector over `map` with a settable clock, every node's connect noted ok. */
function setup(map: DERPMap, opts: ConstructorParameters<typeof ServerSelector>[1] = {}) {
  const clock = { t: 1_000_000 };
  const sel = new ServerSelector(map, { now: () => clock.t, ...opts });
  for (const r of Object.values(map.regions)) for (const n of r.nodes) sel.noteConnectResult(n.id, true, clock.t);
  return { sel, clock };
}

const three = () => mapOf(region(1, 'nyc'), region(2, 'fra', 2), region(3, 'sin'));

describe('ServerSelector', () => {
  it('ranks by latency, home first, every node with a reason', () => {
    const { sel, clock } = setup(three());
    sel.noteReport(report(clock.t, { 1: 40, 2: 12, 3: 90 }));
    const r = sel.rank();
    expect(r.map((c) => c.node)).toEqual(['2a', '2b', '1a', '3a']);
    expect(r[0]).toMatchObject({ chosen: true, rank: 1, healthy: true, latencyMs: 12, score: 12, reason: 'lowest latency' });
    expect(r[1]!.reason).toBe('home region, later node');
    expect(sel.homeRegion().regionId).toBe(2);
    expect(sel.selectServer('nyc').id).toBe('1a');
    expect(sel.selectServer(2, ['2a']).id).toBe('2b');
    expect(sel.selectHome().node).toBe('2a');
    expect(sel.pickRegions(2).map((c) => c.node)).toEqual(['2a', '1a']);
    expect(sel.pickRegions(2, new Set([2])).map((c) => c.node)).toEqual(['1a', '3a']);
  });

  it('selectByLatency ignores health; selectHealthy does not', () => {
    const map = three();
    const { sel, clock } = setup(map);
    sel.noteReport(report(clock.t, { 1: 40, 2: 12, 3: 90 }));
    sel.noteConnectResult('2a', false, clock.t, 'refused');
    const servers = [map.regions[1]!.nodes[0]!, map.regions[2]!.nodes[0]!];
    expect(sel.selectByLatency(servers).id).toBe('2a');
    expect(sel.selectHealthy(servers).id).toBe('1a');
    expect(sel.rank().find((c) => c.node === '2a')).toMatchObject({ eligible: false, reason: 'last DERP connect failed: refused' });
    expect(() => sel.selectByLatency([map.regions[1]!.nodes[0]!].map((n) => ({ ...n, regionCode: 9 })))).toThrow(NoHealthyServerError);
  });

  it('applies --region and --exclude (ID, code or node name)', () => {
    const map = three();
    const { sel: a, clock } = setup(map, { regions: ['fra', 3] });
    a.noteReport(report(clock.t, { 1: 1, 2: 12, 3: 9 }));
    expect(a.homeRegion().regionId).toBe(3);
    expect(a.rank().find((c) => c.node === '1a')).toMatchObject({ eligible: false, reason: 'not in --region' });
    const { sel: b } = setup(map, { exclude: ['nyc', '2a'] });
    b.noteReport(report(clock.t, { 1: 1, 2: 12, 3: 90 }));
    expect(b.selectHome().node).toBe('2b');
    expect(b.rank().find((c) => c.node === '1a')!.reason).toBe('region excluded');
    expect(b.rank().find((c) => c.node === '2a')!.reason).toBe('node excluded');
    expect(() => new ServerSelector(map, { regions: ['lhr'] })).toThrow(ConfigError);
  });

  it('keeps the home unless the new best is ≥ 10 ms and ≥ 1/3 faster (§6.8)', () => {
    const { sel, clock } = setup(mapOf(region(1, 'a'), region(2, 'b')));
    sel.noteReport(report(clock.t, { 1: 30, 2: 50 }));
    expect(sel.homeRegion().regionId).toBe(1);
    // Region 1 degrades to 60 ms; history still holds its 30 ms best, so 1 stays.
    clock.t += 1000;
    sel.noteReport(report(clock.t, { 1: 60, 2: 50 }));
    expect(sel.homeRegion().regionId).toBe(1);
    // After history expires: 45 vs 40 is < 10 ms better → keep.
    clock.t += HEALTH_FRESHNESS_MS + 1;
    for (const n of ['1a', '2a']) sel.noteConnectResult(n, true, clock.t);
    sel.noteReport(report(clock.t, { 1: 45, 2: 34 }));
    expect(sel.homeRegion()).toMatchObject({ regionId: 1, bestRegionId: 2 });
    expect(sel.rank()[0]!.reason).toMatch(/hysteresis/);
    // 100 vs 80: 20 ms better but not 1/3 faster → keep.
    clock.t += HEALTH_FRESHNESS_MS + 1;
    for (const n of ['1a', '2a']) sel.noteConnectResult(n, true, clock.t);
    sel.noteReport(report(clock.t, { 1: 100, 2: 80 }));
    expect(sel.homeRegion().regionId).toBe(1);
    // 100 vs 60: both rules met → switch.
    clock.t += HEALTH_FRESHNESS_MS + 1;
    for (const n of ['1a', '2a']) sel.noteConnectResult(n, true, clock.t);
    sel.noteReport(report(clock.t, { 1: 100, 2: 60 }));
    expect(sel.homeRegion()).toMatchObject({ regionId: 2, reason: 'lowest latency; clearly better than previous home 1' });
  });

  it('leaves an unhealthy home at once', () => {
    const { sel, clock } = setup(mapOf(region(1, 'a'), region(2, 'b')));
    sel.noteReport(report(clock.t, { 1: 30, 2: 35 }));
    expect(sel.homeRegion().regionId).toBe(1);
    sel.noteConnectResult('1a', false, clock.t);
    expect(sel.homeRegion()).toMatchObject({ regionId: 2, reason: 'lowest latency; previous home 1 is unhealthy' });
  });

  it('never makes Avoid / NoMeasureNoHome home; applies RegionScore', () => {
    const map = mapOf(region(1, 'a', 1, { avoid: true }), region(2, 'b', 1, { noMeasureNoHome: true }), region(3, 'c'), region(4, 'd'));
    map.homeParams = { regionScore: { 3: 2, 4: 0.5 } };
    const { sel, clock } = setup(map);
    sel.noteReport(report(clock.t, { 1: 5, 2: 5, 3: 20, 4: 35 }));
    const r = sel.rank();
    // 3: 20 × 2 = 40; 4: 35 × 0.5 = 17.5 → 4 is home; Avoid region 1 usable but not home.
    expect(r[0]).toMatchObject({ node: '4a', score: 17.5, regionScore: 0.5, chosen: true });
    expect(r.find((c) => c.node === '1a')).toMatchObject({ eligible: true, homeEligible: false, reason: 'usable, never home (Avoid)' });
    expect(r.find((c) => c.node === '2a')).toMatchObject({ eligible: false, latencyMs: null });
    expect(r.find((c) => c.node === '2a')!.reason).toMatch(/NoMeasureNoHome/);
  });

  it('requires a fresh probe and a fresh successful connect', () => {
    const map = three();
    const clock = { t: 5_000_000 };
    const sel = new ServerSelector(map, { now: () => clock.t, freshnessMs: 1000 });
    sel.noteReport(report(clock.t, { 1: 10, 2: 20 }));
    const byNode = () => Object.fromEntries(sel.rank().map((c) => [c.node, c.reason]));
    expect(byNode()['1a']).toBe('no DERP connect yet');
    expect(byNode()['3a']).toBe('no fresh STUN/HTTPS probe answer');
    sel.noteConnectResult('1a', true, clock.t);
    expect(sel.selectHome().node).toBe('1a');
    clock.t += 1001;
    expect(byNode()['1a']).toBe('no fresh STUN/HTTPS probe answer');
    sel.noteReport(report(clock.t, { 1: 10 }));
    expect(byNode()['1a']).toBe('DERP connect outcome is stale');
  });

  it('throws NoHealthyServerError with context when nothing qualifies', () => {
    const { sel, clock } = setup(three());
    sel.noteReport(report(clock.t, {}));
    let err: unknown;
    try {
      sel.selectHome();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NoHealthyServerError);
    expect((err as NoHealthyServerError).code).toBe('DERP_ERR_NO_HEALTHY_SERVER');
    expect((err as NoHealthyServerError).context.candidates).toBe(4);
    expect(() => sel.selectServer('sin')).toThrow(/no healthy server in region 3 \(sin\)/);
    expect(() => sel.selectHealthy([])).toThrow(NoHealthyServerError);
  });

  it('adapts a netcheck report', () => {
    const r = latencyReportFrom({ now: '2025-01-01T00:00:00.000Z', regions: [{ regionId: 1, latencyMs: 3, method: 'https', node: '1a' }] });
    expect(r).toEqual({ at: Date.parse('2025-01-01T00:00:00.000Z'), regions: [{ regionId: 1, latencyMs: 3, method: 'https', node: '1a' }] });
  });
});
