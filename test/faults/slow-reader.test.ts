/**
 * Fault: a client stops reading while two others blast it. Its queue keeps the newest packets (the
 * oldest dropped, counted queue_head), the write timeout closes it (counted, its queue counted
 * gone_disconnected), the senders stay connected, and a canary pair on the same relay loses nothing.
 * The mechanics alone are in test/server/backpressure.test.ts; this adds the bystanders.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startRelay, type Fixture } from '../server/fixture.js';
import { blast, canaryWorks, until } from '../server/helpers.js';
import { packet } from './helpers.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

describe('fault: a slow reader', () => {
  it('is closed by the write timeout after its queue overflows; senders and the canary pair carry on, the canary losing nothing', async () => {
    f = await startRelay({ writeTimeoutMs: 1000 });
    const [s1, s2, slow, c1, c2] = [await f.connect(), await f.connect(), await f.connect(), await f.connect(), await f.connect()];
    slow.pause();
    const CANARY = 300;
    const seen: number[] = [];
    c2.onFrame = (fr) => {
      if (fr.type !== 'RecvPacket') return false;
      seen.push(Buffer.from(fr.data).readUInt32BE(0));
      return true;
    };

    const timedOut = f.logger.waitFor((e) => e.msg === 'closing connection' && /write timeout/.test(String(e.fields.reason)));
    let stop = false;
    void timedOut.then(() => (stop = true));
    const blasting = Promise.all([blast(s1, slow.publicKey, 20_000, () => stop), blast(s2, slow.publicKey, 20_000, () => stop)]);
    // The slow reader's queue is full and dropping before the canary starts.
    await until(() => f!.server.stats().packetsDropped.queue_head > 0, 'queue_head drops');
    for (let i = 0; i < CANARY; i++) c1.sendPacket(c2.publicKey, packet(i, 1000));
    await until(() => seen.length === CANARY, 'every canary packet', 10_000);
    expect(seen).toEqual(Array.from({ length: CANARY }, (_, i) => i));

    await timedOut;
    const sent = await blasting;
    await Promise.all([s1.ping(), s2.ping()]); // every blasted SendPacket has been handled
    // The paused client sees nothing until it reads; the relay's own count says it is gone.
    await until(() => f!.server.stats().currentConnections === 4, 'the slow reader closed');
    const st = f.server.stats();
    expect(sent[0] + sent[1]).toBe(st.packetsReceived - CANARY);
    expect(st.writeTimeouts).toBe(1);
    expect(st.packetsDropped.queue_head).toBeGreaterThan(0);
    expect(st.packetsDropped.gone_disconnected).toBeGreaterThan(0);
    // Every blasted packet is either written to the slow reader's socket or counted as dropped.
    expect(st.packetsSent - CANARY + st.packetsDropped.queue_head + st.packetsDropped.queue_tail + st.packetsDropped.gone_disconnected + st.packetsDropped.unknown_dest).toBe(sent[0] + sent[1]);
    expect([s1.closed, s2.closed, c1.closed, c2.closed]).toEqual([false, false, false, false]);
    c2.onFrame = null;
    await canaryWorks(c1, c2, 'after');
  });
});
