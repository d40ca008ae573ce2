/** X-Forwarded-For from trusted proxies: the rules, then both relay paths (fast recogniser and Node's). */
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/lib/errors.js';
import { parseDerpUpgradeHead } from '../../src/lib/server/fasthead.js';
import { TrustedProxies, normalizeIp } from '../../src/lib/server/forwarded.js';
import { RelayServer, type ClientConnInfo } from '../../src/lib/server/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { startRelay, type Fixture } from './fixture.js';

describe('TrustedProxies', () => {
  const t = new TrustedProxies(['127.0.0.1/32', '10.0.0.0/8', '::1', 'fd00::/8']);

  it('ignores the header from an untrusted peer, and when there is none', () => {
    expect(t.resolve('198.51.100.7', '203.0.113.9')).toBeNull();
    expect(t.resolve('2001:db8::5', '203.0.113.9')).toBeNull();
    expect(t.resolve('127.0.0.1', undefined)).toBeNull();
    expect(new TrustedProxies([]).resolve('127.0.0.1', '203.0.113.9')).toBeNull();
  });

  it('takes the rightmost address that is not a trusted proxy', () => {
    expect(t.resolve('127.0.0.1', '203.0.113.9')).toEqual({ address: '203.0.113.9', malformed: false });
    // The client wrote "1.2.3.4"; nginx appended what it saw; an inner proxy appended its own peer.
    expect(t.resolve('127.0.0.1', '1.2.3.4, 203.0.113.9, 10.1.2.3')).toEqual({ address: '203.0.113.9', malformed: false });
    expect(t.resolve('10.9.9.9', '1.2.3.4,203.0.113.9')).toEqual({ address: '203.0.113.9', malformed: false });
    // Every hop trusted: the earliest one is the client.
    expect(t.resolve('127.0.0.1', '10.0.0.1, 10.0.0.2')).toEqual({ address: '10.0.0.1', malformed: false });
  });

  it('handles IPv6 peers and hops, brackets and IPv4-mapped addresses', () => {
    expect(t.resolve('::1', '2001:db8::9')).toEqual({ address: '2001:db8::9', malformed: false });
    expect(t.resolve('::1', '[2001:db8::9], fd00::1')).toEqual({ address: '2001:db8::9', malformed: false });
    // A dual-stack listener reports an IPv4 proxy as ::ffff:127.0.0.1.
    expect(t.resolve('::ffff:127.0.0.1', '::ffff:203.0.113.9')).toEqual({ address: '203.0.113.9', malformed: false });
    expect(t.isTrusted('::ffff:10.2.3.4')).toBe(true);
    expect(t.isTrusted('2001:db8::1')).toBe(false);
  });

  it('stops at garbage and keeps the last good hop, flagged malformed', () => {
    for (const bad of ['nonsense', '203.0.113.9:5555', '', ' , ', '999.1.1.1', 'fe80::1%eth0', '1.2.3.4 5.6.7.8', 'unknown'])
      expect(t.resolve('127.0.0.1', bad), bad).toEqual({ address: '127.0.0.1', malformed: true });
    expect(t.resolve('127.0.0.1', '203.0.113.9, junk, 10.0.0.5')).toEqual({ address: '10.0.0.5', malformed: true });
    // Garbage left of the first untrusted hop is the client's own business.
    expect(t.resolve('127.0.0.1', 'junk, 203.0.113.9')).toEqual({ address: '203.0.113.9', malformed: false });
    expect(t.resolve('::ffff:127.0.0.1', 'x')).toEqual({ address: '127.0.0.1', malformed: true });
  });

  it('refuses bad CIDRs with a ConfigError naming the entry', () => {
    for (const bad of ['bogus', '10.0.0.0/33', '::1/129', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/8', 'localhost', ''])
      expect(() => new TrustedProxies([bad]), bad).toThrow(ConfigError);
    expect(() => new TrustedProxies(['127.0.0.1/32', '10.0.0.0/33'])).toThrow(/"10\.0\.0\.0\/33"/);
  });

  it('normalizes addresses', () => {
    expect(normalizeIp(' [::1] ')).toBe('::1');
    expect(normalizeIp('::FFFF:192.0.2.1')).toBe('192.0.2.1');
    expect(normalizeIp('example.com')).toBeNull();
  });
});

describe('fast recogniser and X-Forwarded-For', () => {
  const h = 'GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 203.0.113.9\r\n\r\n';
  it('collects every value only when asked', () => {
    const b = Buffer.from(h, 'latin1');
    expect(parseDerpUpgradeHead(b, b.length)).toEqual({ fastStart: false, end: b.length });
    expect(parseDerpUpgradeHead(b, b.length, true)).toEqual({ fastStart: false, end: b.length, forwardedFor: '1.2.3.4, 203.0.113.9' });
  });
});

describe('relay behind a trusted proxy', () => {
  let f: Fixture | undefined;
  afterEach(async () => {
    await f?.close();
    f = undefined;
  });

  async function accepted(fx: Fixture, connect: () => Promise<unknown>): Promise<ClientConnInfo> {
    const ac = new AbortController();
    const it = fx.server.acceptClient(ac.signal);
    await connect();
    const r = await it.next();
    ac.abort();
    if (r.done === true) throw new Error('no client accepted');
    return r.value;
  }

  // Node's parser takes heads over the recogniser's 8 KiB limit.
  const PAD = `X-Pad: ${'p'.repeat(9000)}`;
  const paths = [
    { name: 'fast raw upgrade', opts: {} },
    { name: "Node's raw upgrade", opts: { extraHeaders: [PAD] } },
    { name: 'WebSocket', opts: { transport: 'websocket' as const } },
  ];

  for (const p of paths) {
    it(`${p.name}: takes the client address from X-Forwarded-For, keeps the proxy's, counts it and logs it`, async () => {
      const fx = (f = await startRelay({ trustedProxies: ['127.0.0.0/8'] }));
      const info = await accepted(fx, () => fx.connect({ ...p.opts, extraHeaders: [...(p.opts.extraHeaders ?? []), 'X-Forwarded-For: 198.51.100.1, 203.0.113.9'] }));
      expect(info).toMatchObject({ remoteAddress: '203.0.113.9', remotePort: 0, proxyAddress: '127.0.0.1' });
      expect(info.proxyPort).toBeGreaterThan(0);
      expect(fx.server.stats()).toMatchObject({ forwardedConnections: 1, forwardedForMalformed: 0 });
      const e = await fx.logger.waitFor((x) => x.msg === 'client connected');
      expect(e.fields.remote).toMatch(/^203\.0\.113\.9 via 127\.0\.0\.1:\d+$/);
    });

    it(`${p.name}: ignores the header from an untrusted peer`, async () => {
      const fx = (f = await startRelay({ trustedProxies: ['10.0.0.0/8'] }));
      const info = await accepted(fx, () => fx.connect({ ...p.opts, extraHeaders: [...(p.opts.extraHeaders ?? []), 'X-Forwarded-For: 203.0.113.9'] }));
      expect(info.remoteAddress).toBe('127.0.0.1');
      expect(info.remotePort).toBeGreaterThan(0);
      expect(info.proxyAddress).toBeUndefined();
      expect(fx.server.stats().forwardedConnections).toBe(0);
    });
  }

  it('without trusted proxies the header means nothing (the default)', async () => {
    const fx = (f = await startRelay());
    const info = await accepted(fx, () => fx.connect({ extraHeaders: ['X-Forwarded-For: 203.0.113.9'] }));
    expect(info.remoteAddress).toBe('127.0.0.1');
    expect(fx.server.stats().forwardedConnections).toBe(0);
  });

  it('a trusted proxy without the header: the proxy is the client', async () => {
    const fx = (f = await startRelay({ trustedProxies: ['127.0.0.1/32'] }));
    const info = await accepted(fx, () => fx.connect());
    expect(info.remoteAddress).toBe('127.0.0.1');
    expect(fx.server.stats().forwardedConnections).toBe(0);
  });

  it('malformed values: the proxy address is kept, counted, warned about once, and the client still relays', async () => {
    const fx = (f = await startRelay({ trustedProxies: ['127.0.0.1/32'] }));
    const a = await accepted(fx, () => fx.connect({ extraHeaders: ['X-Forwarded-For: definitely-not-an-ip'] }));
    const b = await accepted(fx, () => fx.connect({ transport: 'websocket', extraHeaders: ['X-Forwarded-For: 203.0.113.9:4444'] }));
    expect([a.remoteAddress, b.remoteAddress]).toEqual(['127.0.0.1', '127.0.0.1']);
    expect(fx.server.stats()).toMatchObject({ forwardedConnections: 2, forwardedForMalformed: 2 });
    expect(fx.logger.entries.filter((e) => e.msg.startsWith('ignoring malformed X-Forwarded-For'))).toHaveLength(1);
    const [ca, cb] = fx.clients;
    ca!.sendPacket(cb!.publicKey, Buffer.from('still works'));
    expect((await cb!.nextOf('RecvPacket')).data.toString()).toBe('still works');
  });

  it('a bad trusted-proxy entry fails start() with a ConfigError', async () => {
    const s = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', trustedProxies: ['10.0.0.0/40'] });
    await expect(s.start()).rejects.toMatchObject({ code: 'DERP_ERR_CONFIG', message: expect.stringContaining('10.0.0.0/40') });
  });
});
