// MultiRegionClient over three real loopback relays ("regions"): peer discovery by NotHere, failover.
import { afterEach, describe, expect, it } from 'vitest';
import { MultiRegionClient, type MultiReceivedPacket } from '../../src/lib/connect/multi-region.js';
import { NoHealthyServerError } from '../../src/lib/errors.js';
import { ServerSelector, measure, probeConnects } from '../../src/lib/select/index.js';
import { Collector, fixedReport, startRegions, until } from '../select/helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const EVENTS = ['regionUp', 'regionDown', 'homeChanged', 'peerRegion', 'peerGone', 'flushed'];
const FAST_RECONNECT = { reconnect: { baseMs: 1, maxMs: 20 } };

async function client(map: ConstructorParameters<typeof ServerSelector>[0], lat: Record<number, number>) {
  const selector = new ServerSelector(map);
  await probeConnects(selector);
  selector.noteReport(fixedReport(lat));
  const c = new MultiRegionClient({ selector, k: 2, clientOptions: FAST_RECONNECT, retryMs: 50 });
  cleanups.push(() => c.close());
  const rx = new Collector<MultiReceivedPacket>(c.receive());
  return { c, rx, selector };
}

const sorted = (a: number[]) => [...a].sort((x, y) => x - y);

describe('MultiRegionClient', () => {
  it('finds the peer by NotHere, delivers both ways, and fails over when the shared relay dies', async () => {
    const regions = await startRegions(3);
    cleanups.push(() => regions.stop());
    // A prefers 1 < 2 < 3, B prefers 2 < 3 < 1: with K = 2 they share only region 2.
    const A = await client(regions.map, { 1: 10, 2: 20, 3: 30 });
    const B = await client(regions.map, { 2: 10, 3: 20, 1: 30 });
    const homes: number[] = [];
    A.c.on('homeChanged', (e) => homes.push(e.to));
    await Promise.all([A.c.start(), B.c.start()]);
    await until(A.c, EVENTS, () => A.c.upRegions.length === 2);
    await until(B.c, EVENTS, () => B.c.upRegions.length === 2);
    expect(A.c.upRegions).toEqual([1, 2]);
    expect(B.c.upRegions).toEqual([2, 3]);
    expect(A.c.homeRegion).toBe(1);
    expect(homes).toEqual([1]);

    // A tries its home (1): NotHere → region 2, and the dropped packet is resent there.
    const gone = new Promise((r) => A.c.once('peerGone', r));
    await A.c.send(B.c.publicText(), Buffer.from('hello'));
    expect(await gone).toMatchObject({ regionId: 1, reason: 'not-here', peer: B.c.publicText() });
    const got = await B.rx.wait((p) => p.data.toString() === 'hello');
    expect(got).toMatchObject({ regionId: 2, srcText: A.c.publicText() });
    expect(A.c.peerRegionOf(B.c.publicText())).toBe(2);
    await B.c.send(A.c.publicText(), Buffer.from('hi'));
    expect((await A.rx.wait((p) => p.data.toString() === 'hi')).regionId).toBe(2);

    // A stream over region 2, then region 2 dies mid-stream.
    for (let i = 0; i < 20; i++) await A.c.send(B.c.publicText(), Buffer.from(`pre-${i}`));
    await B.rx.wait((p) => p.data.toString() === 'pre-19');
    const downA = new Promise((r) => A.c.once('regionDown', r));
    const downB = new Promise((r) => B.c.once('regionDown', r));
    await regions.servers[1]!.stop({ restarting: false });
    expect(await downA).toMatchObject({ regionId: 2 });
    expect(await downB).toMatchObject({ regionId: 2 });
    // Both replace region 2 with their next best: A → {1, 3}, B → {3, 1}.
    await until(A.c, EVENTS, () => sorted(A.c.upRegions).join() === '1,3');
    await until(B.c, EVENTS, () => sorted(B.c.upRegions).join() === '1,3');
    expect(B.c.homeRegion).toBe(3);
    for (let i = 0; i < 20; i++) await A.c.send(B.c.publicText(), Buffer.from(`post-${i}`));
    for (let i = 0; i < 20; i++) await B.rx.wait((p) => p.data.toString() === `post-${i}`);
    await B.c.send(A.c.publicText(), Buffer.from('back'));
    expect((await A.rx.wait((p) => p.data.toString() === 'back')).regionId).toBeOneOf([1, 3]);
  });

  it('moves home when the home relay dies, holding packets while nothing is up', async () => {
    const regions = await startRegions(2);
    cleanups.push(() => regions.stop());
    const A = await client(regions.map, { 1: 10, 2: 20 });
    const B = await client(regions.map, { 1: 10, 2: 20 });
    await Promise.all([A.c.start(), B.c.start()]);
    await until(A.c, EVENTS, () => A.c.upRegions.length === 2);
    await until(B.c, EVENTS, () => B.c.upRegions.length === 2);
    const homeA = new Promise((r) => A.c.once('homeChanged', r));
    await regions.servers[0]!.stop({ restarting: false });
    expect(await homeA).toMatchObject({ from: 1, to: 2 });
    await until(B.c, EVENTS, () => B.c.homeRegion === 2);
    await A.c.send(B.c.publicText(), Buffer.from('x'));
    expect((await B.rx.wait((p) => p.data.toString() === 'x')).regionId).toBe(2);
  });

  it('uses --peer-region when given', async () => {
    const regions = await startRegions(3);
    cleanups.push(() => regions.stop());
    const selA = new ServerSelector(regions.map);
    await measure(selA);
    const A = new MultiRegionClient({ selector: selA, k: 1, peerRegion: 3, clientOptions: FAST_RECONNECT });
    cleanups.push(() => A.close());
    const B = await client(regions.map, { 3: 1, 1: 50, 2: 60 });
    await Promise.all([A.start(), B.c.start()]);
    await until(A, EVENTS, () => A.upRegions.includes(3));
    await until(B.c, EVENTS, () => B.c.upRegions.includes(3));
    await A.send(B.c.publicText(), Buffer.from('direct'));
    expect((await B.rx.wait((p) => p.data.toString() === 'direct')).regionId).toBe(3);
    expect(A.peerRegionOf(B.c.publicText())).toBe(3);
  });

  it('rejects start() with NoHealthyServerError when no region answers', async () => {
    const regions = await startRegions(2);
    await regions.stop();
    const sel = new ServerSelector(regions.map);
    const m = await measure(sel);
    expect(m.probes.every((p) => !p.ok)).toBe(true);
    const c = new MultiRegionClient({ selector: sel, k: 2 });
    cleanups.push(() => c.close());
    await expect(c.start()).rejects.toBeInstanceOf(NoHealthyServerError);
  });
});
