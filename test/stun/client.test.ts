import * as dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClosedError, ProtocolError, TimeoutError } from '../../src/lib/errors.js';
import { StunSocket, stunProbe } from '../../src/lib/stun/client.js';
import {
  AttrType,
  MessageType,
  TAILSCALE_REQUEST_LENGTH,
  decodeMessage,
  encodeErrorCodeValue,
  encodeMessage,
  getAttribute,
  ipToBytes,
  unmapIPv4,
  verifyFingerprint,
  writeBindingSuccess,
} from '../../src/lib/stun/message.js';
import { StunServer } from '../../src/lib/stun/server.js';
import { Peer, hasIPv6Loopback, type Datagram } from './helpers.js';

/**
 * Fast retransmissions, long final wait (20 s): replies that are slow on a loaded machine still count;
 * the schedule's shape is what matters, not the durations.
 */
const FAST = { rtoMs: 2, finalWaitFactor: 10_000 } as const;

function answer(d: Datagram, port = d.from.port): Buffer {
  const m = decodeMessage(d.msg);
  return writeBindingSuccess(m.transactionId, ipToBytes(unmapIPv4(d.from.address)), port, false, false);
}

describe('stunProbe against our StunServer', async () => {
  const v6 = await hasIPv6Loopback();
  let server: StunServer;
  beforeAll(async () => {
    server = new StunServer({ port: 0, host: '127.0.0.1', ipv6: v6, host6: '::1' });
    await server.start();
  });
  afterAll(async () => {
    await server.stop();
  });

  it('IPv4: returns the mapped address, family, server and attempts', async () => {
    const r = await stunProbe({ host: '127.0.0.1', port: server.port, retransmit: false, timeoutMs: 30_000 });
    expect(r).toMatchObject({ address: '127.0.0.1', family: 4, attempts: 1, server: { host: '127.0.0.1', address: '127.0.0.1', port: server.port } });
    expect(r.port).toBeGreaterThan(0);
    expect(r.rttMs).toBeGreaterThanOrEqual(0);
    expect(r.transactionId.length).toBe(12);
  });

  it('reuses a given socket (mapped port = its port) and leaves it open', async () => {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    try {
      const r = await stunProbe({ host: '127.0.0.1', port: server.port, socket });
      expect(r.port).toBe(socket.address().port);
      const again = await stunProbe({ host: '127.0.0.1', port: server.port, socket });
      expect(again.port).toBe(r.port);
    } finally {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    }
  });

  it.skipIf(!v6)('IPv6 over ::1', async () => {
    const r = await stunProbe({ host: '::1', port: server.ports.ipv6!, ...FAST });
    expect(r).toMatchObject({ address: '::1', family: 6 });
  });

  it('StunSocket: several probes over one socket to two servers see the same mapping', async () => {
    const other = new StunServer({ port: 0, host: '127.0.0.1' });
    await other.start();
    const s = await StunSocket.create('udp4', { address: '127.0.0.1' });
    try {
      const results = await Promise.all([s.send('127.0.0.1', server.port, FAST), s.send('127.0.0.1', other.port, FAST), s.send('127.0.0.1', server.port, FAST)]);
      expect(new Set(results.map((r) => `${r.address}:${r.port}`))).toEqual(new Set([`127.0.0.1:${s.socket.address().port}`]));
      expect(results.map((r) => r.server.port)).toEqual([server.port, other.port, server.port]);
      expect(s.inFlight).toBe(0);
    } finally {
      await s.close();
      await other.stop();
    }
  });
});

describe('StunSocket against hand-rolled UDP servers', () => {
  it('sends the exact Tailscale request and retransmits the same bytes until answered', async () => {
    const fake = await Peer.open('udp4', '127.0.0.1');
    const s = await StunSocket.create('udp4', { address: '127.0.0.1' });
    try {
      const p = s.send('127.0.0.1', fake.port, FAST);
      const first = await fake.nextDatagram(); // dropped
      const second = await fake.nextDatagram(); // dropped
      const third = await fake.nextDatagram();
      expect(first.msg.length).toBe(TAILSCALE_REQUEST_LENGTH);
      const m = decodeMessage(first.msg);
      expect(m.type).toBe(MessageType.BindingRequest);
      expect(m.attributes.map((a) => a.type)).toEqual([AttrType.Software, AttrType.Fingerprint]);
      expect(getAttribute(m, AttrType.Software)!.value.toString()).toBe('tailnode');
      expect(verifyFingerprint(m)).toBe(true);
      expect(second.msg.equals(first.msg)).toBe(true);
      expect(third.msg.equals(first.msg)).toBe(true);
      await fake.send(answer(third), third.from.port, '127.0.0.1');
      const r = await p;
      expect(r.attempts).toBeGreaterThanOrEqual(3);
      expect(r.port).toBe(third.from.port);
      expect(r.transactionId.equals(m.transactionId)).toBe(true);
    } finally {
      await s.close();
      await fake.close();
    }
  });

  it('times out after Rc requests with a TimeoutError carrying context', async () => {
    const fake = await Peer.open('udp4', '127.0.0.1');
    const s = await StunSocket.create('udp4', { address: '127.0.0.1' });
    try {
      const err = await s.send('127.0.0.1', fake.port, { rtoMs: 2, finalWaitFactor: 4, maxRequests: 3 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimeoutError);
      expect((err as TimeoutError).context).toMatchObject({ host: '127.0.0.1', port: fake.port, attempts: 3 });
    } finally {
      await s.close();
      await fake.close();
    }
  });

  it('retransmit: false sends once and waits timeoutMs', async () => {
    const fake = await Peer.open('udp4', '127.0.0.1');
    try {
      const err = await stunProbe({ host: '127.0.0.1', port: fake.port, retransmit: false, timeoutMs: 5 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimeoutError);
      expect((err as TimeoutError).context.attempts).toBe(1);
    } finally {
      await fake.close();
    }
  });

  it('ignores garbage, other transactions, bad FINGERPRINTs and reflected requests; then accepts the answer', async () => {
    const fake = await Peer.open('udp4', '127.0.0.1');
    const s = await StunSocket.create('udp4', { address: '127.0.0.1' });
    try {
      const p = s.send('127.0.0.1', fake.port, { retransmit: false, timeoutMs: 30_000 });
      const d = await fake.nextDatagram();
      const txid = decodeMessage(d.msg).transactionId;
      const badFp = writeBindingSuccess(txid, ipToBytes('198.51.100.1'), 1, false, true);
      badFp[badFp.length - 1]! ^= 1;
      const junk = [
        Buffer.from('not stun at all'),
        writeBindingSuccess(Buffer.alloc(12, 7), ipToBytes('198.51.100.2'), 2, false, false),
        badFp,
        d.msg, // our own request coming back
      ];
      for (const j of junk) await fake.send(j, d.from.port, '127.0.0.1');
      await fake.send(writeBindingSuccess(txid, ipToBytes('203.0.113.7'), 41641, true, true), d.from.port, '127.0.0.1');
      const r = await p;
      expect(r).toMatchObject({ address: '203.0.113.7', port: 41641, family: 4 });
      expect(s.unmatched).toBe(junk.length);
    } finally {
      await s.close();
      await fake.close();
    }
  });

  it('matches replies by transaction ID when they arrive in reverse order', async () => {
    const fake = await Peer.open('udp4', '127.0.0.1');
    const s = await StunSocket.create('udp4', { address: '127.0.0.1' });
    try {
      const opts = { retransmit: false, timeoutMs: 30_000 };
      const pa = s.send('127.0.0.1', fake.port, opts);
      const pb = s.send('127.0.0.1', fake.port, opts);
      const a = await fake.nextDatagram();
      const b = await fake.nextDatagram();
      await fake.send(answer(b, 2222), b.from.port, '127.0.0.1');
      await fake.send(answer(a, 1111), a.from.port, '127.0.0.1');
      const [ra, rb] = await Promise.all([pa, pb]);
      expect(ra.transactionId.equals(decodeMessage(a.msg).transactionId)).toBe(true);
      expect([ra.port, rb.port].sort()).toEqual([1111, 2222]);
    } finally {
      await s.close();
      await fake.close();
    }
  });

  it('an error response rejects with a ProtocolError carrying the code', async () => {
    const fake = await Peer.open('udp4', '127.0.0.1');
    try {
      const p = stunProbe({ host: '127.0.0.1', port: fake.port, retransmit: false, timeoutMs: 30_000 });
      const d = await fake.nextDatagram();
      const err420 = encodeMessage({
        type: MessageType.BindingError,
        transactionId: decodeMessage(d.msg).transactionId,
        attributes: [{ type: AttrType.ErrorCode, value: encodeErrorCodeValue(420, 'Unknown Attribute') }],
      });
      await fake.send(err420, d.from.port, '127.0.0.1');
      const err = await p.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as ProtocolError).context).toMatchObject({ code: 420 });
    } finally {
      await fake.close();
    }
  });

  it('abort signal and close() end in-flight probes', async () => {
    const fake = await Peer.open('udp4', '127.0.0.1');
    const s = await StunSocket.create('udp4', { address: '127.0.0.1' });
    try {
      const ac = new AbortController();
      const p = s.send('127.0.0.1', fake.port, { signal: ac.signal });
      await fake.nextDatagram();
      ac.abort(new Error('stop'));
      await expect(p).rejects.toThrow('stop');
      const q = s.send('127.0.0.1', fake.port);
      await fake.nextDatagram();
      await s.close();
      await expect(q).rejects.toBeInstanceOf(ClosedError);
      expect(s.inFlight).toBe(0);
    } finally {
      await s.close();
      await fake.close();
    }
  });
});
