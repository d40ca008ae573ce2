/** A burst of new connections' first reads is spread over event-loop turns (relay firstReads), nothing lost. */
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FrameType, NodePrivateKey, buildClientInfoFrame, buildUpgradeRequest } from '../../src/lib/protocol/index.js';
import { FIRST_READS_PER_TURN } from '../../src/lib/server/constants.js';
import { startRelay, type Fixture } from './fixture.js';
import { openTcp, until } from './helpers.js';

let f: Fixture | null = null;
const socks: net.Socket[] = [];
afterEach(async () => {
  for (const s of socks.splice(0)) s.destroy();
  await f?.close();
  f = null;
});

/** The frame types the relay sent after its HTTP head, once `want` of them have arrived. */
function framesAfterHead(sock: net.Socket, want: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    let acc = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      acc = Buffer.concat([acc, d]);
      const end = acc.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (!acc.subarray(0, 12).toString('latin1').startsWith('HTTP/1.1 101')) reject(new Error(`not a 101: ${acc.subarray(0, 40).toString('latin1')}`));
      const types: number[] = [];
      let off = end + 4;
      while (acc.length - off >= 5) {
        const len = acc.readUInt32BE(off + 1);
        if (acc.length - off - 5 < len) break;
        types.push(acc[off]!);
        off += 5 + len;
      }
      if (types.length >= want) resolve(types);
    });
    sock.once('close', () => reject(new Error('closed before the handshake finished')));
  });
}

/** `n` connections to the relay, accepted and idle; the DERP upgrade head they will send. */
async function openIdle(n: number): Promise<string> {
  const relay = f!.server;
  await openTcp(relay, n, socks);
  return buildUpgradeRequest({ host: `127.0.0.1:${relay.port}`, path: '/derp', fastStart: false });
}

describe('first reads per event-loop turn', () => {
  it('a burst of upgrades in one turn is answered in full, later ones deferred, each ClientInfo sent right behind its head answered', async () => {
    const BURST = 4 * FIRST_READS_PER_TURN;
    f = await startRelay();
    const relay = f.server;
    const head = await openIdle(BURST);
    const answers = socks.map((s) => framesAfterHead(s, 2));
    // The heads in one synchronous loop, so the relay reads them in one poll. ClientInfo follows at once
    // (a client that knows the relay's key can): in the first read or a later one, it must be answered.
    for (const s of socks) s.write(head);
    for (const s of socks) {
      const k = NodePrivateKey.generate();
      s.write(buildClientInfoFrame(k.keyObject, k.publicKey, relay.publicKey, { version: 2, canAckPings: true }));
    }
    for (const a of answers) expect(await a).toEqual([FrameType.ServerKey, FrameType.ServerInfo]);
    const st = relay.stats();
    expect(st.firstReadsDeferred).toBeGreaterThanOrEqual(BURST - 2 * FIRST_READS_PER_TURN);
    expect(st.currentConnections).toBe(BURST);
  });

  it('a connection that closes while its first read waits for its turn is released like any other', async () => {
    const BURST = 3 * FIRST_READS_PER_TURN;
    f = await startRelay();
    const relay = f.server;
    const head = await openIdle(BURST);
    // Half write their head and close at once: the deferred ones among them are resumed after they went.
    socks.forEach((s, i) => (i % 2 === 0 ? s.end(head) : s.write(head)));
    await until(() => relay.stats().openConnections === BURST / 2, 'the closed half released');
    expect(relay.stats().firstReadsDeferred).toBeGreaterThan(0);
    expect(relay.stats().currentConnections).toBe(0);
  });
});
