/**
 * Drop paths found by the packet-accounting harness (test/loadgen/accounting.test.ts): every packet the
 * relay read is either written to its destination's transport (packets_sent) or counted as dropped.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FrameType, MAX_PACKET_SIZE, encode } from '../../src/lib/protocol/index.js';
import type { RelayStats } from '../../src/lib/server/index.js';
import { startRelay, type Fixture } from './fixture.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

function dropped(st: RelayStats): number {
  return Object.values(st.packetsDropped).reduce((a, b) => a + b, 0);
}

describe('packet accounting at close', () => {
  it('counts a packet delivered into a batch whose connection closes before the flush as gone_disconnected, not sent', async () => {
    f = await startRelay();
    const b = await f.connect();
    // One write, parsed in one turn: a packet to itself (into its own batch), then a frame that closes it.
    const bad = Buffer.alloc(5 + 4);
    bad[0] = FrameType.SendPacket;
    bad.writeUInt32BE(4, 1); // shorter than a key: protocol error
    b.write(Buffer.concat([encode.sendPacket(b.publicKey, Buffer.from('to myself')), bad]));
    await b.closedPromise;
    const st = f.server.stats();
    expect(st.packetsReceived).toBe(1);
    expect(st.packetsSent).toBe(0);
    expect(st.packetsDropped.gone_disconnected).toBe(1);
    expect(st.bytesDropped.gone_disconnected).toBe('to myself'.length);
    expect(st.packetsDroppedOther).toBe(1);
  });

  it('writes out what was already sent to a client that half-closes between frames (it reads on), counting only the queue', async () => {
    f = await startRelay({ writeTimeoutMs: 0, sendQueueDepth: 4 });
    const a = await f.connect();
    const b = await f.connect();
    b.pause();
    const payload = Buffer.alloc(MAX_PACKET_SIZE);
    let sent = 0;
    // Until the relay's queue to b overflows: then its socket buffer toward b is full too.
    for (let round = 0; round < 50 && f.server.stats().packetsDropped.queue_head === 0; round++) {
      for (let i = 0; i < 20; i++, sent++) {
        if (!a.sock!.write(encode.sendPacket(b.publicKey, payload))) await new Promise((resolve) => a.sock!.once('drain', resolve));
      }
      await a.ping();
    }
    expect(f.server.stats().packetsDropped.queue_head).toBeGreaterThan(0);
    let got = 0;
    b.onFrame = (fr) => {
      if (fr.type !== 'RecvPacket') return false;
      got++;
      return true;
    };
    b.sock!.end();
    // The relay sees the FIN (b's writes are not paused) and finishes the connection gracefully.
    for (let i = 0; i < 500 && f.server.stats().currentConnections > 1; i++) await a.ping();
    const st = f.server.stats();
    expect(st.currentConnections).toBe(1);
    expect(st.packetsReceived).toBe(sent);
    expect(st.packetsReceived).toBe(st.packetsSent + dropped(st));
    b.resume();
    await b.closedPromise;
    // Everything counted as sent reached b; before, the bytes still in the relay's socket buffer were discarded.
    expect(got).toBe(st.packetsSent);
  });

  it('at a stop, delivers the last packets and Restarting to clients that are still sending (no RST discarding them)', async () => {
    f = await startRelay({ writeTimeoutMs: 0, sendQueueDepth: 4 });
    const fx = f;
    const CLIENTS = 8;
    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => fx.connect()));
    const got = clients.map(() => 0);
    const restarting = clients.map(() => false);
    let writing = true;
    const burst = (c: (typeof clients)[number]): Buffer => Buffer.concat(Array.from({ length: 32 }, () => encode.sendPacket(c.publicKey, Buffer.alloc(1000))));
    clients.forEach((c, i) => {
      c.onFrame = (fr) => {
        if (fr.type === 'RecvPacket') got[i]!++;
        else if (fr.type === 'Restarting') restarting[i] = true;
        else return false;
        return true;
      };
      // Each sends to itself without pause (the relay's socket keeps having unread bytes) and stops
      // reading until the relay's kernel buffer toward it is full.
      const b = burst(c);
      const pump = (): void => {
        if (!writing || c.sock!.destroyed) return;
        if (c.sock!.write(b)) setImmediate(pump);
        else c.sock!.once('drain', pump);
      };
      c.pause();
      pump();
    });
    for (let i = 0; i < 2000 && fx.server.stats().packetsDropped.queue_head < CLIENTS; i++) await new Promise((r) => setImmediate(r));
    expect(fx.server.stats().packetsDropped.queue_head).toBeGreaterThan(0);
    const stopped = fx.server.stop();
    for (const c of clients) c.resume();
    await Promise.all(clients.map((c) => c.closedPromise));
    writing = false;
    await stopped;
    const st = fx.server.stats();
    expect(restarting).toEqual(clients.map(() => true));
    expect(got.reduce((x, y) => x + y, 0)).toBe(st.packetsSent);
  });

  it('logs its final packet counters when it stops (a scrape before the stop misses the last ones)', async () => {
    f = await startRelay();
    const a = await f.connect();
    a.sendPacket(a.publicKey, Buffer.from('one'));
    a.sendPacket(Buffer.alloc(32, 7), Buffer.from('to nobody'));
    await a.ping();
    const logger = f.logger;
    await f.close();
    const e = logger.entries.find((x) => x.msg === 'relay stopped');
    expect(e?.fields).toMatchObject({ packetsReceived: 2, packetsSent: 1, packetsDropped_unknown_dest: 1, packetsDropped_gone_disconnected: 0 });
  });
});

