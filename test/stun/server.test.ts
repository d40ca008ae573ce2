import { randomBytes } from 'node:crypto';
import stunLib from '@msimerson/stun';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RateLimiter, ResponseCache } from '../../src/lib/stun/limits.js';
import {
  AttrType,
  MessageType,
  buildBindingRequest,
  decodeAddressValue,
  decodeErrorCodeValue,
  decodeMessage,
  decodeUnknownAttributesValue,
  encodeMessage,
  getAttribute,
  bindingSuccessLength,
  parseBindingResponse,
  verifyFingerprint,
  writeBindingSuccess,
} from '../../src/lib/stun/message.js';
import { DEFAULT_CACHE_MAX, DEFAULT_CACHE_TTL_MS, MAX_AMPLIFICATION_FACTOR, StunServer, type StunHandledEvent } from '../../src/lib/stun/server.js';
import { Peer, hasIPv6Loopback, nextHandled } from './helpers.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const txid = (): Buffer => randomBytes(12);
const bare = (id: Buffer = txid(), type: number = MessageType.BindingRequest): Buffer => encodeMessage({ type, transactionId: id });

/** Sends `buf` and returns the server's verdict plus the reply, if any. */
async function exchange(server: StunServer, peer: Peer, buf: Buffer, host: string, port = server.port): Promise<{ e: StunHandledEvent; reply?: Buffer }> {
  const handled = nextHandled(server, peer.port);
  await peer.send(buf, port, host);
  const e = await handled;
  if (e.responseBytes === 0) return { e };
  return { e, reply: await peer.next() };
}

/** Asserts the server said nothing to `peer` so far: a follow-up request's reply is the only datagram. */
async function expectNothingElseReceived(server: StunServer, peer: Peer, host: string, port = server.port): Promise<void> {
  const id = txid();
  const { reply } = await exchange(server, peer, buildBindingRequest(id), host, port);
  expect(reply && decodeMessage(reply).transactionId.equals(id)).toBe(true);
  expect(peer.received).toEqual([]);
}

describe('StunServer over IPv4', () => {
  let now = 0;
  let server: StunServer;
  let peer: Peer;
  beforeEach(async () => {
    now = 1_000;
    server = new StunServer({ port: 0, host: '127.0.0.1', clock: () => now });
    await server.start();
    peer = await Peer.open('udp4', '127.0.0.1');
  });
  afterEach(async () => {
    await peer.close();
    await server.stop();
  });

  it('answers the Tailscale request with XOR-MAPPED, MAPPED and FINGERPRINT', async () => {
    const id = txid();
    const { e, reply } = await exchange(server, peer, buildBindingRequest(id), '127.0.0.1');
    expect(e.disposition).toBe('success');
    const m = decodeMessage(reply!);
    expect(m.type).toBe(MessageType.BindingSuccess);
    expect(m.transactionId.equals(id)).toBe(true);
    expect(m.attributes.map((a) => a.type)).toEqual([AttrType.XorMappedAddress, AttrType.MappedAddress, AttrType.Fingerprint]);
    expect(verifyFingerprint(m)).toBe(true);
    expect(parseBindingResponse(reply!)).toMatchObject({ address: '127.0.0.1', port: peer.port, family: 4, source: 'xor-mapped' });
    expect(decodeAddressValue(getAttribute(m, AttrType.MappedAddress)!.value)).toEqual({ address: '127.0.0.1', port: peer.port, family: 4 });
    expect(reply!.length).toBe(52);
    const s = server.stats();
    expect(s.requests.success).toBe(1);
    expect(s.addrFamily.ipv4).toBe(1);
  });

  it('answers a bare 20-byte RFC 5389 request (no SOFTWARE, no FINGERPRINT) without FINGERPRINT', async () => {
    const { e, reply } = await exchange(server, peer, bare(), '127.0.0.1');
    expect(e.disposition).toBe('success');
    const m = decodeMessage(reply!);
    expect(m.attributes.map((a) => a.type)).toEqual([AttrType.XorMappedAddress, AttrType.MappedAddress]);
    expect(reply!.length).toBe(44);
    expect(reply!.length).toBeLessThanOrEqual(20 * MAX_AMPLIFICATION_FACTOR);
  });

  it('answers a request built by another implementation (@msimerson/stun), which reads the answer', async () => {
    const req = stunLib.createMessage(MessageType.BindingRequest);
    req.addSoftware('some other client');
    req.addFingerprint();
    const { reply } = await exchange(server, peer, req.toBuffer(), '127.0.0.1');
    const lib = stunLib.decode(reply!);
    expect(lib.transactionId.equals(req.transactionId)).toBe(true);
    expect(lib.getXorAddress()).toMatchObject({ address: '127.0.0.1', port: peer.port });
    expect(stunLib.validateFingerprint(lib)).toBe(true);
  });

  it('ignores unknown comprehension-optional attributes', async () => {
    const buf = encodeMessage({ type: MessageType.BindingRequest, transactionId: txid(), attributes: [{ type: 0xc001, value: Buffer.from('x') }], fingerprint: true });
    const { e } = await exchange(server, peer, buf, '127.0.0.1');
    expect(e.disposition).toBe('success');
  });

  it('420 with UNKNOWN-ATTRIBUTES for unknown comprehension-required attributes (RFC 5769 2.1 request)', async () => {
    const req21 = hex(`0001 0058 2112a442 b7e7a701 bc34d686 fa87dfae 8022 0010 5354554e 20746573 7420636c 69656e74
      0024 0004 6e0001ff 8029 0008 932ff9b1 51263b36 0006 0009 6576746a 3a683676 59202020
      0008 0014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2 8028 0004 e57a3bcf`);
    const { e, reply } = await exchange(server, peer, req21, '127.0.0.1');
    expect(e.disposition).toBe('unknown_attribute');
    const m = decodeMessage(reply!);
    expect(m.type).toBe(MessageType.BindingError);
    expect(m.transactionId.toString('hex')).toBe('b7e7a701bc34d686fa87dfae');
    expect(decodeErrorCodeValue(getAttribute(m, AttrType.ErrorCode)!.value)).toEqual({ code: 420, reason: 'Unknown Attribute' });
    expect(decodeUnknownAttributesValue(getAttribute(m, AttrType.UnknownAttributes)!.value)).toEqual([0x0024, 0x0006, 0x0008]);
    expect(verifyFingerprint(m)).toBe(true);
    expect(server.stats().unknownAttribute).toBe(1);
    expect(server.stats().requests.success).toBe(0);
  });

  it('420 for RFC 5780 CHANGE-REQUEST, readable by @msimerson/stun', async () => {
    const buf = encodeMessage({ type: MessageType.BindingRequest, transactionId: txid(), attributes: [{ type: AttrType.ChangeRequest, value: Buffer.alloc(4) }] });
    const { reply } = await exchange(server, peer, buf, '127.0.0.1');
    const lib = stunLib.decode(reply!);
    expect(lib.type).toBe(MessageType.BindingError);
    expect(lib.getError()).toMatchObject({ code: 420 });
    expect(lib.getUnknownAttributes()).toEqual([AttrType.ChangeRequest]);
    expect(reply!.length).toBeLessThanOrEqual(buf.length * MAX_AMPLIFICATION_FACTOR);
  });

  const silent: [string, () => Buffer][] = [
    ['garbage', () => Buffer.from('hello, is this STUN?')],
    ['empty datagram', () => Buffer.alloc(0)],
    ['truncated header', () => buildBindingRequest(txid()).subarray(0, 12)],
    ['truncated body (length says more)', () => buildBindingRequest(txid()).subarray(0, 32)],
    ['trailing bytes after the message', () => Buffer.concat([buildBindingRequest(txid()), Buffer.alloc(4)])],
    [
      'wrong magic cookie (RFC 3489 style)',
      () => {
        const b = buildBindingRequest(txid());
        b.writeUInt32BE(0x01020304, 4);
        return b;
      },
    ],
    [
      'top bits set',
      () => {
        const b = bare();
        b[0] = 0xc0;
        return b;
      },
    ],
    [
      'length not a multiple of 4',
      () => {
        const b = Buffer.concat([bare(), Buffer.alloc(2)]);
        b.writeUInt16BE(2, 2);
        return b;
      },
    ],
    ['attribute running past the end', () => {
      const b = encodeMessage({ type: MessageType.BindingRequest, transactionId: txid(), attributes: [{ type: 0x8022, value: Buffer.alloc(4) }] });
      b.writeUInt16BE(9, 22);
      return b;
    }],
    ['attribute after FINGERPRINT', () => {
      const b = Buffer.concat([buildBindingRequest(txid()), hex('80220000')]);
      b.writeUInt16BE(b.length - 20, 2);
      return b;
    }],
    ['Binding indication', () => bare(txid(), MessageType.BindingIndication)],
    ['Binding success response', () => bare(txid(), MessageType.BindingSuccess)],
    ['Binding error response', () => bare(txid(), MessageType.BindingError)],
    ['request of another method (Allocate)', () => bare(txid(), 0x0003)],
    ['unknown required attribute in an indication', () => encodeMessage({ type: MessageType.BindingIndication, transactionId: txid(), attributes: [{ type: 0x0024, value: Buffer.alloc(4) }] })],
  ];
  for (const [name, make] of silent) {
    it(`silence: ${name}`, async () => {
      const { e } = await exchange(server, peer, make(), '127.0.0.1');
      expect(e.disposition).toBe('not_stun');
      expect(e.responseBytes).toBe(0);
      await expectNothingElseReceived(server, peer, '127.0.0.1');
      expect(server.stats().requests.not_stun).toBe(1);
    });
  }

  it('silence: bad FINGERPRINT (counted)', async () => {
    const b = buildBindingRequest(txid());
    b[b.length - 1]! ^= 0xff;
    const { e } = await exchange(server, peer, b, '127.0.0.1');
    expect(e.disposition).toBe('bad_fingerprint');
    await expectNothingElseReceived(server, peer, '127.0.0.1');
    expect(server.stats()).toMatchObject({ badFingerprint: 1, requests: { not_stun: 1 } });
  });

  it('retransmission from the same addr:port within the TTL is answered from the cache', async () => {
    const req = buildBindingRequest(txid());
    const first = await exchange(server, peer, req, '127.0.0.1');
    const second = await exchange(server, peer, req, '127.0.0.1');
    expect(first.e.disposition).toBe('success');
    expect(second.e.disposition).toBe('cached');
    expect(second.reply!.equals(first.reply!)).toBe(true);
    expect(server.stats().cachedReplies).toBe(1);
    now += 10_001; // past DEFAULT_CACHE_TTL_MS
    expect((await exchange(server, peer, req, '127.0.0.1')).e.disposition).toBe('success');
  });

  it('a cached reply is not reused for a shorter request with the same transaction ID (amplification bound)', async () => {
    const id = txid();
    const attributes = Array.from({ length: 16 }, (_, i) => ({ type: 0x7000 + i, value: Buffer.alloc(0) }));
    const big = encodeMessage({ type: MessageType.BindingRequest, transactionId: id, attributes });
    const first = await exchange(server, peer, big, '127.0.0.1');
    expect(first.e.disposition).toBe('unknown_attribute');
    expect(first.reply!.length).toBeGreaterThan(20 * MAX_AMPLIFICATION_FACTOR);
    const { e, reply } = await exchange(server, peer, bare(id), '127.0.0.1');
    expect(e.disposition).toBe('success');
    expect(reply!.length).toBe(44);
  });

  it('cached replies keep only their own bytes, not the 64 KiB pool slabs they were cut from (fuzz memory finding)', async () => {
    const cache = (server as unknown as { cache: ResponseCache }).cache;
    const n = 40;
    for (let i = 0; i < n; i++) {
      const { e } = await exchange(server, peer, buildBindingRequest(txid()), '127.0.0.1');
      expect(e.disposition).toBe('success');
      // Other traffic in a relay takes from the same allocUnsafe pool: exhaust the slab, so the next
      // reply (if it came from the pool) would start a fresh one.
      for (let k = 0; k < 3; k++) Buffer.allocUnsafe(Buffer.poolSize >>> 2).fill(k);
    }
    expect(cache.size).toBe(n);
    // A success reply is at most 76 bytes; 40 pinned slabs would be 40 × 64 KiB.
    expect(cache.retainedBytes()).toBeLessThanOrEqual(n * 76);
  });

  it('the same transaction ID from another port is not a cache hit', async () => {
    const req = buildBindingRequest(txid());
    await exchange(server, peer, req, '127.0.0.1');
    const other = await Peer.open('udp4', '127.0.0.1');
    try {
      const { e, reply } = await exchange(server, other, req, '127.0.0.1');
      expect(e.disposition).toBe('success');
      expect(parseBindingResponse(reply!)).toMatchObject({ port: other.port });
    } finally {
      await other.close();
    }
  });
});

describe('StunServer limits', () => {
  let now = 0;
  let server: StunServer | undefined;
  let peer: Peer | undefined;
  afterEach(async () => {
    await peer?.close();
    await server?.stop();
    peer = undefined;
    server = undefined;
  });

  it('rate-limits responses per source IP (token bucket, refills with time)', async () => {
    now = 0;
    server = new StunServer({ port: 0, host: '127.0.0.1', rateLimitPerSecond: 2, clock: () => now });
    await server.start();
    peer = await Peer.open('udp4', '127.0.0.1');
    const d = async (): Promise<string> => (await exchange(server!, peer!, buildBindingRequest(txid()), '127.0.0.1')).e.disposition;
    expect(await d()).toBe('success');
    expect(await d()).toBe('success');
    expect(await d()).toBe('rate_limited');
    expect(peer.received).toEqual([]);
    now += 500; // one token back at 2/s
    expect(await d()).toBe('success');
    expect(await d()).toBe('rate_limited');
    expect(peer.received).toEqual([]);
    expect(server.stats().rateLimited).toBe(2);
  });

  it('cacheMax bounds the cache (oldest evicted first)', async () => {
    server = new StunServer({ port: 0, host: '127.0.0.1', cacheMax: 1 });
    await server.start();
    peer = await Peer.open('udp4', '127.0.0.1');
    const a = buildBindingRequest(txid());
    const b = buildBindingRequest(txid());
    await exchange(server, peer, a, '127.0.0.1');
    await exchange(server, peer, b, '127.0.0.1');
    expect((await exchange(server, peer, a, '127.0.0.1')).e.disposition).toBe('success');
    expect((await exchange(server, peer, a, '127.0.0.1')).e.disposition).toBe('cached');
  });

  it('stop() via AbortSignal closes the sockets', async () => {
    const ac = new AbortController();
    server = new StunServer({ port: 0, host: '127.0.0.1' });
    await server.start(ac.signal);
    expect(server.port).toBeGreaterThan(0);
    ac.abort();
    expect(server.ports).toEqual({});
  });

  it('reusePort: two servers share one port and each answers', async () => {
    server = new StunServer({ port: 0, host: '127.0.0.1', reusePort: true });
    await server.start();
    const second = new StunServer({ port: server.port, host: '127.0.0.1', reusePort: true });
    await second.start();
    try {
      expect(second.port).toBe(server.port);
      // The kernel picks one of the two per source; whichever it is must answer.
      peer = await Peer.open('udp4', '127.0.0.1');
      await peer.send(buildBindingRequest(txid()), server.port, '127.0.0.1');
      expect(parseBindingResponse(await peer.next())).toMatchObject({ address: '127.0.0.1', port: peer.port });
    } finally {
      await second.stop();
    }
  });

  it('RateLimiter table is bounded and forgets the oldest source', () => {
    const t = 0;
    const rl = new RateLimiter(1, 2, () => t);
    expect(rl.allow('a')).toBe(true);
    expect(rl.allow('a')).toBe(false);
    expect(rl.allow('b')).toBe(true);
    expect(rl.allow('c')).toBe(true); // evicts a
    expect(rl.size).toBe(2);
    expect(rl.allow('a')).toBe(true); // fresh bucket
    expect(new RateLimiter(0, 2, () => t).allow('x')).toBe(true);
  });

  it('ResponseCache copies a response that is a view into a larger buffer', () => {
    const c = new ResponseCache(100, 4, () => 0);
    const parent = Buffer.alloc(64 << 10, 7);
    c.set('slice', parent.subarray(100, 140));
    const whole = Buffer.from([1, 2, 3]).subarray(0);
    const own = Buffer.allocUnsafeSlow(3).fill(9);
    c.set('own', own);
    expect(c.get('slice')).toEqual(Buffer.alloc(40, 7));
    expect(c.get('slice')!.buffer).not.toBe(parent.buffer);
    expect(c.get('own')).toBe(own); // already owns its storage: kept as is, no copy
    expect(c.retainedBytes()).toBe(40 + 3);
    c.set('whole', whole);
    expect(c.retainedBytes()).toBe(40 + 3 + 3);
  });

  it('ResponseCache at the default cap holds at most DEFAULT_CACHE_MAX replies of their own size (the bound the fuzzer relies on)', () => {
    const c = new ResponseCache(DEFAULT_CACHE_TTL_MS, DEFAULT_CACHE_MAX, () => 0);
    const addr = Buffer.from([127, 0, 0, 1]);
    for (let i = 0; i < 2 * DEFAULT_CACHE_MAX; i++) {
      const id = txid();
      c.set(`127.0.0.1|${i}|${id.toString('hex')}`, writeBindingSuccess(id, addr, 40_000, true, true));
      if (i % 1000 === 0) Buffer.allocUnsafe(Buffer.poolSize >>> 1).fill(1);
    }
    expect(c.size).toBe(DEFAULT_CACHE_MAX);
    // The largest IPv4 success reply (XOR-MAPPED, MAPPED, FINGERPRINT) is 52 bytes.
    expect(c.retainedBytes()).toBe(DEFAULT_CACHE_MAX * bindingSuccessLength(false, true, true));
  });

  it('ResponseCache expires entries and is bounded', () => {
    let t = 0;
    const c = new ResponseCache(100, 2, () => t);
    c.set('a', Buffer.from('A'));
    c.set('b', Buffer.from('B'));
    c.set('c', Buffer.from('C'));
    expect(c.get('a')).toBeUndefined();
    expect(c.size).toBe(2);
    t = 100;
    expect(c.get('b')).toBeUndefined();
  });
});

describe('StunServer over IPv6 and dual-stack', async () => {
  const v6 = await hasIPv6Loopback();
  let server: StunServer;
  beforeAll(async () => {
    server = new StunServer({ port: 0, host: '127.0.0.1', ipv6: v6 ? true : false, host6: '::1' });
    await server.start();
  });
  afterAll(async () => {
    await server.stop();
  });

  it.skipIf(!v6)('binds both families on separate sockets and answers ::1 with family 2', async () => {
    expect(server.ports.ipv4).toBeGreaterThan(0);
    expect(server.ports.ipv6).toBeGreaterThan(0);
    const peer = await Peer.open('udp6', '::1');
    try {
      const { e, reply } = await exchange(server, peer, buildBindingRequest(txid()), '::1', server.ports.ipv6);
      expect(e.disposition).toBe('success');
      expect(parseBindingResponse(reply!)).toMatchObject({ address: '::1', port: peer.port, family: 6 });
      const m = decodeMessage(reply!);
      expect(m.attributes.map((a) => a.type)).toEqual([AttrType.XorMappedAddress, AttrType.MappedAddress, AttrType.Fingerprint]);
      expect(server.stats().addrFamily.ipv6).toBe(1);
    } finally {
      await peer.close();
    }
  });

  it.skipIf(!v6)('amplification bound: a bare 20-byte IPv6 request gets XOR-MAPPED-ADDRESS only', async () => {
    const peer = await Peer.open('udp6', '::1');
    try {
      const { reply } = await exchange(server, peer, bare(), '::1', server.ports.ipv6);
      expect(reply!.length).toBe(44);
      expect(reply!.length).toBeLessThanOrEqual(20 * MAX_AMPLIFICATION_FACTOR);
      expect(decodeMessage(reply!).attributes.map((a) => a.type)).toEqual([AttrType.XorMappedAddress]);
      expect(server.stats().amplificationReduced).toBe(1);
    } finally {
      await peer.close();
    }
  });

  it('IPv4-mapped sources on a dual-stack IPv6 socket are answered as IPv4 (family 1)', async () => {
    const dual = new StunServer({ port: 0, host: '::ffff:127.0.0.1' });
    await dual.start();
    const peer = await Peer.open('udp4', '127.0.0.1');
    try {
      const { reply } = await exchange(dual, peer, buildBindingRequest(txid()), '127.0.0.1', dual.port);
      const m = decodeMessage(reply!);
      expect(getAttribute(m, AttrType.XorMappedAddress)!.value[1]).toBe(1);
      expect(reply!.length).toBe(52);
      expect(parseBindingResponse(reply!)).toMatchObject({ address: '127.0.0.1', port: peer.port, family: 4 });
      expect(dual.stats().addrFamily).toEqual({ ipv4: 1, ipv6: 0 });
    } finally {
      await peer.close();
      await dual.stop();
    }
  });
});
