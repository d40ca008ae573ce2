// Client protocol behaviour against a hand-driven server end (test/client/raw-peer.ts).
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { DERPClient, type DERPClientOptions } from '../../src/lib/client/index.js';
import { BadKeyError, ConnectError, FrameTooLargeError, HandshakeError, PacketTooLargeError, TimeoutError } from '../../src/lib/errors.js';
import { MAGIC, NodePrivateKey, decodeFrame, encode, encodeFrame, formatNodePublic, frameHeader, ipTo16 } from '../../src/lib/protocol/index.js';
import { RawPeer, T } from './raw-peer.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(clientOpts: DERPClientOptions = {}, transport: 'derp' | 'websocket' = 'derp') {
  const peer = await new RawPeer().start();
  const client = new DERPClient({ transport, ...clientOpts });
  cleanups.push(() => peer.stop());
  cleanups.push(() => client.disconnect());
  await client.connect(peer.url());
  const conn = await peer.conn(0);
  return { peer, client, conn };
}

const other = NodePrivateKey.generate();

describe('handshake', () => {
  it.each(['derp', 'websocket'] as const)('sends ClientInfo {version 2, CanAckPings} and learns the server key (%s)', async (transport) => {
    const { peer, client, conn } = await setup({}, transport);
    expect(client.connected).toBe(true);
    expect(client.serverKey?.equals(peer.key.publicKey)).toBe(true);
    expect(conn.clientKey?.equals(client.publicKey)).toBe(true);
    expect(conn.clientInfo).toEqual({ version: 2, canAckPings: true });
  });

  it('fails with ConnectError quoting a non-101 status and body', async () => {
    const peer = await new RawPeer({
      rawResponse: 'HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain\r\nContent-Length: 33\r\n\r\nDERP requires connection upgrade\n',
    }).start();
    cleanups.push(() => peer.stop());
    const client = new DERPClient();
    const err = await client.connect(peer.url()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as Error).message).toContain('426 Upgrade Required');
    expect((err as Error).message).toContain('DERP requires connection upgrade');
    expect(client.connected).toBe(false);
  });

  it('accepts a ServerKey with extra trailing bytes and rejects one without the magic', async () => {
    const extra = await new RawPeer({ serverKeyFrame: (pub) => encodeFrame(T.ServerKey, MAGIC, pub, Buffer.from('future')) }).start();
    cleanups.push(() => extra.stop());
    const c = new DERPClient();
    cleanups.push(() => c.disconnect());
    await c.connect(extra.url());
    expect(c.serverKey?.equals(extra.key.publicKey)).toBe(true);

    const bad = await new RawPeer({ serverKeyFrame: (pub) => encodeFrame(T.ServerKey, Buffer.alloc(8), pub) }).start();
    cleanups.push(() => bad.stop());
    await expect(new DERPClient().connect(bad.url())).rejects.toBeInstanceOf(HandshakeError);

  });

  it('rejects with the abort reason when the caller aborts the connect', async () => {
    const peer = await new RawPeer({ sendServerInfo: false }).start();
    cleanups.push(() => peer.stop());
    const ac = new AbortController();
    const client = new DERPClient();
    const p = client.connect(peer.url(), ac.signal);
    await peer.conn(0);
    ac.abort(new Error('caller gave up'));
    await expect(p).rejects.toThrow('caller gave up');
    expect(client.connected).toBe(false);
  });

  it('bounds the handshake by connectTimeoutMs', async () => {
    const peer = await new RawPeer({ sendServerInfo: false }).start();
    cleanups.push(() => peer.stop());
    const client = new DERPClient({ connectTimeoutMs: 100 });
    await expect(client.connect(peer.url())).rejects.toBeInstanceOf(TimeoutError);
  });

  it('fails with ConnectError when nothing listens', async () => {
    const peer = await new RawPeer().start();
    const url = peer.url();
    await peer.stop();
    await expect(new DERPClient().connect(url)).rejects.toBeInstanceOf(ConnectError);
  });
});

describe('steady state', () => {
  it('answers a server Ping with the same 8 bytes and matches its own pings', async () => {
    const { client, conn } = await setup();
    const data = Buffer.from('01234567');
    conn.write(encode.ping(data));
    const pong = await conn.waitType(T.Pong);
    expect(pong.payload.equals(data)).toBe(true);

    const rtt = client.ping();
    const ping = await conn.waitType(T.Ping);
    conn.write(encode.pong(ping.payload));
    expect(typeof (await rtt)).toBe('number');
  });

  it('does not answer pings when canAckPings is false', async () => {
    const { client, conn } = await setup({ canAckPings: false });
    expect(conn.clientInfo?.canAckPings).toBe(false);
    conn.write(encode.ping(Buffer.from('abcdefgh')));
    // A client ping afterwards: when its Ping arrives, the server Ping was already handled.
    const rtt = client.ping();
    const ping = await conn.waitType(T.Ping);
    conn.write(encode.pong(ping.payload));
    await rtt;
    expect(conn.frames.some((f) => f.type === T.Pong)).toBe(false);
  });

  it('skips unknown frames, KeepAlive and a stray ServerKey, delivers packets and surfaces events', async () => {
    const { peer, client, conn } = await setup();
    const events: string[] = [];
    client.on('health', (e) => events.push(`health:${e.problem}`));
    client.on('restarting', (e) => events.push(`restarting:${e.reconnectInMs}/${e.tryForMs}`));
    client.on('peerPresent', (e) => events.push(`present:${e.ip}:${e.port}:${e.flags}`));
    const gone = once(client, 'peerGone');
    conn.write(
      Buffer.concat([
        frameHeader(0x30, 3),
        Buffer.from('xyz'),
        encode.keepAlive(),
        encode.serverKey(peer.key.publicKey),
        encode.recvPacket(other.publicKey, Buffer.from('hello')),
        encode.health('overloaded'),
        encode.restarting(10, 20),
        encode.peerPresent(other.publicKey, ipTo16('192.0.2.7'), 41641, 1),
        encode.peerGone(other.publicKey, 1),
      ]),
    );
    const it1 = client.receive();
    const first = await it1.next();
    expect(first.done).toBe(false);
    expect(first.value!.srcText).toBe(other.publicText());
    expect(first.value!.data.toString()).toBe('hello');
    const [g] = await gone;
    expect(g).toMatchObject({ peer: other.publicText(), reason: 1, reasonText: 'not-here' });
    expect(events).toEqual(['health:overloaded', 'restarting:10/20', 'present:192.0.2.7:41641:1']);
    expect(client.health).toBe('overloaded');
    expect(client.connectedPeers()).toEqual([]);
  });

  it('treats a frame over 1 MiB as a dead connection', async () => {
    const { client, conn } = await setup({ reconnect: false });
    const closed = once(client, 'disconnected');
    conn.write(frameHeader(T.RecvPacket, (1 << 20) + 1));
    const [ev] = await closed;
    expect(ev.error).toBeInstanceOf(FrameTooLargeError);
    expect(ev.willReconnect).toBe(false);
    expect(client.connected).toBe(false);
  });

  it('validates send() arguments', async () => {
    const { client } = await setup();
    await expect(client.send(other.publicKey, new Uint8Array(65537))).rejects.toBeInstanceOf(PacketTooLargeError);
    await expect(client.send('nodekey:1234', new Uint8Array(1))).rejects.toBeInstanceOf(BadKeyError);
    await expect(client.send(Buffer.alloc(31), new Uint8Array(1))).rejects.toBeInstanceOf(BadKeyError);
  });

  it('batches sends of one tick into one write', async () => {
    const { client, conn } = await setup({}, 'websocket');
    const dst = other.publicText();
    await Promise.all([client.send(dst, Buffer.from('a')), client.send(dst, Buffer.from('b')), client.send(dst, Buffer.from('c'))]);
    const last = await conn.waitFrame((f) => f.type === T.SendPacket && f.payload.subarray(32).toString() === 'c');
    expect(last).toBeDefined();
    // After the ClientInfo message, one message held all three SendPacket frames: 3 × (5 + 32 + 1).
    expect(conn.messageSizes.slice(1)).toEqual([3 * 38]);
    expect(client.connectedPeers()).toEqual([dst]);
  });

  it('keeps WebSocket messages at or under 32 KiB', async () => {
    const { client, conn } = await setup({}, 'websocket');
    const data = Buffer.alloc(65536, 7);
    await client.send(other.publicKey, data);
    const f = await conn.waitType(T.SendPacket);
    const d = decodeFrame(f.type, f.payload);
    expect(d.type === 'SendPacket' && d.data.equals(data) && d.dst.equals(other.publicKey)).toBe(true);
    expect(conn.messageSizes.length).toBeGreaterThan(2);
    for (const s of conn.messageSizes) expect(s).toBeLessThanOrEqual(32 << 10);
  });

  it('drops the oldest received packets when receive() does not keep up, and counts them', async () => {
    const { client, conn } = await setup({ receiveQueueLimit: 2 });
    const rtt = client.ping();
    const ping = await conn.waitType(T.Ping);
    // Five packets, then the Pong: once ping() resolves all five were processed.
    conn.write(Buffer.concat([...[1, 2, 3, 4, 5].map((i) => encode.recvPacket(other.publicKey, Buffer.of(i))), encode.pong(ping.payload)]));
    await rtt;
    expect(client.receiveDrops).toBe(3);
    const it1 = client.receive();
    expect((await it1.next()).value!.data[0]).toBe(4);
    expect((await it1.next()).value!.data[0]).toBe(5);
  });

  it('ends receive() on disconnect and rejects a pending ping', async () => {
    const { client } = await setup();
    const it1 = client.receive();
    const next = it1.next();
    const rtt = client.ping();
    await client.disconnect();
    expect(await next).toEqual({ value: undefined, done: true });
    await expect(rtt).rejects.toThrow();
    await expect(client.send(other.publicKey, Buffer.of(1))).rejects.toThrow(/not connected/);
  });

  it('sends NotePreferred and re-sends it after a reconnect', async () => {
    const { peer, client, conn } = await setup({ reconnect: { delay: () => 0 } });
    client.notePreferred(true);
    const np = await conn.waitType(T.NotePreferred);
    expect(np.payload).toEqual(Buffer.of(1));
    conn.destroy();
    const conn2 = await peer.conn(1);
    expect((await conn2.waitType(T.NotePreferred)).payload).toEqual(Buffer.of(1));
  });
});

describe('liveness and reconnect', () => {
  it('reconnects when the server goes silent for readTimeoutMs', async () => {
    const { peer, client } = await setup({ readTimeoutMs: 150, reconnect: { delay: () => 0 } });
    const [ev] = await once(client, 'disconnected');
    expect(ev.error).toBeInstanceOf(TimeoutError);
    expect(ev.willReconnect).toBe(true);
    await once(client, 'connected');
    await peer.conn(1);
    expect(client.connected).toBe(true);
  });

  it('holds packets sent while reconnecting (oldest dropped beyond the limit) and flushes them after', async () => {
    const { peer, client, conn } = await setup({ sendQueueLimit: 2, reconnect: { delay: () => 0 } });
    const dst = other.publicText();
    client.once('disconnected', () => {
      for (const s of ['one', 'two', 'three']) void client.send(dst, Buffer.from(s));
    });
    conn.destroy();
    const conn2 = await peer.conn(1);
    await conn2.waitFrame((f) => f.type === T.SendPacket && f.payload.subarray(32).toString() === 'three');
    const sent = conn2.frames.filter((f) => f.type === T.SendPacket).map((f) => f.payload.subarray(32).toString());
    expect(sent).toEqual(['two', 'three']);
    expect(client.stats.sendQueueDrops).toBe(1);
  });

  it('waits reconnectInMs after a Restarting frame, then reconnects', async () => {
    const { peer, client, conn } = await setup({ reconnect: { delay: () => 60_000 } });
    const seen: string[] = [];
    client.on('reconnecting', (e) => seen.push(`${e.attempt}:${e.delayMs}`));
    conn.write(encode.restarting(5, 1000));
    await once(client, 'restarting');
    conn.destroy();
    await once(client, 'connected');
    await peer.conn(1);
    // The first retry used the server's reconnectIn, not the (huge) backoff.
    expect(seen).toEqual(['0:5']);
  });

  it('stops reconnecting on disconnect()', async () => {
    const { client, conn } = await setup({ reconnect: { delay: () => 60_000 } });
    const reconnecting = once(client, 'reconnecting');
    conn.destroy();
    await reconnecting;
    await client.disconnect();
    expect(client.connected).toBe(false);
  });
});

describe('keys', () => {
  it('accepts nodekey text for send and reports peer texts', async () => {
    const { client, conn } = await setup();
    await client.send(formatNodePublic(other.publicKey), Buffer.from('x'));
    const f = await conn.waitType(T.SendPacket);
    expect(f.payload.subarray(0, 32).equals(other.publicKey)).toBe(true);
    expect(client.publicText()).toBe(formatNodePublic(client.publicKey));
  });
});
