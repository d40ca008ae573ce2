/** Keepalives come from the hub's wheel: only due connections are touched, KEEPALIVES_PER_TURN per turn, and closed ones leave it. */
import { afterEach, describe, expect, it } from 'vitest';
import { KEEPALIVES_PER_TURN } from '../../src/lib/server/constants.js';
import { startRelay, type Fixture } from './fixture.js';
import { until } from './helpers.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

describe('keepalives per event-loop turn', () => {
  it('clients that come due in one tick all get their keepalive, at most KEEPALIVES_PER_TURN per turn', async () => {
    const N = 4 * KEEPALIVES_PER_TURN;
    // A 2 s keepalive: the hub ticks every 500 ms, so clients connected together come due in one or two ticks.
    f = await startRelay({ keepAliveMs: 2000 });
    const relay = f.server;
    const clients = await Promise.all(Array.from({ length: N }, () => f!.connect()));
    expect(relay.keepAliveEntries()).toBe(N);
    // Sent per event-loop turn, sampled by a self-rescheduling setImmediate.
    let last = relay.stats().keepAlivesSent;
    let max = 0;
    let sampling = true;
    const sample = (): void => {
      const now = relay.stats().keepAlivesSent;
      max = Math.max(max, now - last);
      last = now;
      if (sampling) setImmediate(sample);
    };
    setImmediate(sample);
    await Promise.all(clients.map((c) => c.nextOf('KeepAlive')));
    sampling = false;
    expect(relay.stats().keepAlivesSent).toBeGreaterThanOrEqual(N);
    // N clients over at most two ticks: some turn was full, none more than full.
    expect(max).toBe(KEEPALIVES_PER_TURN);
    // Still scheduled for the next round, and gone from the wheel once closed.
    await until(() => relay.keepAliveEntries() === N, 'every client rescheduled');
    for (const c of clients) c.destroy();
    await until(() => relay.stats().currentConnections === 0, 'every client closed');
    expect(relay.keepAliveEntries()).toBe(0);
  });
});
