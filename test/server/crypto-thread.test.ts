/** ClientInfo opened on the handshake crypto thread: the same results as inline, in batches, and inline again when the thread is lost. */
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { describeError, HandshakeError } from '../../src/lib/errors.js';
import { FRAME_HEADER_LEN, KEY_LEN } from '../../src/lib/protocol/constants.js';
import { buildClientInfoFrame, encode, encodeFrame, FrameType, NodePrivateKey, openServerInfo, type ClientInfo } from '../../src/lib/protocol/index.js';
import { seal } from '../../src/lib/protocol/box.js';
import { HANDSHAKES_PER_TURN } from '../../src/lib/server/constants.js';
import { CryptoThread, type AcceptCallback } from '../../src/lib/server/crypto-thread.js';
import { acceptClientInfo, acceptOpened, serverInfoPlaintext, type AcceptedClient, type OpenedClientInfo } from '../../src/lib/server/handshake.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import type { RawTransport } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';
import { clientInfoFor, until, upgradedClients } from './helpers.js';

const FAILS = fileURLToPath(new URL('../fixtures/crypto-thread/fails.ts', import.meta.url));
const SILENT = fileURLToPath(new URL('../fixtures/crypto-thread/silent.ts', import.meta.url));

const server = NodePrivateKey.generate();
let thread: CryptoThread | null = null;
let f: Fixture | null = null;
afterEach(async () => {
  await thread?.close();
  thread = null;
  await f?.close();
  f = null;
});

/** A ClientInfo payload (client key ‖ nonce ‖ box) from a fresh client to `server`. */
function payloadFrom(client: NodePrivateKey, info: ClientInfo = { version: 2, canAckPings: true }): Buffer {
  return buildClientInfoFrame(client.keyObject, client.publicKey, server.publicKey, info).subarray(FRAME_HEADER_LEN);
}

/** The thread's answer as it comes (opened, the JSON not parsed yet). */
function open(t: CryptoThread, payload: Buffer, serverInfo?: Buffer): Promise<OpenedClientInfo | HandshakeError> {
  return new Promise((resolve) => t.accept(payload, serverInfo, resolve satisfies AcceptCallback));
}

/** The thread's answer with its JSON parsed, as the connection does in its turn. */
async function accept(t: CryptoThread, payload: Buffer, serverInfo?: Buffer): Promise<AcceptedClient | HandshakeError> {
  const r = await open(t, payload, serverInfo);
  if (r instanceof HandshakeError) return r;
  try {
    return acceptOpened(r);
  } catch (err) {
    return err as HandshakeError;
  }
}

function inline(payload: Buffer, serverInfo?: Buffer): AcceptedClient | HandshakeError {
  try {
    return acceptClientInfo(server.keyObject, payload, () => serverInfo);
  } catch (err) {
    return err as HandshakeError;
  }
}

/** The failures a ClientInfo payload can have, each as a client could send it. */
function badPayloads(): [string, Buffer][] {
  const c = NodePrivateKey.generate();
  const good = payloadFrom(c);
  const tampered = Buffer.from(good);
  tampered[tampered.length - 1]! ^= 1;
  const zeroKey = Buffer.from(good);
  zeroKey.fill(0, 0, KEY_LEN);
  // A key of small order: X25519 gives all zeroes, which OpenSSL refuses.
  const lowOrder = Buffer.from(good);
  lowOrder.fill(0, 0, KEY_LEN);
  lowOrder[0] = 1;
  const notJson = Buffer.concat([c.publicKey, seal(c.keyObject, server.publicKey, Buffer.from('{"version": 2,'))]);
  const badField = Buffer.concat([c.publicKey, seal(c.keyObject, server.publicKey, Buffer.from('{"CanAckPings":"yes"}'))]);
  return [
    ['tampered box', tampered],
    ['all-zero client key', zeroKey],
    ['low-order client key', lowOrder],
    ['JSON cut short', notJson],
    ['a field of the wrong type', badField],
    ['too short for a box', good.subarray(0, KEY_LEN + 10)],
  ];
}

describe('CryptoThread', () => {
  it('opens a ClientInfo as acceptClientInfo does: the same key and info, and a ServerInfo the client opens', async () => {
    thread = new CryptoThread(server.keyObject, new MemoryLogger());
    const c = NodePrivateKey.generate();
    const payload = payloadFrom(c, { version: 2, canAckPings: true });
    const plain = serverInfoPlaintext({ version: 2, tokenBucketBytesPerSecond: 1000, tokenBucketBytesBurst: 65536 });
    const got = await accept(thread, payload, plain);
    expect(got).not.toBeInstanceOf(HandshakeError);
    const a = got as AcceptedClient;
    const want = inline(payload, plain) as AcceptedClient;
    expect(a.clientKey.equals(c.publicKey)).toBe(true);
    expect(a.info).toEqual(want.info);
    expect(openServerInfo(c.keyObject, server.publicKey, a.serverInfoFrame.subarray(FRAME_HEADER_LEN))).toEqual({ version: 2, tokenBucketBytesPerSecond: 1000, tokenBucketBytesBurst: 65536 });
    // Without a plaintext: derper's plain one.
    const d = (await accept(thread, payloadFrom(c))) as AcceptedClient;
    expect(openServerInfo(c.keyObject, server.publicKey, d.serverInfoFrame.subarray(FRAME_HEADER_LEN))).toEqual({ version: 2 });
  });

  it('answers a burst, batched while a batch is out, each to its own callback with its own key', async () => {
    thread = new CryptoThread(server.keyObject, new MemoryLogger());
    const clients = Array.from({ length: 40 }, () => NodePrivateKey.generate());
    const meshKey = Buffer.alloc(32, 7);
    const results = await Promise.all(clients.map((c, i) => accept(thread!, payloadFrom(c, i % 2 === 0 ? { version: 2, canAckPings: true } : { version: 2, canAckPings: false, meshKey }))));
    results.forEach((r, i) => {
      const a = r as AcceptedClient;
      expect(a.clientKey.equals(clients[i]!.publicKey)).toBe(true);
      expect(a.info.canAckPings).toBe(i % 2 === 0);
      if (i % 2 === 1) expect(a.info.meshKey?.equals(meshKey)).toBe(true);
      expect(openServerInfo(clients[i]!.keyObject, server.publicKey, a.serverInfoFrame.subarray(FRAME_HEADER_LEN))).toEqual({ version: 2 });
    });
    expect(thread.waiting).toBe(0);
  });

  it('refuses every bad payload with the text inline gives (what the relay logs: describeError)', async () => {
    thread = new CryptoThread(server.keyObject, new MemoryLogger());
    for (const [what, p] of badPayloads()) {
      const r = await accept(thread, p);
      const want = inline(p);
      expect(r, what).toBeInstanceOf(HandshakeError);
      expect(want, what).toBeInstanceOf(Error);
      expect(describeError(r), what).toBe(describeError(want));
    }
    // What the box holds is judged by the connection, in its turn, not in the batch's callback.
    for (const [what, p] of badPayloads().filter(([w]) => w === 'JSON cut short' || w === 'a field of the wrong type')) {
      expect(await open(thread, p), what).not.toBeInstanceOf(HandshakeError);
    }
    // A refused one leaves the thread working.
    expect(await accept(thread, payloadFrom(NodePrivateKey.generate()))).not.toBeInstanceOf(HandshakeError);
  });

  it('a thread that fails: what it had and all later handshakes are opened inline, and that is logged once', async () => {
    const logger = new MemoryLogger();
    thread = new CryptoThread(server.keyObject, logger, { entry: FAILS });
    const clients = Array.from({ length: 3 }, () => NodePrivateKey.generate());
    const results = await Promise.all(clients.map((c) => accept(thread!, payloadFrom(c))));
    results.forEach((r, i) => expect((r as AcceptedClient).clientKey.equals(clients[i]!.publicKey)).toBe(true));
    expect(thread.running).toBe(false);
    // Inline now: the callback runs at once.
    let now: OpenedClientInfo | HandshakeError | null = null;
    thread.accept(payloadFrom(clients[0]!), undefined, (r) => (now = r));
    expect(now).not.toBeNull();
    expect(now).not.toBeInstanceOf(HandshakeError);
    const lost = logger.entries.filter((e) => e.level === 'error' && /handshake crypto thread/.test(e.msg));
    expect(lost).toHaveLength(1);
    expect(lost[0]!.msg).toMatch(/failed: simulated crypto thread failure; handshakes are opened on the event loop from now on/);
  });

  it('close(): what the thread had not answered is finished inline before it resolves; nothing is logged', async () => {
    const logger = new MemoryLogger();
    thread = new CryptoThread(server.keyObject, logger, { entry: SILENT });
    const c = NodePrivateKey.generate();
    const p = accept(thread, payloadFrom(c));
    expect(thread.waiting).toBe(1);
    await thread.close();
    expect(((await p) as AcceptedClient).clientKey.equals(c.publicKey)).toBe(true);
    expect(thread.running).toBe(false);
    expect(logger.entries.filter((e) => e.level === 'error')).toEqual([]);
  });
});

describe('a relay with the crypto thread', () => {
  const BURST = 12;
  for (const transport of ['derp', 'websocket'] as RawTransport[]) {
    it(`${transport}: a burst of handshakes is answered through the thread, and what each client sent right after ClientInfo is delivered in order`, async () => {
      f = await startRelay({ cryptoThread: true });
      const sink = await f.connect();
      const { clients, frames } = await upgradedClients(() => f!.open({ transport }), BURST);
      clients.forEach((c, i) => c.write(Buffer.concat([frames[i]!, encode.sendPacket(sink.publicKey, Buffer.from(`${i} first`)), encode.sendPacket(sink.publicKey, Buffer.from(`${i} second`))])));
      for (const c of clients) expect((await c.next()).type).toBe('ServerInfo');
      const got: string[] = [];
      for (let i = 0; i < 2 * BURST; i++) got.push(Buffer.from((await sink.nextOf('RecvPacket')).data).toString());
      for (let i = 0; i < BURST; i++) expect(got.indexOf(`${i} first`)).toBeLessThan(got.indexOf(`${i} second`));
      expect(got).toHaveLength(2 * BURST);
      expect(f.server.stats().currentConnections).toBe(BURST + 1);
      // The sink's handshake too.
      expect(f.server.stats().handshakesOnThread).toBe(BURST + 1);
      // The first frame went out alone, the other answers came back together and were finished
      // HANDSHAKES_PER_TURN per turn, the rest deferred.
      expect(f.server.stats().handshakesDeferred).toBeGreaterThanOrEqual(BURST - 1 - HANDSHAKES_PER_TURN);
      expect(f.server.stats().handshakeThreadFailures).toBe(0);
    });
  }

  it('a relay whose thread fails goes on inline: clients still connect and relay, the failure counted once', async () => {
    f = await startRelay({ cryptoThread: { entry: FAILS } });
    const a = await f.connect();
    const b = await f.connect();
    a.sendPacket(b.publicKey, Buffer.from('through'));
    expect(Buffer.from((await b.nextOf('RecvPacket')).data).toString()).toBe('through');
    expect(f.server.stats().handshakeThreadFailures).toBe(1);
    expect(f.logger.entries.filter((e) => e.level === 'error' && /handshake crypto thread failed/.test(e.msg))).toHaveLength(1);
  });

  it('a bad ClientInfo is refused as inline: closed without ServerInfo, counted as a failed handshake', async () => {
    f = await startRelay({ cryptoThread: true });
    const c = await f.open();
    const good = await clientInfoFor(c);
    const bad = Buffer.from(good);
    bad[bad.length - 1]! ^= 1;
    c.write(bad);
    await c.closedPromise;
    expect(c.drainQueue().map((fr) => fr.type)).not.toContain('ServerInfo');
    await until(() => f!.server.stats().handshakeFailures === 1, 'the failure counted');
    expect(f.logger.entries.some((e) => /bad ClientInfo: ClientInfo box did not authenticate/.test(String(e.fields?.reason)))).toBe(true);
  });

  it('a ClientInfo whose box opens but whose JSON is bad is refused in its turn, as inline: the same reason, no ServerInfo', async () => {
    f = await startRelay({ cryptoThread: true });
    const c = await f.open();
    await clientInfoFor(c);
    c.write(encodeFrame(FrameType.ClientInfo, c.key.publicKey, seal(c.key.keyObject, c.serverKey!, Buffer.from('{"version": 2,'))));
    await c.closedPromise;
    expect(c.drainQueue().map((fr) => fr.type)).not.toContain('ServerInfo');
    await until(() => f!.server.stats().handshakeFailures === 1, 'the failure counted');
    expect(f.server.stats().handshakesOnThread).toBe(1);
    expect(f.logger.entries.some((e) => /^bad ClientInfo: ClientInfo is not valid JSON/.test(String(e.fields?.reason)))).toBe(true);
  });

  it('a client that leaves while its ClientInfo is on the thread is closed and forgotten; the late answer is dropped', async () => {
    f = await startRelay({ cryptoThread: { entry: SILENT } });
    const c = await f.open();
    // Data before FIN: the relay takes ClientInfo (to the thread, which never answers), then sees the EOF.
    c.write(await clientInfoFor(c));
    c.destroy();
    await f.logger.waitFor((e) => /EOF while ClientInfo was being opened/.test(String(e.fields?.reason)));
    await until(() => f!.server.stats().pendingHandshakes === 0, 'the pending handshake gone');
    expect(f.server.stats().currentConnections).toBe(0);
    // The stop finishes the silent thread's request inline: for a closed connection, nothing happens.
    await f.close();
    f = null;
  });

  it('the handshake deadline still applies while ClientInfo is on the thread', async () => {
    f = await startRelay({ cryptoThread: { entry: SILENT }, handshakeTimeoutMs: 200 });
    const c = await f.open();
    c.write(await clientInfoFor(c));
    await c.closedPromise;
    expect(c.drainQueue().map((fr) => fr.type)).not.toContain('ServerInfo');
    expect(f.server.stats().pendingHandshakes).toBe(0);
    expect(f.server.stats().currentConnections).toBe(0);
  });
});
