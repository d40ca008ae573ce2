/** Slow receivers: bounded per-kind queues that drop the oldest, and the write timeout. */
import { afterEach, describe, expect, it } from 'vitest';
import { encode } from '../../src/lib/protocol/index.js';
import { startRelay, type Fixture } from './fixture.js';
import { blast } from './helpers.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

describe('slow receivers', () => {
  it('queue the newest packets per kind and drop the oldest (queue_head) while the receiver is paused', async () => {
    f = await startRelay({ writeTimeoutMs: 0, sendQueueDepth: 4 });
    const a = await f.connect();
    const b = await f.connect();
    b.pause();
    const SENT = 400; // ≈ 26 MB: more than loopback socket buffers hold
    await blast(a, b.publicKey, SENT);
    await a.ping(); // the server has handled every SendPacket before this Pong
    const st = f.server.stats();
    expect(st.packetsDropped.queue_head).toBeGreaterThan(0);
    expect(st.packetsDroppedOther).toBe(st.packetsDropped.queue_head);
    expect(st.packetsReceived).toBe(SENT);

    const seen: number[] = [];
    let lastArrived: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (lastArrived = resolve));
    b.onFrame = (fr) => {
      if (fr.type !== 'RecvPacket') return false;
      const idx = fr.data.readUInt32BE(0);
      seen.push(idx);
      if (idx === SENT - 1) lastArrived();
      return true;
    };
    b.resume();
    await done;
    // Nothing lost beyond the counted drops; order preserved; the newest packet made it.
    expect(seen.length).toBe(SENT - st.packetsDropped.queue_head);
    expect([...seen].sort((x, y) => x - y)).toEqual(seen);
    expect(f.server.stats().packetsSent).toBe(SENT - st.packetsDropped.queue_head);
  });

  it('close a receiver whose writes stay blocked past the write timeout, counting its queue as gone_disconnected', async () => {
    f = await startRelay({ writeTimeoutMs: 100 });
    const a = await f.connect();
    const b = await f.connect();
    b.pause();
    let timedOut = false;
    const logged = f.logger.waitFor((e) => e.msg === 'closing connection' && /write timeout/.test(String(e.fields.reason)));
    void logged.then(() => (timedOut = true));
    await blast(a, b.publicKey, 5_000, () => timedOut);
    await logged;
    await a.ping();
    const st = f.server.stats();
    expect(st.writeTimeouts).toBe(1);
    expect(st.packetsDropped.gone_disconnected).toBeGreaterThan(0);
    expect(st.currentConnections).toBe(1);
    expect(a.closed).toBe(false);
  });
});

describe('TLS receivers that keep up', () => {
  it('absorb a 2,000-packet burst without drops (a pending TLS write is not a slow reader)', async () => {
    f = await startRelay({ withTls: true });
    const a = await f.connect();
    const b = await f.connect();
    const N = 2000;
    let got = 0;
    let all: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (all = resolve));
    b.onFrame = (fr) => {
      if (fr.type !== 'RecvPacket') return false;
      if (++got === N) all();
      return true;
    };
    const payload = Buffer.alloc(1200);
    // One burst, no flow control: what a tunnel does when a TCP flow inside it opens its window.
    const burst = Buffer.concat(Array.from({ length: N }, () => encode.sendPacket(b.publicKey, payload)));
    a.write(burst);
    await a.ping(); // every SendPacket has been routed (and any drop counted) before this Pong
    expect(f.server.stats().packetsDropped.queue_head).toBe(0);
    await done;
    expect(got).toBe(N);
  });
});
