/** The relay's limits: per-client token bucket (spec §9), DDoS limits, abuse events; a canary pair beside each. */
import { spawnSync } from 'node:child_process';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_HEADER_LEN, KEY_LEN, NodePrivateKey, encode, formatNodePublic } from '../../src/lib/protocol/index.js';
import { ACCEPT_PAUSE_MIN_MS, ACCEPT_REOPEN_RETRY_MS, HEAD_EXPIRIES_PER_TURN, LISTEN_BACKLOG } from '../../src/lib/server/constants.js';
import { ClientLimits, ConnectionCounter, EventBucket, MIN_CLIENT_BURST_BYTES, sourceKey } from '../../src/lib/server/limits.js';
import type { AbuseEvent } from '../../src/lib/server/index.js';
import type { RawClient } from '../helpers/rawclient.js';
import { turnCounter } from '../helpers/turns.js';
import { startRelay, type Fixture } from './fixture.js';
import { canaryWorks, tcp, until } from './helpers.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

/** Writes `count` packets of `size` bytes from `a` to `dst` as fast as a's socket takes them. */
async function blast(a: RawClient, dst: Buffer, count: number, size: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const p = Buffer.alloc(size);
    p.writeUInt32BE(i, 0);
    if (!a.sock!.write(encode.sendPacket(dst, p))) await new Promise((r) => a.sock!.once('drain', r));
  }
}

describe('per-client token bucket', () => {
  it('a client sending far above its rate gets its rate (±10 %), loses nothing, and a pair beside it keeps working', async () => {
    const RATE = 600_000; // bytes/s of frames (header included)
    const SIZE = 1000;
    const COUNT = 1800; // ≈ 1.9 MB: about 3 s at the rate; written in well under a tenth of that
    const c = NodePrivateKey.generate();
    const d = NodePrivateKey.generate();
    f = await startRelay({
      writeTimeoutMs: 0,
      clientLimits: { rate: RATE, perKey: { [formatNodePublic(c.publicKey)]: { rate: 0 }, [formatNodePublic(d.publicKey)]: { rate: 0 } } },
    });
    const a = await f.connect();
    const b = await f.connect();
    const canaryC = await f.connect({ key: c });
    const canaryD = await f.connect({ key: d });
    // Advertised to the limited client; the exempt ones hear derper's plain ServerInfo.
    expect(a.serverInfo).toMatchObject({ version: 2, tokenBucketBytesPerSecond: RATE, tokenBucketBytesBurst: RATE });
    expect(canaryC.serverInfo?.tokenBucketBytesPerSecond).toBeUndefined();
    expect(f.server.clientRateOf(a.publicKey)).toEqual({ bytesPerSecond: RATE, burstBytes: RATE });
    expect(f.server.clientRateOf(c.publicKey)).toEqual({ bytesPerSecond: 0, burstBytes: 0 });

    const FRAME = FRAME_HEADER_LEN + KEY_LEN + SIZE;
    const arrivals: number[] = [];
    const seen: number[] = [];
    b.onFrame = (fr) => {
      if (fr.type !== 'RecvPacket') return false;
      arrivals.push(performance.now());
      seen.push(fr.data.readUInt32BE(0));
      return true;
    };
    const sending = blast(a, b.publicKey, COUNT, SIZE);
    await until(() => f!.server.stats().rateLimitedConnections === 1, 'a is throttled');
    // The canary pair round-trips while a is held back.
    for (let i = 0; i < 20; i++) await canaryWorks(canaryC, canaryD, String(i));
    expect(seen.length).toBeLessThan(COUNT);
    await sending;
    await until(() => seen.length === COUNT, 'every packet delivered', 30_000);
    expect(seen).toEqual([...Array(COUNT).keys()]);
    const st = f.server.stats();
    expect(st.packetsDroppedOther + st.packetsDroppedDisco).toBe(0);
    expect(st.rateLimitWaits).toBeGreaterThan(0);
    // Measured past the initial burst: bytes after the first `skip` packets over the time they took.
    const skip = Math.ceil(RATE / FRAME) + 10;
    const seconds = (arrivals[COUNT - 1]! - arrivals[skip]!) / 1000;
    const rate = ((COUNT - 1 - skip) * FRAME) / seconds;
    expect(rate).toBeGreaterThan(RATE * 0.9);
    expect(rate).toBeLessThan(RATE * 1.1);
  }, 40_000);

  it('the burst is never below one maximal frame; per-key overrides; setClientLimits reaches live connections', async () => {
    f = await startRelay({ clientLimits: { rate: 1000, burst: 10 } });
    const a = await f.connect();
    expect(a.serverInfo).toMatchObject({ tokenBucketBytesPerSecond: 1000, tokenBucketBytesBurst: MIN_CLIENT_BURST_BYTES });
    expect(MIN_CLIENT_BURST_BYTES).toBe(5 + 32 + 65536);
    f.server.setClientLimits({ rate: 2_000_000, burst: 4_000_000, perKey: { [formatNodePublic(a.publicKey)]: { rate: 500_000 } } });
    expect(f.server.clientRateOf(a.publicKey)).toEqual({ bytesPerSecond: 500_000, burstBytes: 500_000 });
    const b = await f.connect();
    expect(b.serverInfo).toMatchObject({ tokenBucketBytesPerSecond: 2_000_000, tokenBucketBytesBurst: 4_000_000 });
    f.server.setClientLimits({});
    expect(f.server.clientRateOf(a.publicKey)).toEqual({ bytesPerSecond: 0, burstBytes: 0 });
    const c = await f.connect();
    expect(c.serverInfo).toEqual({ version: 2 });
    expect(() => f!.server.setClientLimits({ perKey: { 'nodekey:zz': { rate: 1 } } })).toThrow(/nodekey/);
    expect(() => f!.server.setClientLimits({ rate: -1 })).toThrow(/≥ 0/);
    // A refused change changes nothing.
    expect(f.server.clientRateOf(a.publicKey)).toEqual({ bytesPerSecond: 0, burstBytes: 0 });
  });

  it('lifting the limit releases a throttled connection at once, nothing lost', async () => {
    f = await startRelay({ writeTimeoutMs: 0, clientLimits: { rate: 20_000 } });
    const a = await f.connect();
    const b = await f.connect();
    let got = 0;
    b.onFrame = (fr) => fr.type === 'RecvPacket' && (got++, true);
    const COUNT = 400; // ≈ 400 KB: 20 s at the old rate
    const sending = blast(a, b.publicKey, COUNT, 1000);
    await until(() => f!.server.stats().rateLimitedConnections === 1, 'a is throttled');
    expect(got).toBeLessThan(COUNT);
    f.server.setClientLimits({});
    await sending;
    await until(() => got === COUNT, 'the rest delivered after the limit was lifted');
    expect(f.server.stats().rateLimitedConnections).toBe(0);
    expect(f.server.stats().packetsDroppedOther).toBe(0);
  });

  it('over WebSocket too: throttled, every packet delivered in order', async () => {
    f = await startRelay({ writeTimeoutMs: 0, clientLimits: { rate: 100_000 } });
    const a = await f.connect({ transport: 'websocket' });
    const b = await f.connect();
    const seen: number[] = [];
    b.onFrame = (fr) => fr.type === 'RecvPacket' && (seen.push(fr.data.readUInt32BE(0)), true);
    const COUNT = 200; // ≈ 200 KB: about 1.3 s beyond the burst
    for (let i = 0; i < COUNT; i++) {
      const p = Buffer.alloc(1000);
      p.writeUInt32BE(i, 0);
      a.sendPacket(b.publicKey, p);
    }
    await until(() => f!.server.stats().rateLimitedConnections === 1, 'a is throttled');
    expect(seen.length).toBeLessThan(COUNT);
    await until(() => seen.length === COUNT, 'every packet delivered');
    expect(seen).toEqual([...Array(COUNT).keys()]);
    expect(f.server.stats().rateLimitWaits).toBeGreaterThan(0);
  });

  it('mesh peers are exempt; unlimited costs nothing to configure', () => {
    const l = new ClientLimits({ rate: 1000 });
    expect(l.forKey('x'.repeat(32), true)).toEqual({ bytesPerSecond: 0, burstBytes: 0 });
    expect(l.forKey('x'.repeat(32), false).bytesPerSecond).toBe(1000);
    expect(new ClientLimits().unlimited).toBe(true);
    expect(new ClientLimits().serverInfoPlaintext({ bytesPerSecond: 0, burstBytes: 0 }).toString()).toBe('{"version":2}');
  });
});

describe('DDoS limits', () => {
  async function canary(fx: Fixture): Promise<[RawClient, RawClient]> {
    return [await fx.connect({ localAddress: '127.0.0.2' }), await fx.connect({ localAddress: '127.0.0.3' })];
  }

  it('accept rate: past the burst the connection is closed and the listener shut, so the kernel refuses the next; open ones keep working', async () => {
    f = await startRelay({ connectionLimits: { acceptRate: 0.001, acceptBurst: 4 } });
    const [c, d] = await canary(f);
    // Two tokens left: two more are admitted, one at a time.
    const admitted = [await tcp(f.server.port), await tcp(f.server.port)];
    // The fifth is accepted, refused (counted) and closed; the listener closes with it.
    const refused = await tcp(f.server.port);
    await refused.closed;
    expect(f.server.stats().connectionsRefused.accept_rate).toBe(1);
    expect(f.server.stats().acceptPauses).toBe(1);
    // Now the kernel answers: no listener, no relay work at all.
    await expect(tcp(f.server.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(f.server.stats().connectionsRefused.accept_rate).toBe(1);
    expect(f.server.stats().openConnections).toBe(4);
    await canaryWorks(c, d, 'accept rate');
    for (const s of admitted) s.sock.destroy();
  });

  it('accept rate: the listener reopens when tokens are due, and at once when a reload changes the rate', async () => {
    // One token a second: the steps below between a token and the next connection take far less.
    f = await startRelay({ connectionLimits: { acceptRate: 1, acceptBurst: 1 } });
    const first = await f.connect();
    await (await tcp(f.server.port)).closed;
    expect(f.server.stats().acceptPauses).toBe(1);
    // A client that retries gets in once the pause (at least ACCEPT_PAUSE_MIN_MS) is over.
    let again: RawClient | null = null;
    const end = Date.now() + 10_000;
    while (again === null && Date.now() < end) again = await f.connect().catch(() => null);
    expect(again).not.toBeNull();
    expect(f.server.stats().acceptPausedMs).toBeGreaterThanOrEqual(ACCEPT_PAUSE_MIN_MS);
    await canaryWorks(first, again!, 'after the pause');
    // Spend the token, shut the listener again; a reload lifting the limit reopens it straight away.
    await (await tcp(f.server.port)).closed;
    expect(f.server.stats().acceptPauses).toBe(2);
    f.server.setConnectionLimits({ acceptRate: 0 });
    const third = await f.connect();
    await canaryWorks(third, first, 'after the reload');
  });

  it('accept rate: the short backlog of a reopened listener is back to the full one once no pause came for a while', async () => {
    f = await startRelay({ connectionLimits: { acceptRate: 100, acceptBurst: 1 }, acceptBacklogRestoreMs: 300 });
    // The kernel's view: a listening socket's Send-Q is its backlog (null while closed).
    const backlog = (): number | null => {
      const line = spawnSync('ss', ['-Hltn', `sport = :${f!.server.port}`], { encoding: 'utf8' }).stdout.trim();
      return line === '' ? null : Number(line.split(/\s+/)[2]);
    };
    expect(backlog()).toBe(LISTEN_BACKLOG);
    const first = await f.connect();
    await (await tcp(f.server.port)).closed;
    expect(f.server.stats().acceptPauses).toBe(1);
    // Reopened with room for about one pause's tokens (the least, 8, at 100/s).
    await until(() => backlog() !== null, 'the listener reopened');
    expect(backlog()).toBe(8);
    expect(f.server.stats().acceptBacklogRestores).toBe(0);
    await until(() => f!.server.stats().acceptBacklogRestores === 1, 'the full backlog back');
    expect(backlog()).toBe(LISTEN_BACKLOG);
    const second = await f.connect();
    await canaryWorks(first, second, 'after the backlog came back');
  });

  it('accept rate: a listener that cannot reopen (the port taken meanwhile) is logged and retried until it can', async () => {
    f = await startRelay({ connectionLimits: { acceptRate: 1, acceptBurst: 1 } });
    const first = await f.connect();
    await (await tcp(f.server.port)).closed;
    expect(f.server.stats().acceptPauses).toBe(1);
    // While the relay's listener is closed, someone else binds the port (Node sets SO_REUSEADDR).
    const squatter = net.createServer((s) => s.destroy());
    await new Promise<void>((res, rej) => {
      squatter.once('error', rej);
      squatter.listen({ host: '127.0.0.1', port: f!.server.port }, res);
    });
    const failed = await f.logger.waitFor((e) => e.level === 'error' && e.msg.startsWith('cannot reopen the listener'));
    expect(failed.fields).toMatchObject({ port: f.server.port, retryMs: ACCEPT_REOPEN_RETRY_MS });
    await new Promise<void>((res) => squatter.close(() => res()));
    // The retry takes the port back: a client that retries reaches the relay, not the squatter.
    let again: RawClient | null = null;
    const end = Date.now() + 10_000;
    while (again === null && Date.now() < end) again = await f.connect().catch(() => null);
    expect(again).not.toBeNull();
    await canaryWorks(first, again!, 'after the retried reopen');
  });

  it('per source IP: the cap refuses more, counted; closing one frees a slot', async () => {
    f = await startRelay({ connectionLimits: { maxConnsPerIp: 3 } });
    const [c, d] = await canary(f);
    const socks = await Promise.all(Array.from({ length: 5 }, () => tcp(f!.server.port, '127.0.0.9')));
    await until(() => f!.server.stats().connectionsRefused.per_ip === 2, '2 refused');
    await canaryWorks(c, d, 'per ip');
    const closed = new Set<number>();
    socks.forEach((s, i) => void s.closed.then(() => closed.add(i)));
    await until(() => closed.size === 2, 'the refused connections closed');
    expect(f.server.stats().openConnections).toBe(5);
    const open = socks.filter((_, i) => !closed.has(i));
    expect(open).toHaveLength(3);
    open[0]!.sock.destroy();
    await until(() => f!.server.stats().openConnections === 4, 'the slot is freed');
    const again = await f.connect({ localAddress: '127.0.0.9' });
    await again.ping();
    expect(f.server.stats().connectionsRefused.per_ip).toBe(2);
    for (const s of socks) s.sock.destroy();
  });

  it('per source IP over TLS and WebSocket: counted at the TCP accept, released when the connection closes', async () => {
    f = await startRelay({ withTls: true, connectionLimits: { maxConnsPerIp: 2 } });
    const a = await f.connect({ localAddress: '127.0.0.9' });
    const b = await f.connect({ localAddress: '127.0.0.9', transport: 'websocket' });
    await expect(f.connect({ localAddress: '127.0.0.9' })).rejects.toThrow();
    expect(f.server.stats().connectionsRefused.per_ip).toBe(1);
    await canaryWorks(a, b, 'tls');
    await a.close();
    await until(() => f!.server.stats().openConnections === 1, 'released');
    const c = await f.connect({ localAddress: '127.0.0.9' });
    await canaryWorks(c, b, 'tls again');
  });

  it('per source IP behind a trusted proxy counts the forwarded client, not the proxy', async () => {
    f = await startRelay({ trustedProxies: ['127.0.0.1/32'], connectionLimits: { maxConnsPerIp: 2 } });
    const via = (ip: string) => f!.connect({ extraHeaders: [`X-Forwarded-For: ${ip}`] });
    const a1 = await via('203.0.113.9');
    await via('203.0.113.9');
    await expect(via('203.0.113.9')).rejects.toThrow();
    expect(f.server.stats().connectionsRefused.per_ip).toBe(1);
    const other = await via('203.0.113.10');
    await canaryWorks(a1, other, 'proxied');
  });

  it('total: the cap on concurrent connections refuses the excess', async () => {
    f = await startRelay({ connectionLimits: { maxConns: 4 } });
    const [c, d] = await canary(f);
    const socks = await Promise.all(Array.from({ length: 5 }, () => tcp(f!.server.port)));
    await until(() => f!.server.stats().connectionsRefused.total === 3, '3 refused');
    expect(f.server.stats().openConnections).toBe(4);
    await canaryWorks(c, d, 'total');
    for (const s of socks) s.sock.destroy();
  });

  it('pending handshakes: upgrades beyond the cap are closed; the ClientInfo deadline closes the rest, counted', async () => {
    f = await startRelay({ handshakeTimeoutMs: 300, connectionLimits: { maxPendingHandshakes: 2 } });
    const [c, d] = await canary(f);
    const pending = [await f.open(), await f.open()];
    await until(() => f!.server.stats().pendingHandshakes === 2, 'two pending');
    await expect(f.open()).rejects.toThrow();
    expect(f.server.stats().connectionsRefused.pending_handshakes).toBe(1);
    await canaryWorks(c, d, 'pending');
    await Promise.all(pending.map((p) => p.closedPromise));
    const st = f.server.stats();
    expect(st.handshakeTimeouts).toBe(2);
    expect(st.pendingHandshakes).toBe(0);
    await canaryWorks(c, d, 'after timeouts');
  });

  it('slowloris: connections that never finish their HTTP head are closed at the deadline, counted, canary unaffected', async () => {
    f = await startRelay({ handshakeTimeoutMs: 300 });
    const [c, d] = await canary(f);
    const socks = await Promise.all(Array.from({ length: 20 }, () => tcp(f!.server.port, '127.0.0.9')));
    for (const s of socks) s.sock.write('GET /derp HTTP/1.1\r\nHost: x\r\n'); // never the blank line
    await canaryWorks(c, d, 'during slowloris');
    await Promise.all(socks.map((s) => s.closed));
    const reasons = f.logger.entries.filter((e) => e.msg === 'closing connection' && /127\.0\.0\.9/.test(String(e.fields.remote))).map((e) => e.fields.reason);
    expect(reasons).toHaveLength(20);
    expect(new Set(reasons)).toEqual(new Set(['bad HTTP request: ERR_HTTP_REQUEST_TIMEOUT']));
    expect(f.server.stats().httpErrors).toBe(20);
    await canaryWorks(c, d, 'after slowloris');
  });

  it('slowloris: heads that expire together are closed a few per event-loop turn, not all in one', async () => {
    const turns = turnCounter();
    const closedIn = new Map<number, number>();
    const logger = {
      log(_level: string, msg: string) {
        if (msg === 'closing connection') closedIn.set(turns.turn, (closedIn.get(turns.turn) ?? 0) + 1);
      },
    };
    f = await startRelay({ handshakeTimeoutMs: 300, logger });
    const N = 3 * HEAD_EXPIRIES_PER_TURN;
    const socks = await Promise.all(Array.from({ length: N }, () => tcp(f!.server.port, '127.0.0.9')));
    for (const s of socks) s.sock.write('GET /derp HTTP/1.1\r\nHost: x\r\n');
    await Promise.all(socks.map((s) => s.closed));
    turns.stop();
    expect([...closedIn.values()].reduce((a, b) => a + b, 0)).toBe(N);
    expect(Math.max(...closedIn.values())).toBeLessThanOrEqual(HEAD_EXPIRIES_PER_TURN);
    expect(f.server.stats().httpErrors).toBe(N);
  });

  it('a connection that ends inside its HTTP head is answered 400 and counted, as Node\'s parser did', async () => {
    f = await startRelay({ handshakeTimeoutMs: 60_000 });
    const s = await tcp(f.server.port);
    const answer = new Promise<string>((resolve) => s.sock.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
    s.sock.end('GET /derp HTTP/1.1\r\nHost: x\r\n');
    expect(await answer).toMatch(/^HTTP\/1\.1 400 /);
    await s.closed;
    expect(f.server.stats().httpErrors).toBe(1);
    expect(f.logger.entries.find((e) => e.msg === 'closing connection')?.fields.reason).toBe('bad HTTP request: HPE_INVALID_EOF_STATE');
  });

  it('bytes that cannot start an HTTP request are answered at once, not held to the deadline', async () => {
    f = await startRelay({ handshakeTimeoutMs: 60_000 });
    const s = await tcp(f.server.port);
    const answer = new Promise<string>((resolve) => s.sock.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
    s.sock.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05])); // a TLS record on the plain port
    expect(await answer).toMatch(/^HTTP\/1\.1 400 /);
    await s.closed;
  });

  it('a banned IP is closed at accept, counted', async () => {
    f = await startRelay({ isBanned: (ip) => ip === '127.0.0.7' });
    const [c, d] = await canary(f);
    const s = await tcp(f.server.port, '127.0.0.7');
    await s.closed;
    expect(f.server.stats().connectionsRefused.banned).toBe(1);
    await canaryWorks(c, d, 'ban');
  });
});

describe('abuse events', () => {
  it('report new destinations (not every packet), absent peers, handshake failures and violations', async () => {
    const events: { e: AbuseEvent; ip: string; key: string | null }[] = [];
    f = await startRelay({ onAbuse: (e, w) => events.push({ e, ip: w.ip, key: w.key === null ? null : formatNodePublic(w.key) }) });
    const a = await f.connect();
    const b = await f.connect();
    const c = await f.connect();
    for (let i = 0; i < 5; i++) a.sendPacket(b.publicKey, Buffer.from('x'));
    a.sendPacket(c.publicKey, Buffer.from('y'));
    a.sendPacket(b.publicKey, Buffer.from('z'));
    a.sendPacket(NodePrivateKey.generate().publicKey, Buffer.from('nobody'));
    await a.ping();
    const ka = formatNodePublic(a.publicKey);
    expect(events.filter((x) => x.e === 'fanout')).toEqual([
      { e: 'fanout', ip: expect.stringMatching(/127\.0\.0\.1$/) as unknown as string, key: ka },
      { e: 'fanout', ip: expect.stringMatching(/127\.0\.0\.1$/) as unknown as string, key: ka },
    ]);
    expect(events.filter((x) => x.e === 'absent_peer')).toHaveLength(1);
    // A violation after the handshake, and a handshake that fails.
    a.write(Buffer.from([0x10, 0, 0, 0, 2, 1, 1])); // NotePreferred of 2 bytes
    await a.closedPromise;
    const bad = await f.open();
    bad.write(encode.ping(Buffer.alloc(8)));
    await bad.closedPromise;
    expect(events.filter((x) => x.e === 'protocol_violation').map((x) => x.key)).toEqual([ka]);
    expect(events.filter((x) => x.e === 'handshake_failure').map((x) => x.key)).toEqual([null]);
  });

  it('a throwing hook or ban check is logged and harms nobody', async () => {
    f = await startRelay({
      onAbuse: () => {
        throw new Error('detector bug');
      },
      isBanned: () => {
        throw new Error('ban table bug');
      },
    });
    const a = await f.connect();
    const b = await f.connect();
    await canaryWorks(a, b, 'hook throws');
    a.sendPacket(NodePrivateKey.generate().publicKey, Buffer.from('to nobody: an absent_peer event'));
    await a.ping();
    expect(f.logger.entries.some((e) => e.msg === 'abuse hook threw')).toBe(true);
    expect(f.logger.entries.some((e) => e.msg.startsWith('ban check threw'))).toBe(true);
  });
});

describe('limits bookkeeping', () => {
  it('sourceKey: IPv4 as is, IPv6 by /64, IPv4-mapped as IPv4', () => {
    expect(sourceKey('192.0.2.1')).toBe('192.0.2.1');
    expect(sourceKey('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(sourceKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:db8:1:2::9')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:0db8:0001:0002:ffff::1')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(sourceKey('::1')).toBe('0:0:0:0::/64');
  });

  it('ConnectionCounter caps per source and in total; EventBucket refills at its rate', () => {
    const c = new ConnectionCounter();
    expect(c.add('a', { perSource: 2, total: 3 })).toBeNull();
    expect(c.add('a', { perSource: 2, total: 3 })).toBeNull();
    expect(c.add('a', { perSource: 2, total: 3 })).toBe('per_ip');
    expect(c.add('b', { perSource: 2, total: 3 })).toBeNull();
    expect(c.add('c', { perSource: 2, total: 3 })).toBe('total');
    c.remove('a');
    expect(c.count('a')).toBe(1);
    expect(c.total).toBe(2);
    const e = new EventBucket(10, 2);
    expect([e.take(1000), e.take(1000), e.take(1000)]).toEqual([true, true, false]);
    expect(e.take(1100)).toBe(true); // 100 ms at 10/s = one token
    expect(e.take(1100)).toBe(false);
    expect(e.msUntilToken(1100)).toBeCloseTo(100);
    expect(e.msUntilToken(1150)).toBeCloseTo(50);
    expect(e.msUntilToken(1200)).toBe(0);
    expect(new EventBucket(10, 2).msUntilToken(0)).toBe(0);
  });
});
