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
});
