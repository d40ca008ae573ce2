import { afterEach, describe, expect, it } from 'vitest';
import { NodePrivateKey, PeerGoneReason, encode, formatNodePublic, type Frame } from '../../src/lib/protocol/index.js';
import { READ_YIELD_BYTES, READ_YIELD_FRAMES } from '../../src/lib/server/constants.js';
import type { ClientConnInfo } from '../../src/lib/server/index.js';
import type { RawClient, RawTransport } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';
import { until } from './helpers.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

/** Collects RecvPackets on `c` (consumed, not queued) and lets a test wait for a count. */
function collector(c: RawClient) {
  const got: { src: Buffer; data: Buffer }[] = [];
  let want = 0;
  let wake: (() => void) | null = null;
  c.onFrame = (fr: Frame) => {
    if (fr.type !== 'RecvPacket') return false;
    got.push({ src: Buffer.from(fr.src), data: Buffer.from(fr.data) });
    if (got.length >= want && wake) {
      const w = wake;
      wake = null;
      w();
    }
    return true;
  };
  return {
    got,
    until(n: number): Promise<void> {
      want = n;
      if (got.length >= n) return Promise.resolve();
      return new Promise((resolve) => (wake = resolve));
    },
  };
}

/** Frames that arrived before the Pong to a fresh Ping (everything the server wrote before it). */
async function framesBeforePong(c: RawClient): Promise<Frame[]> {
  const token = Buffer.from('syncsync');
  c.write(encode.ping(token));
  const out: Frame[] = [];
  for (;;) {
    const fr = await c.next();
    if (fr.type === 'Pong' && fr.data.equals(token)) return out;
    out.push(fr);
  }
}

describe('relay: handshake and registration', () => {
  it('completes the handshake with ServerInfo {"version":2} and yields the client from acceptClient', async () => {
    f = await startRelay();
    const ac = new AbortController();
    const it = f.server.acceptClient(ac.signal);
    const c = await f.connect({}); // default ClientInfo {version 2, CanAckPings true}
    expect(c.serverInfo).toEqual({ version: 2 });
    const first = (await it.next()).value as ClientConnInfo;
    expect(first.key.equals(c.publicKey)).toBe(true);
    expect(first.keyText).toBe(formatNodePublic(c.publicKey));
    expect(first).toMatchObject({ remoteAddress: '127.0.0.1', transport: 'derp', tls: false, info: { version: 2, canAckPings: true } });
    expect(first.remotePort).toBe(c.sock!.localPort);
    ac.abort();
    expect((await it.next()).done).toBe(true);
    const st = f.server.stats();
    expect(st.accepts).toBe(1);
    expect(st.currentConnections).toBe(1);
    expect(st.clients).toBe(1);
  });
});

describe.each([
  { transport: 'derp' as RawTransport, tls: false },
  { transport: 'websocket' as RawTransport, tls: false },
  { transport: 'derp' as RawTransport, tls: true },
  { transport: 'websocket' as RawTransport, tls: true },
])('relay: bulk exchange over $transport (tls=$tls)', ({ transport, tls }) => {
  it('delivers 10,000 packets each way in order, none lost', async () => {
    f = await startRelay({ withTls: tls });
    const a = await f.connect({ transport });
    const b = await f.connect({ transport });
    const ra = collector(a);
    const rb = collector(b);
    const TOTAL = 10_000;
    // Windows keep the receivers ahead of the senders, so no queue ever overflows.
    const WINDOW = 500;
    for (let sent = 0; sent < TOTAL; sent += WINDOW) {
      const fa: Buffer[] = [];
      const fb: Buffer[] = [];
      for (let i = sent; i < sent + WINDOW; i++) {
        const payload = Buffer.alloc(100 + (i % 50));
        payload.writeUInt32BE(i, 0);
        fa.push(encode.sendPacket(b.publicKey, payload));
        fb.push(encode.sendPacket(a.publicKey, payload));
      }
      a.write(Buffer.concat(fa));
      b.write(Buffer.concat(fb));
      await Promise.all([ra.until(sent + WINDOW), rb.until(sent + WINDOW)]);
    }
    for (const [r, from] of [
      [rb, a],
      [ra, b],
    ] as const) {
      expect(r.got.length).toBe(TOTAL);
      r.got.forEach((p, i) => {
        expect(p.data.readUInt32BE(0)).toBe(i);
        expect(p.data.length).toBe(100 + (i % 50));
      });
      expect(r.got.every((p) => p.src.equals(from.publicKey))).toBe(true);
    }
    const st = f.server.stats();
    expect(st.packetsReceived).toBe(2 * TOTAL);
    expect(st.packetsSent).toBe(2 * TOTAL);
    expect(Object.values(st.packetsDropped).every((n) => n === 0)).toBe(true);
    // ≈ 1.25 MB each way: both senders stopped reading to let the loop turn (READ_YIELD_BYTES), and lost nothing by it.
    expect(st.readYields).toBeGreaterThanOrEqual(2 * Math.floor((TOTAL * 130) / READ_YIELD_BYTES) - 2);
    if (transport === 'websocket') expect(st.websocketAccepts).toBe(2);
  });
});

describe('relay: PeerGone', () => {
  it('sends PeerGone(Disconnected) to connections that were sent packets from a key when its last connection closes', async () => {
    f = await startRelay();
    const a = await f.connect();
    const b = await f.connect();
    const c = await f.connect();
    a.sendPacket(b.publicKey, Buffer.from('hi'));
    expect(await b.nextOf('RecvPacket')).toMatchObject({ data: Buffer.from('hi') });
    await a.close();
    const gone = await b.nextOf('PeerGone');
    expect(gone.peer.equals(a.publicKey)).toBe(true);
    expect(gone.reason).toBe(PeerGoneReason.Disconnected);
    // C never received anything from A.
    expect((await framesBeforePong(c)).filter((x) => x.type === 'PeerGone')).toEqual([]);
    expect(f.server.stats().peerGoneDisconnectedFrames).toBe(1);
  });

  it('does not send PeerGone when a key goes from two connections to one', async () => {
    f = await startRelay();
    const key = NodePrivateKey.generate();
    const a1 = await f.connect({ key });
    const a2 = await f.connect({ key });
    const b = await f.connect();
    a1.sendPacket(b.publicKey, Buffer.from('x'));
    await b.nextOf('RecvPacket');
    await a2.close();
    expect((await framesBeforePong(b)).filter((x) => x.type === 'PeerGone')).toEqual([]);
    await a1.close();
    expect((await b.nextOf('PeerGone')).reason).toBe(PeerGoneReason.Disconnected);
  });

  it('answers packets to an absent key with PeerGone(NotHere), at most a burst of 3 at once', async () => {
    f = await startRelay();
    const a = await f.connect();
    const nobody = NodePrivateKey.generate().publicKey;
    const frames: Buffer[] = [];
    for (let i = 0; i < 10; i++) frames.push(encode.sendPacket(nobody, Buffer.from(`p${i}`)));
    a.write(Buffer.concat(frames));
    const before = await framesBeforePong(a);
    const notHere = before.filter((x) => x.type === 'PeerGone');
    expect(notHere).toHaveLength(3);
    for (const g of notHere) {
      expect(g.type === 'PeerGone' && g.peer.equals(nobody) && g.reason === PeerGoneReason.NotHere).toBe(true);
    }
    const st = f.server.stats();
    expect(st.packetsDropped.unknown_dest).toBe(10);
    expect(st.peerGoneNotHereFrames).toBe(3);
  });
});

describe('relay: Ping, NotePreferred, keepalive', () => {
  it('echoes the first 8 bytes of a Ping as a Pong', async () => {
    f = await startRelay();
    const a = await f.connect();
    a.write(Buffer.concat([Buffer.from([0x12, 0, 0, 0, 20]), Buffer.from('12345678abcdefghijkl')]));
    const pong = await a.nextOf('Pong');
    expect(pong.data.toString()).toBe('12345678');
    const st = f.server.stats();
    expect(st.gotPing).toBe(1);
    expect(st.sentPong).toBe(1);
  });

  it('counts NotePreferred as a home connection', async () => {
    f = await startRelay();
    const a = await f.connect();
    a.write(encode.notePreferred(true));
    await framesBeforePong(a);
    expect(f.server.stats().currentHomeConnections).toBe(1);
    a.write(encode.notePreferred(false));
    await framesBeforePong(a);
    expect(f.server.stats().currentHomeConnections).toBe(0);
  });

  it('sends KeepAlive frames on the configured interval', async () => {
    f = await startRelay({ keepAliveMs: 30 });
    const a = await f.connect();
    await a.nextOf('KeepAlive');
    await a.nextOf('KeepAlive');
    expect(f.server.stats().keepAlivesSent).toBeGreaterThanOrEqual(2);
  });
});

describe('relay: duplicate keys (last writer wins)', () => {
  it('keeps both connections, routes to the newest, then to whichever wrote last', async () => {
    f = await startRelay();
    const key = NodePrivateKey.generate();
    const a1 = await f.connect({ key });
    const a2 = await f.connect({ key });
    const b = await f.connect();
    expect(f.server.stats()).toMatchObject({ dupClientKeys: 1, dupClientConns: 2, currentConnections: 3, clients: 2 });

    b.sendPacket(key.publicKey, Buffer.from('one'));
    expect((await a2.nextOf('RecvPacket')).data.toString()).toBe('one');

    // a1 writes (a Ping) and becomes active.
    await a1.ping();
    b.sendPacket(key.publicKey, Buffer.from('two'));
    expect((await a1.nextOf('RecvPacket')).data.toString()).toBe('two');
    expect((await framesBeforePong(a2)).filter((x) => x.type === 'RecvPacket')).toEqual([]);

    // a1 leaves: a2 is the only one left and active again.
    await a1.close();
    b.sendPacket(key.publicKey, Buffer.from('three'));
    expect((await a2.nextOf('RecvPacket')).data.toString()).toBe('three');
    expect(f.server.stats()).toMatchObject({ dupClientKeys: 0, dupClientConns: 0, currentConnections: 2 });
  });

  it('with three connections, falls back to the most recent sender when the active one leaves', async () => {
    f = await startRelay();
    const key = NodePrivateKey.generate();
    const a1 = await f.connect({ key });
    const a2 = await f.connect({ key });
    const a3 = await f.connect({ key });
    const b = await f.connect();
    await a2.ping(); // a2 active
    await a3.ping(); // a3 active; history … a2, a3
    await a3.close();
    b.sendPacket(key.publicKey, Buffer.from('to-a2'));
    expect((await a2.nextOf('RecvPacket')).data.toString()).toBe('to-a2');
    expect((await framesBeforePong(a1)).filter((x) => x.type === 'RecvPacket')).toEqual([]);
  });
});

describe('relay: packet-count yield', () => {
  it('takes at most READ_YIELD_FRAMES packets of one read per turn, the rest in later turns, in order, none lost', async () => {
    f = await startRelay();
    // One WebSocket message is one read for the relay: 1,000 small frames in a single onData.
    const a = await f.connect({ transport: 'websocket' });
    const b = await f.connect();
    const rb = collector(b);
    const N = 1000;
    const frames: Buffer[] = [];
    for (let i = 0; i < N; i++) {
      const p = Buffer.alloc(16);
      p.writeUInt32BE(i, 0);
      frames.push(encode.sendPacket(b.publicKey, p));
    }
    const before = f.server.stats().readYields;
    a.write(Buffer.concat(frames));
    await rb.until(N);
    expect(rb.got.map((p) => p.data.readUInt32BE(0))).toEqual([...Array(N).keys()]);
    // 53 KB: under the byte yield; the packet count yields after each READ_YIELD_FRAMES.
    expect(f.server.stats().readYields - before).toBe(Math.floor((N - 1) / READ_YIELD_FRAMES));
    expect(Object.values(f.server.stats().packetsDropped).every((n) => n === 0)).toBe(true);
  });
});

describe('relay: API', () => {
  it('relayPacket injects a packet as if the source had sent it; false for an unknown destination', async () => {
    f = await startRelay();
    const a = await f.connect();
    const src = NodePrivateKey.generate().publicKey;
    expect(f.server.relayPacket(formatNodePublic(src), a.publicKey, Buffer.from('injected'))).toBe(true);
    const p = await a.nextOf('RecvPacket');
    expect(p.src.equals(src)).toBe(true);
    expect(p.data.toString()).toBe('injected');
    expect(f.server.relayPacket(src, NodePrivateKey.generate().publicKey, new Uint8Array(4))).toBe(false);
    expect(f.server.stats().packetsDropped.unknown_dest).toBe(1);
  });

  it('stop() sends every client Restarting, closes them and the listener; healthCheck turns not ok', async () => {
    f = await startRelay();
    const a = await f.connect();
    const b = await f.connect({ transport: 'websocket' });
    await f.server.stop();
    for (const c of [a, b]) {
      const r = await c.nextOf('Restarting');
      expect(r).toEqual({ type: 'Restarting', reconnectInMs: 500, tryForMs: 5000 });
      await c.closedPromise;
    }
    expect(f.server.healthCheck()).toMatchObject({ ok: false, listening: false });
  });

  it('stop() closes a client whose reading is paused cleanly: Restarting, EOF, no reset, nothing forced at the grace', async () => {
    // A throttled sender is paused with its bytes waiting in the kernel; the stop must read (and discard)
    // them to see its FIN. Left paused, the grace destroys it with unread bytes: the kernel sends RST.
    f = await startRelay({ writeTimeoutMs: 0, clientLimits: { rate: 20_000 } });
    const b = await f.connect();
    const senders = [await f.connect(), await f.connect({ transport: 'websocket' })];
    const errors: Error[] = [];
    senders[0]!.sock!.on('error', (e) => errors.push(e));
    for (const a of senders) {
      a.onFrame = (fr) => fr.type === 'RecvPacket';
      for (let i = 0; i < 4000; i++) a.sendPacket(b.publicKey, Buffer.alloc(1000, i));
    }
    await until(() => f!.server.stats().rateLimitedConnections === 2, 'both senders throttled');
    await f.server.stop();
    for (const a of senders) {
      expect(await a.nextOf('Restarting')).toMatchObject({ type: 'Restarting' });
      await a.closedPromise;
    }
    expect(f.logger.entries.find((e) => e.msg === 'relay stopped')?.fields).toMatchObject({ forcedCloses: 0 });
    expect(errors).toEqual([]);
    expect(senders[1]!.wsCloseCode).toBe(1001);
  });
});
