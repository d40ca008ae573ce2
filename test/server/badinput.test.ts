/**
 * Every kind of bad input closes only the offending connection, with a logged reason naming the remote
 * address, while a healthy pair on the same server keeps relaying.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameType, NodePrivateKey, encode, frameHeader, seal } from '../../src/lib/protocol/index.js';
import type { LogEntry } from '../../src/lib/util/logger.js';
import { dial, RawClient } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';

let f: Fixture;
let good1: RawClient;
let good2: RawClient;
let seq = 0;

beforeAll(async () => {
  f = await startRelay({ handshakeTimeoutMs: 300 });
  good1 = await f.connect();
  good2 = await f.connect();
});
afterAll(async () => {
  await f.close();
});

async function pairStillRelays(): Promise<void> {
  const msg = Buffer.from(`still-alive-${seq++}`);
  good1.sendPacket(good2.publicKey, msg);
  const p = await good2.nextOf('RecvPacket');
  expect(p.data.equals(msg)).toBe(true);
  expect(good1.closed || good2.closed).toBe(false);
}

function localPort(c: RawClient): number {
  return c.sock ? c.sock.localPort! : (c.ws as unknown as { _socket: { localPort: number } })._socket.localPort;
}

/** Waits until `c` is closed by the server and the log names its address and a matching reason. */
async function closedWith(c: RawClient, reason: RegExp): Promise<LogEntry> {
  const port = localPort(c);
  await c.closedPromise;
  const e = await f.logger.waitFor((x) => x.msg === 'closing connection' && x.fields.remote === `127.0.0.1:${port}` && reason.test(String(x.fields.reason)));
  await pairStillRelays();
  return e;
}

/** A connection that has read the ServerKey and may now misbehave in the handshake. */
async function greeted(o: Parameters<Fixture['open']>[0] = {}): Promise<RawClient> {
  const c = await f.open(o);
  const sk = await c.next();
  expect(sk.type).toBe('ServerKey');
  return c;
}

describe('bad input closes only that connection', () => {
  it('a first frame other than ClientInfo', async () => {
    const c = await greeted();
    c.sendPacket(good1.publicKey, Buffer.from('sneaky'));
    await closedWith(c, /first frame is SendPacket, not ClientInfo/);
  });

  it('a ClientInfo box that does not open', async () => {
    const c = await greeted();
    const liar = NodePrivateKey.generate();
    // Sealed by another key than the one claimed.
    const sealed = seal(liar.keyObject, f.server.publicKey, Buffer.from('{"version":2}'));
    c.write(encode.clientInfo(c.publicKey, sealed));
    await closedWith(c, /bad ClientInfo: .*did not authenticate/);
  });

  it('a ClientInfo with the all-zero key', async () => {
    const c = await greeted();
    c.write(encode.clientInfo(Buffer.alloc(32), Buffer.alloc(60, 7)));
    await closedWith(c, /all-zero client key/);
  });

  it('a ClientInfo whose JSON is invalid, or has an empty meshKey', async () => {
    for (const [json, why] of [
      ['not json', /not valid JSON/],
      ['{"meshKey":""}', /meshKey must be 64 hex/],
    ] as const) {
      const c = await greeted();
      c.write(encode.clientInfo(c.publicKey, seal(c.key.keyObject, f.server.publicKey, Buffer.from(json))));
      await closedWith(c, why);
    }
  });

  it('a ClientInfo frame shorter than 56 bytes', async () => {
    const c = await greeted();
    c.write(Buffer.concat([frameHeader(FrameType.ClientInfo, 40), Buffer.alloc(40, 1)]));
    await closedWith(c, /ClientInfo frame of 40 bytes is outside/);
  });

  it('garbage before the upgrade', async () => {
    const s = await dial(f.server.port);
    const port = s.localPort;
    s.resume();
    s.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.write('\x16\x03\x01 this is not HTTP\r\n\r\n');
    await closed;
    await f.logger.waitFor((x) => x.msg === 'closing connection' && x.fields.remote === `127.0.0.1:${port}` && /bad HTTP request/.test(String(x.fields.reason)));
    await pairStillRelays();
  });

  it('a silent client hits the handshake timeout', async () => {
    const c = await greeted();
    await closedWith(c, /handshake timeout/);
    expect(f.server.stats().handshakeFailures).toBeGreaterThan(0);
  });

  it('an oversized SendPacket frame header', async () => {
    const c = await f.connect();
    c.write(frameHeader(FrameType.SendPacket, 32 + 65_537));
    await closedWith(c, /SendPacket frame of 65569 bytes exceeds 65568/);
  });

  it('a SendPacket shorter than a key', async () => {
    const c = await f.connect();
    c.write(Buffer.concat([frameHeader(FrameType.SendPacket, 10), Buffer.alloc(10)]));
    await closedWith(c, /short SendPacket/);
  });

  it('a truncated frame followed by EOF', async () => {
    const c = await f.connect();
    c.write(Buffer.concat([frameHeader(FrameType.SendPacket, 100), Buffer.alloc(10)]));
    c.sock!.end();
    await closedWith(c, /EOF in the middle of a frame/);
  });

  it('a Ping that is too short or too long', async () => {
    for (const len of [4, 1001]) {
      const c = await f.connect();
      c.write(Buffer.concat([frameHeader(FrameType.Ping, len), Buffer.alloc(len)]));
      await closedWith(c, new RegExp(`Ping frame of ${len} bytes is outside 8..1000`));
    }
  });

  it('a NotePreferred of the wrong length', async () => {
    const c = await f.connect();
    c.write(Buffer.concat([frameHeader(FrameType.NotePreferred, 2), Buffer.from([1, 1])]));
    await closedWith(c, /NotePreferred frame of 2 bytes/);
  });

  it('mesh frames without the mesh key', async () => {
    for (const frame of [encode.watchConns(), encode.closePeer(good1.publicKey), encode.forwardPacket(good1.publicKey, good2.publicKey, Buffer.from('x'))]) {
      const c = await f.connect();
      c.write(frame);
      await closedWith(c, /insufficient permissions/);
    }
  });

  it('a text WebSocket message (close 1003)', async () => {
    const c = await f.connect({ transport: 'websocket' });
    c.ws!.send('hello', { binary: false });
    await closedWith(c, /text WebSocket message/);
    expect(c.wsCloseCode).toBe(1003);
  });

  it('unknown frame types are skipped, not fatal', async () => {
    const c = await f.connect();
    c.write(Buffer.concat([frameHeader(0x30, 5), Buffer.from('zzzzz'), frameHeader(0x0b, 0)]));
    await c.ping();
    expect(c.closed).toBe(false);
    expect(f.server.stats().unknownFrames).toBeGreaterThanOrEqual(2);
    await pairStillRelays();
  });
});
