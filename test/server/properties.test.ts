/**
 * Property tests of the relay's own reading path (conn.ts parses straight off the socket, readbuf.ts
 * hands it the shared read buffer): a real RelayServer on loopback, a generated stream of frames sent
 * by a real client as generated splits (separate TCP writes, or separate WebSocket messages), and the
 * check that what the peers receive is exactly what was sent, in order, for every split. Three relays:
 * plain, with an admission hook that answers asynchronously (bytes are held and replayed), and with a
 * client rate limit (reading pauses mid-stream and the held frame is replayed). Malformed and
 * oversized frames at any split close the sender with the same reason as unsplit.
 *
 * TCP splits are separate writes with Nagle off, each awaited: the relay's reads see at most those
 * boundaries (usually exactly them). WebSocket messages reach the parser one by one, so those splits
 * are exact. Seed and run counts: test/helpers/fc.ts.
 */
import * as net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FrameType,
  KEY_LEN,
  MAX_CLIENT_INFO_LEN,
  MAX_PACKET_SIZE,
  MAX_PING_LEN,
  MIN_CLIENT_INFO_LEN,
  NodePrivateKey,
  PING_LEN,
  buildClientInfoFrame,
  encode,
  encodeFrame,
  frameHeader,
  isKnownFrameType,
} from '../../src/lib/protocol/index.js';
import { readIntoSharedBuffer } from '../../src/lib/server/readbuf.js';
import type { LogEntry } from '../../src/lib/util/logger.js';
import { cut, fcParams, splitsOf } from '../helpers/fc.js';
import type { RawClient } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';

/** Bound on every wait (a hang is a failure, not a slow pass). */
const WAIT_MS = 10_000;

interface Relay {
  name: string;
  f: Fixture;
  /** The receiving peer and what it got, by sender key (hex). */
  b: RawClient;
  got: Map<string, string[]>;
}

const relays: Relay[] = [];

async function relay(name: string, init: Parameters<typeof startRelay>[0]): Promise<Relay> {
  const f = await startRelay(init);
  const b = await f.connect();
  const got = new Map<string, string[]>();
  b.onFrame = (fr) => {
    if (fr.type !== 'RecvPacket') return false;
    const k = fr.src.toString('hex');
    let l = got.get(k);
    if (l === undefined) got.set(k, (l = []));
    l.push(fr.data.toString('hex'));
    return true;
  };
  return { name, f, b, got };
}

beforeAll(async () => {
  relays.push(await relay('plain', {}));
  // Admission answers on a later turn: ClientInfo and what follows it are held, then replayed.
  relays.push(await relay('async admission', { admit: () => new Promise((r) => setImmediate(() => r({ allow: true, source: 'test', reason: 'later' }))) }));
  // Burst is the minimum (one maximal packet), so bigger streams go into debt and wait mid-stream.
  relays.push(await relay('rate limited', { clientLimits: { rate: 1 << 20, burst: 1 } }));
});
afterAll(async () => {
  for (const r of relays) await r.f.close();
});

function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (t = setTimeout(() => rej(new Error(`timed out: ${what}`)), WAIT_MS)))]).finally(() => clearTimeout(t));
}

function localPort(c: RawClient): number {
  return c.sock ? c.sock.localPort! : (c.ws as unknown as { _socket: { localPort: number } })._socket.localPort;
}

/** Sends `parts` as separate TCP writes or WebSocket messages, each awaited. */
async function sendParts(c: RawClient, parts: readonly Buffer[]): Promise<void> {
  for (const p of parts) {
    if (c.closed) return;
    await new Promise<void>((resolve) => {
      if (c.ws !== null) c.ws.send(p, { binary: true }, () => resolve());
      else c.sock!.write(p, () => resolve());
    });
  }
}

/** A frame of the steady state and what it makes the relay send: a packet to B, a Pong to A, or nothing. */
type Step = { bytes: Buffer; toB?: string; pong?: string };

const data = fc.oneof(
  { weight: 5, arbitrary: fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: MAX_PACKET_SIZE }).map((n) => Buffer.alloc(n, n & 0xff)) },
);

/** Steps given B's key (packets must go to a present peer, or the relay answers PeerGone). */
function step(bKey: Buffer): fc.Arbitrary<Step> {
  return fc.oneof(
    { weight: 5, arbitrary: data.map((d) => ({ bytes: encode.sendPacket(bKey, d), toB: d.toString('hex') })) },
    {
      weight: 2,
      arbitrary: fc.uint8Array({ minLength: PING_LEN, maxLength: 40 }).map((d) => ({ bytes: encodeFrame(FrameType.Ping, d), pong: Buffer.from(d.subarray(0, PING_LEN)).toString('hex') })),
    },
    { weight: 1, arbitrary: fc.boolean().map((p) => ({ bytes: encode.notePreferred(p) })) },
    // Read and discarded: unknown types, frames only a server sends, a Pong the relay did not ask for.
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.oneof(
            fc.integer({ min: 0, max: 255 }).filter((t) => !isKnownFrameType(t)),
            fc.constantFrom(FrameType.ServerKey, FrameType.ServerInfo, FrameType.RecvPacket, FrameType.KeepAlive, FrameType.PeerGone, FrameType.PeerPresent, FrameType.Pong, FrameType.Health, FrameType.Restarting),
          ),
          fc.uint8Array({ maxLength: 100 }),
        )
        .map(([t, p]) => ({ bytes: encodeFrame(t, p) })),
    },
  );
}

let runId = 0;

function maximal(bKey: Buffer): Step[] {
  return [1, 2].map((i) => {
    const d = Buffer.alloc(MAX_PACKET_SIZE, i);
    return { bytes: encode.sendPacket(bKey, d), toB: d.toString('hex') };
  });
}

/** A fresh sender on relay `r`: opened (ServerKey read), its ClientInfo frame built but not sent. */
async function sender(r: Relay, transport: 'derp' | 'websocket'): Promise<{ a: RawClient; clientInfo: Buffer }> {
  const a = await r.f.open({ transport });
  const sk = await bounded(a.next(), 'ServerKey');
  if (sk.type !== 'ServerKey') throw new Error(`expected ServerKey, got ${sk.type}`);
  a.serverKey = Buffer.from(sk.serverKey);
  return { a, clientInfo: buildClientInfoFrame(a.key.keyObject, a.key.publicKey, a.serverKey, { version: 2, canAckPings: true }) };
}

const relayIdx = fc.integer({ min: 0, max: 2 });
const transport = fc.constantFrom('derp' as const, 'websocket' as const);

describe('the relay reads the same frames for every split of the same bytes', () => {
  it('on this Node, accepted sockets read into the shared buffer (so the TCP cases below go through readbuf.ts)', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      const sock = await bounded(accepted, 'accept');
      const got = new Promise<string>((r) => expect(readIntoSharedBuffer(sock, (n, buf) => r(buf.toString('latin1', 0, n)))).toBe(true));
      client.write('shared');
      expect(await bounded(got, 'shared read')).toBe('shared');
      sock.destroy();
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('valid streams: B gets exactly the packets, A exactly the Pongs, in order', async () => {
    const bKeys = relays.map((r) => r.b.publicKey);
    await fc.assert(
      fc.asyncProperty(
        relayIdx.chain((ri) =>
          fc.tuple(fc.constant(ri), fc.array(step(bKeys[ri]!), { maxLength: 12 })).chain(([i, steps]) => {
            // ClientInfo is ~100 bytes; the stream length is only known after encoding, so cut positions
            // are drawn as fractions of it.
            return fc.tuple(fc.constant(i), fc.constant(steps), fc.uniqueArray(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 30 }), fc.boolean());
          }),
        ),
        transport,
        async ([ri, steps, fractions, bytewiseHead], tr) => {
          const r = relays[ri]!;
          const { a, clientInfo } = await sender(r, tr);
          try {
            const marker = Buffer.alloc(8);
            marker.writeUInt32BE(++runId, 4);
            // On the rate-limited relay, two maximal packets first: more than the burst, so reading waits.
            if (r.name === 'rate limited') steps = [...maximal(r.b.publicKey), ...steps];
            const stream = Buffer.concat([clientInfo, ...steps.map((s) => s.bytes), encode.ping(marker)]);
            let cuts = [...new Set(fractions.map((x) => Math.floor(x * stream.length)).filter((c) => c > 0 && c < stream.length))].sort((x, y) => x - y);
            // Sometimes the first 120 bytes (ClientInfo and the first header) one by one.
            if (bytewiseHead) cuts = [...new Set([...Array.from({ length: Math.min(120, stream.length - 1) }, (_, i) => i + 1), ...cuts])].sort((x, y) => x - y);
            await sendParts(a, cut(stream, cuts));
            const markerPong = `Pong:${marker.toString('hex')}`;
            const seen: string[] = [];
            while (seen[seen.length - 1] !== markerPong) {
              const fr = await bounded(a.next(), `A's marker Pong (${r.name}, ${tr})`);
              seen.push(fr.type === 'Pong' ? `Pong:${fr.data.toString('hex')}` : fr.type);
            }
            // B's own round trip: its Pong comes after every packet the relay queued to it before.
            await bounded(r.b.ping(), 'B ping');
            expect(seen).toEqual(['ServerInfo', ...steps.filter((s) => s.pong !== undefined).map((s) => `Pong:${s.pong}`), markerPong]);
            expect(r.got.get(a.publicKey.toString('hex')) ?? []).toEqual(steps.filter((s) => s.toB !== undefined).map((s) => s.toB));
            expect(a.closed).toBe(false);
          } finally {
            r.got.delete(a.publicKey.toString('hex'));
            a.destroy();
          }
        },
      ),
      fcParams(50),
    );
  });

  /** A bad frame: its bytes, and whether it is one the handshake rejects (sent instead of ClientInfo). */
  const badFrame: fc.Arbitrary<{ bytes: Buffer; handshake: boolean }> = fc.oneof(
    fc.integer({ min: KEY_LEN + MAX_PACKET_SIZE + 1, max: 0xffffffff }).map((n) => ({ bytes: frameHeader(FrameType.SendPacket, n), handshake: false })),
    fc.integer({ min: 0, max: KEY_LEN - 1 }).map((n) => ({ bytes: encodeFrame(FrameType.SendPacket, Buffer.alloc(n)), handshake: false })),
    fc.integer({ min: 0, max: 20 }).filter((n) => n !== 1).map((n) => ({ bytes: encodeFrame(FrameType.NotePreferred, Buffer.alloc(n)), handshake: false })),
    fc.oneof(fc.integer({ min: 0, max: PING_LEN - 1 }), fc.integer({ min: MAX_PING_LEN + 1, max: 0xffffffff })).map((n) => ({ bytes: n < 100 ? encodeFrame(FrameType.Ping, Buffer.alloc(n)) : frameHeader(FrameType.Ping, n), handshake: false })),
    fc.constantFrom(FrameType.ForwardPacket, FrameType.WatchConns, FrameType.ClosePeer).map((t) => ({ bytes: encodeFrame(t, Buffer.alloc(t === FrameType.ForwardPacket ? 70 : t === FrameType.ClosePeer ? 32 : 0)), handshake: false })),
    // Handshake: another frame first, a ClientInfo outside its size bounds, one whose box does not open.
    fc.integer({ min: 0, max: 255 }).filter((t) => t !== FrameType.ClientInfo).map((t) => ({ bytes: encodeFrame(t, Buffer.alloc(40)), handshake: true })),
    fc.oneof(fc.integer({ min: 0, max: MIN_CLIENT_INFO_LEN - 1 }), fc.integer({ min: MAX_CLIENT_INFO_LEN + 1, max: 0xffffffff })).map((n) => ({ bytes: n < 100 ? encodeFrame(FrameType.ClientInfo, Buffer.alloc(n, 1)) : frameHeader(FrameType.ClientInfo, n), handshake: true })),
    fc.uint8Array({ minLength: 40, maxLength: 120 }).map((junk) => ({ bytes: encodeFrame(FrameType.ClientInfo, NodePrivateKey.generate().publicKey, junk), handshake: true })),
  );

  /** Sends `stream` as `parts` from a fresh sender; the relay's close reason and what B got first. */
  async function closeReason(r: Relay, tr: 'derp' | 'websocket', build: (clientInfo: Buffer) => Buffer, cutsOf: (len: number) => number[]): Promise<{ reason: string; toB: string[] }> {
    const { a, clientInfo } = await sender(r, tr);
    const before = new Set(r.f.logger.entries);
    const port = localPort(a);
    try {
      const stream = build(clientInfo);
      const closed = r.f.logger.waitFor((e: LogEntry) => !before.has(e) && e.fields.remote === `127.0.0.1:${port}` && (e.msg === 'closing connection' || e.msg === 'connection closed'));
      await sendParts(a, cut(stream, cutsOf(stream.length)));
      const e = await bounded(closed, `close of the sender (${r.name}, ${tr})`);
      await bounded(a.closedPromise, 'sender closed');
      await bounded(r.b.ping(), 'B ping');
      return { reason: String(e.fields.reason), toB: r.got.get(a.publicKey.toString('hex')) ?? [] };
    } finally {
      r.got.delete(a.publicKey.toString('hex'));
      a.destroy();
    }
  }

  it('malformed and oversized frames: the same close reason, and the same packets before them, at any split', async () => {
    const bKeys = relays.map((r) => r.b.publicKey);
    await fc.assert(
      fc.asyncProperty(
        relayIdx.chain((ri) => fc.tuple(fc.constant(ri), fc.array(step(bKeys[ri]!), { maxLength: 5 }), badFrame, fc.uint8Array({ maxLength: 60 }), fc.uniqueArray(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 20 }))),
        transport,
        async ([ri, steps, bad, trailing, fractions], tr) => {
          const r = relays[ri]!;
          const build = (ci: Buffer) => Buffer.concat(bad.handshake ? [bad.bytes, Buffer.from(trailing)] : [ci, ...steps.map((s) => s.bytes), bad.bytes, Buffer.from(trailing)]);
          const whole = await closeReason(r, tr, build, () => []);
          const split = await closeReason(r, tr, build, (len) => [...new Set(fractions.map((x) => Math.floor(x * len)).filter((c) => c > 0 && c < len))].sort((x, y) => x - y));
          // Reasons name the sender's own key only for bad boxes; those differ per connection.
          const norm = (s: string) => s.replace(/from [0-9a-f]{16}…/, 'from <key>…');
          expect(norm(split.reason)).toBe(norm(whole.reason));
          expect(whole.reason).not.toMatch(/EOF|connection closed|client disconnected/);
          const wantB = bad.handshake ? [] : steps.filter((s) => s.toB !== undefined).map((s) => s.toB);
          expect(whole.toB).toEqual(wantB);
          expect(split.toB).toEqual(wantB);
        },
      ),
      fcParams(40),
    );
  });

  it('a stream that ends inside a frame (TCP FIN): "truncated frame" at any split', async () => {
    const r = relays[0]!;
    await fc.assert(
      fc.asyncProperty(fc.array(step(r.b.publicKey), { minLength: 1, maxLength: 4 }), fc.double({ min: 0, max: 1, noNaN: true }), splitsOf(400, 10), async (steps, at, cuts) => {
        const { a, clientInfo } = await sender(r, 'derp');
        const before = new Set(r.f.logger.entries);
        const port = localPort(a);
        try {
          const body = Buffer.concat(steps.map((s) => s.bytes));
          // Cut strictly inside the last frame.
          const last = steps[steps.length - 1]!.bytes.length;
          const end = clientInfo.length + body.length - last + Math.min(last - 1, 1 + Math.floor(at * (last - 1)));
          const stream = Buffer.concat([clientInfo, body]).subarray(0, end);
          const closed = r.f.logger.waitFor((e: LogEntry) => !before.has(e) && e.fields.remote === `127.0.0.1:${port}` && (e.msg === 'closing connection' || e.msg === 'connection closed'));
          await sendParts(a, cut(stream, cuts.filter((c) => c < stream.length)));
          a.sock!.end();
          const e = await bounded(closed, 'close after FIN');
          expect(e.fields.reason).toBe('EOF in the middle of a frame (truncated frame)');
        } finally {
          a.destroy();
          r.got.delete(a.publicKey.toString('hex'));
        }
      }),
      fcParams(20),
    );
  });

  it('after all of it, each relay still relays between two fresh clients, and the paths under test were taken', async () => {
    const [plain, admission, limited] = relays.map((r) => r.f.server.stats());
    // The generated streams did reach the skip, hold-and-replay and rate-wait paths.
    expect(plain!.unknownFrames).toBeGreaterThan(0);
    expect(plain!.protocolErrors).toBeGreaterThan(0);
    expect(admission!.admissionAllowed).toBeGreaterThan(0);
    expect(limited!.rateLimitWaits).toBeGreaterThan(0);
    for (const r of relays) {
      const c1 = await r.f.connect();
      const c2 = await r.f.connect();
      c1.sendPacket(c2.publicKey, Buffer.from('after'));
      const p = await bounded(c2.nextOf('RecvPacket'), 'canary');
      expect(p.data.toString()).toBe('after');
    }
  });
});
