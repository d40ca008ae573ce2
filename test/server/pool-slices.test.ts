/**
 * What a connection keeps for its whole life must not be a slice of Node's allocUnsafe pool (64 KiB
 * slabs): under other traffic each long-lived client would keep its own slab alive, up to 64 KiB per
 * client instead of the 32 bytes of its key. The same class of retention as the STUN reply cache the
 * fuzzer found (test/stun/server.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ClientConn } from '../../src/lib/server/conn.js';
import { startRelay, type Fixture } from './fixture.js';

const CLIENTS = 24;
const KEY_LEN = 32;

let fx: Fixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

/** Takes the rest of the current pool slab and more, as other traffic in the relay's process would. */
function churnPool(): void {
  for (let k = 0; k < 3; k++) Buffer.allocUnsafe(Buffer.poolSize >>> 2).fill(k);
}

describe('long-lived per-connection buffers', () => {
  it('a connection keeps only its own bytes for its key and its last destination', async () => {
    fx = await startRelay();
    const sink = await fx.connect();
    for (let i = 0; i < CLIENTS; i++) {
      churnPool();
      const c = await fx.connect();
      churnPool();
      c.sendPacket(sink.publicKey, Buffer.from(`hello ${i}`));
      const got = await sink.nextOf('RecvPacket');
      expect(Buffer.from(got.data).toString()).toBe(`hello ${i}`);
    }
    const hub = (fx.server as unknown as { hub: { all: Set<ClientConn> } }).hub;
    const conns = [...hub.all];
    expect(conns.length).toBe(CLIENTS + 1);
    let bytes = 0;
    for (const c of conns) {
      const held = [c.key, (c as unknown as { cacheKey: Buffer | null }).cacheKey];
      for (const b of held) if (b) bytes += b.buffer.byteLength;
    }
    // A key and a destination cache per sender: 2 × 32 bytes each, not 64 KiB slabs.
    expect(bytes).toBeLessThanOrEqual(conns.length * 2 * KEY_LEN);
  });
});
