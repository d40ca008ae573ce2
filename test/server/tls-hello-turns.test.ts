/** A burst of TLS ClientHellos is spread over event-loop turns (relay clientHellos), nothing lost; a silent TLS connection is closed at the handshake deadline. */
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { TLS_HANDSHAKES_PER_TURN } from '../../src/lib/server/constants.js';
import { startRelay, type Fixture } from './fixture.js';
import { openTcp, until } from './helpers.js';

let f: Fixture | null = null;
const socks: net.Socket[] = [];
/** Raw sockets a TLSSocket now wraps: only the TLS one is destroyed (destroying both crashes Node's TLSWrap). */
const wrapped = new Set<net.Socket>();
afterEach(async () => {
  for (const s of socks.splice(0)) if (!wrapped.has(s)) s.destroy();
  wrapped.clear();
  await f?.close();
  f = null;
});

/** `n` TCP connections to the relay, accepted and silent (no ClientHello yet). */
function openSilent(n: number): Promise<net.Socket[]> {
  return openTcp(f!.server, n, socks);
}

/** TLS over an already connected socket: the ClientHello is written in this call. */
function startTls(s: net.Socket): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket: s, ca: f!.ca, servername: 'localhost', checkServerIdentity: () => undefined }, () => resolve(t));
    t.once('error', reject);
    wrapped.add(s);
    socks.push(t);
  });
}

/** A real ClientHello, captured from a TLS client writing into a stream that never answers. */
function captureClientHello(): Promise<Buffer> {
  return new Promise<Buffer>((resolve) => {
    const sink = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        resolve(chunk);
        cb();
      },
    });
    const t = tls.connect({ socket: sink, servername: 'localhost' });
    t.on('error', () => undefined);
  });
}

/**
 * Writes `hello` on `s` and nothing after it. `closed` settles when the relay closes the connection;
 * `answered()` is how many bytes of its first flight came back.
 */
function stallAfterHello(s: net.Socket, hello: Buffer): { closed: Promise<void>; answered: () => number } {
  s.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  let answered = 0;
  s.on('data', (d: Buffer) => (answered += d.length));
  s.write(hello);
  return { closed, answered: () => answered };
}

describe('TLS handshakes per event-loop turn', () => {
  it('ClientHellos that arrive in one turn are all answered, later ones deferred to later turns', async () => {
    const BURST = 8 * TLS_HANDSHAKES_PER_TURN;
    f = await startRelay({ withTls: true });
    const raw = await openSilent(BURST);
    // One synchronous loop (the relay runs in this process): every ClientHello is readable in its next poll.
    const secured = raw.map((s) => startTls(s));
    const done = await Promise.all(secured);
    expect(done.map((t) => t.authorized)).toEqual(done.map(() => true));
    const st = f.server.stats();
    expect(st.tlsHandshakesDeferred).toBeGreaterThanOrEqual(BURST - 2 * TLS_HANDSHAKES_PER_TURN);
    expect(st.openConnections).toBe(BURST);
  });

  it('connections that close or reset while their first bytes wait for their turn are released, the relay unharmed', async () => {
    const BURST = 6 * TLS_HANDSHAKES_PER_TURN;
    f = await startRelay({ withTls: true });
    const raw = await openSilent(BURST);
    // A TLS handshake record header and a few bytes: a first read like any hello.
    const bogus = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00]);
    const kept: Promise<tls.TLSSocket>[] = [];
    // In one synchronous loop: a third start TLS, a third send bytes and close, a third send bytes and reset.
    raw.forEach((s, i) => {
      s.on('error', () => undefined);
      if (i % 3 === 0) kept.push(startTls(s));
      else if (i % 3 === 1) s.end(bogus);
      else {
        s.write(bogus);
        s.resetAndDestroy();
      }
    });
    expect((await Promise.all(kept)).map((t) => t.authorized)).toEqual(kept.map(() => true));
    await until(() => f!.server.stats().openConnections === BURST / 3, 'the closed and reset ones released');
    expect(f.server.stats().tlsHandshakesDeferred).toBeGreaterThan(0);
    // Still serving.
    const c = await f.connect();
    expect(c.serverKey).not.toBeNull();
  });

  it('a TLS connection that never sends its ClientHello is closed at the handshake deadline and counted', async () => {
    f = await startRelay({ withTls: true, handshakeTimeoutMs: 300 });
    const [s] = await openSilent(1);
    const closed = new Promise<void>((resolve) => s!.once('close', () => resolve()));
    s!.on('error', () => undefined);
    await closed;
    await until(() => f!.server.stats().openConnections === 0, 'the silent connection released');
    expect(f.server.stats().tlsHelloTimeouts).toBe(1);
    // Bad input, at warn: the serve logger limits it to a few lines per peer and minute.
    expect(f.logger.entries.filter((e) => e.msg === 'TLS handshake failed').map((e) => [e.level, e.fields.reason])).toEqual([['warn', 'no ClientHello within 300 ms']]);
  });

  it('a TLS connection that sends its ClientHello and then nothing is closed at the handshake deadline, not TLS\'s 120 s', async () => {
    f = await startRelay({ withTls: true, handshakeTimeoutMs: 300 });
    const hello = await captureClientHello();
    const [s] = await openSilent(1);
    const stalled = stallAfterHello(s!, hello);
    await stalled.closed;
    // The relay did answer the hello (its first flight) before giving up on the rest.
    expect(stalled.answered()).toBeGreaterThan(0);
    await until(() => f!.server.stats().openConnections === 0, 'the stalled connection released');
    expect(f.server.stats().httpErrors).toBe(1);
    expect(f.logger.entries.filter((e) => e.msg === 'TLS handshake failed').map((e) => [e.level, e.fields.reason])).toEqual([['warn', 'TLS handshake timeout']]);
  });

  it('stop() closes a TLS handshake stalled after its hello at once, not at the handshake deadline, and not as the client\'s failure', async () => {
    // A deadline far beyond the test's timeout: a stop that waits for it fails the test.
    f = await startRelay({ withTls: true, handshakeTimeoutMs: 600_000 });
    const hello = await captureClientHello();
    const [s] = await openSilent(1);
    const client = await f.connect();
    const stalled = stallAfterHello(s!, hello);
    // In the TLS layer: its first flight came back.
    await until(() => stalled.answered() > 0, 'the relay answered the hello');
    const restarting = client.nextOf('Restarting');
    await f.server.stop();
    await stalled.closed;
    // The established TLS client was let go the ordinary way: told to reconnect, then closed.
    expect((await restarting).type).toBe('Restarting');
    await client.closedPromise;
    const stopped = f.logger.entries.find((e) => e.msg === 'relay stopped');
    expect(stopped?.fields.tlsHandshakesClosed).toBe(1);
    expect(stopped?.fields.forcedCloses).toBe(0);
    expect(f.logger.entries.filter((e) => e.msg === 'TLS handshake failed')).toEqual([]);
    expect(f.server.stats().httpErrors).toBe(0);
  });
});

describe('TLS handshake tracking on a Node whose TLSSocket has no _parent', () => {
  const proto = tls.TLSSocket.prototype as unknown as Record<string, unknown>;
  afterEach(() => {
    delete proto._parent;
  });

  it('turns itself off: stop() lets an established TLS client go with Restarting instead of cutting it off as a handshake', async () => {
    // What such a Node looks like from outside: `_parent` reads undefined on every TLSSocket.
    Object.defineProperty(proto, '_parent', { configurable: true, get: () => undefined, set: () => undefined });
    f = await startRelay({ withTls: true });
    const client = await f.connect();
    // The relay's handshake finished; its raw socket could not be found, so the set must not keep it.
    const restarting = client.nextOf('Restarting');
    await f.server.stop();
    expect((await restarting).type).toBe('Restarting');
    await client.closedPromise;
    const stopped = f.logger.entries.find((e) => e.msg === 'relay stopped');
    expect(stopped?.fields.tlsHandshakesClosed).toBe(0);
    expect(stopped?.fields.forcedCloses).toBe(0);
  });
});
