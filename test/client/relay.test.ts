// The client against the real RelayServer on loopback: bulk exchange over both transports, plain and
// TLS (CA trust and sha256-raw pinning), ping, PeerGone, and reconnection across server restarts.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DERPClient, UdpBridge, parseHostPort, type DERPClientOptions } from '../../src/lib/client/index.js';
import type { DERPServer } from '../../src/lib/derpmap/types.js';
import { TlsError } from '../../src/lib/errors.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/relay.js';
import { generateSelfSigned, type SelfSignedCert } from '../../src/lib/certs/selfsigned-cert.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function relay(opts: { tls?: SelfSignedCert; key?: NodePrivateKey; port?: number } = {}): Promise<RelayServer> {
  const s = new RelayServer({
    privateKey: opts.key ?? NodePrivateKey.generate(),
    addr: `127.0.0.1:${opts.port ?? 0}`,
    ...(opts.tls ? { tls: { cert: opts.tls.certPem, key: opts.tls.keyPem } } : {}),
  });
  await s.start();
  cleanups.push(() => s.stop({ restarting: false }));
  return s;
}

async function client(url: string, opts: DERPClientOptions = {}): Promise<DERPClient> {
  const c = new DERPClient(opts);
  await c.connect(url);
  cleanups.push(() => c.disconnect());
  return c;
}

/** Sequence number + a size pattern that crosses chunk boundaries, with a few maximum-size packets. */
function payload(i: number): Buffer {
  const size = i % 1000 === 999 ? 65536 : 4 + ((i * 37) % 1400);
  const b = Buffer.alloc(size, i & 0xff);
  b.writeUInt32BE(i, 0);
  return b;
}

/**
 * Sends n packets from→to in windows small enough for the server's 32-deep per-client queue, and
 * checks every one arrives, in order, intact. Windows keep the receiver "keeping up" by construction.
 */
async function pump(from: DERPClient, to: DERPClient, n: number, window = 16): Promise<void> {
  const it = to.receive();
  for (let i = 0; i < n; i += window) {
    const k = Math.min(window, n - i);
    await Promise.all(Array.from({ length: k }, (_, j) => from.send(to.publicKey, payload(i + j))));
    for (let j = 0; j < k; j++) {
      const r = await it.next();
      expect(r.done).toBe(false);
      const p = r.value!;
      const want = payload(i + j);
      if (!p.data.equals(want)) expect({ seq: p.data.length >= 4 ? p.data.readUInt32BE(0) : -1, len: p.data.length }).toEqual({ seq: i + j, len: want.length });
      if (!p.src.equals(from.publicKey)) expect(p.srcText).toBe(from.publicText());
    }
  }
  await it.return?.();
}

async function exchange(a: DERPClient, b: DERPClient, total: number): Promise<void> {
  await Promise.all([pump(a, b, total / 2), pump(b, a, total / 2)]);
}

let cert: SelfSignedCert;
beforeAll(async () => {
  cert = await generateSelfSigned('127.0.0.1');
});

describe.each(['derp', 'websocket'] as const)('over %s', (transport) => {
  it('exchanges 10,000 packets over plain HTTP with none lost', async () => {
    const s = await relay();
    const a = await client(s.url, { transport });
    const b = await client(s.url, { transport });
    await exchange(a, b, 10_000);
    expect(a.receiveDrops + b.receiveDrops).toBe(0);
    expect(typeof (await a.ping())).toBe('number');
  });

  it('exchanges 10,000 packets over TLS trusting the self-signed cert as a CA', async () => {
    const s = await relay({ tls: cert });
    expect(s.url.startsWith('https://')).toBe(true);
    const a = await client(s.url, { transport, tls: { ca: cert.certPem } });
    const b = await client(s.url, { transport, tls: { ca: cert.certPem } });
    await exchange(a, b, 10_000);
    expect(typeof (await b.ping())).toBe('number');
  });

  it('exchanges 10,000 packets over TLS pinning the cert with sha256-raw', async () => {
    const s = await relay({ tls: cert });
    const a = await client(s.url, { transport, tls: { certName: cert.certName } });
    const b = await client(s.url, { transport, tls: { certName: cert.certName } });
    await exchange(a, b, 10_000);
  });

  it('fails with a TLS error on a wrong pin or an untrusted cert', async () => {
    const s = await relay({ tls: cert });
    const wrong = `sha256-raw:${'00'.repeat(32)}`;
    const pinErr = await new DERPClient({ transport, tls: { certName: wrong } }).connect(s.url).catch((e: unknown) => e);
    expect(pinErr).toBeInstanceOf(TlsError);
    expect((pinErr as Error).message).toMatch(/does not match the pinned/);
    await expect(new DERPClient({ transport }).connect(s.url)).rejects.toBeInstanceOf(TlsError);
    // The name check still applies with a trusted CA.
    await expect(new DERPClient({ transport, tls: { ca: cert.certPem, serverName: 'derp.example.com' } }).connect(s.url)).rejects.toBeInstanceOf(TlsError);
  });
});

describe('DERP map nodes', () => {
  const node = (port: number, extra: Partial<DERPServer>): DERPServer => ({
    id: 't1', hostname: 'derp.test', stunPort: 0, derpPort: port, region: 'test', regionCode: 900, canStun: false, canRelay: true, ...extra,
  });

  it('dials ipv4, uses the hostname for SNI and pin checks, honours certName', async () => {
    const named = await generateSelfSigned('derp.test');
    const s = await relay({ tls: named });
    const a = new DERPClient();
    cleanups.push(() => a.disconnect());
    await a.connect(node(s.port, { ipv4: '127.0.0.1', ipv6: 'none', certName: named.certName }));
    expect(a.serverKey?.equals(s.publicKey)).toBe(true);
    // Same pin, but the node's hostname is not a name the certificate is valid for.
    await expect(new DERPClient().connect(node(s.port, { hostname: 'other.test', ipv4: '127.0.0.1', certName: named.certName }))).rejects.toBeInstanceOf(TlsError);
    // insecureForTests skips verification entirely.
    const c = new DERPClient();
    cleanups.push(() => c.disconnect());
    await c.connect(node(s.port, { hostname: 'other.test', ipv4: '127.0.0.1', insecureForTests: true }));
  });

  it('speaks plain HTTP to a plainHttp node', async () => {
    const s = await relay();
    const a = new DERPClient();
    cleanups.push(() => a.disconnect());
    await a.connect(node(s.port, { hostname: '127.0.0.1', plainHttp: true }));
    expect(a.connected).toBe(true);
  });
});

describe('peers', () => {
  it('reports PeerGone when a peer we talked to disconnects', async () => {
    const s = await relay();
    const a = await client(s.url);
    const b = await client(s.url);
    await pump(a, b, 1);
    expect(b.connectedPeers()).toEqual([a.publicText()]);
    const gone = once(b, 'peerGone');
    await a.disconnect();
    const [ev] = await gone;
    expect(ev).toMatchObject({ peer: a.publicText(), reasonText: 'disconnected' });
    expect(b.connectedPeers()).toEqual([]);
  });
});

describe('reconnect', () => {
  const fast = { reconnect: { baseMs: 1, maxMs: 50 } };

  it('rides out a restart announced with Restarting (same key, same port)', async () => {
    const key = NodePrivateKey.generate();
    const s1 = await relay({ key });
    const a = await client(s1.url, fast);
    const b = await client(s1.url, fast);
    await exchange(a, b, 20);
    const restarting = once(a, 'restarting');
    const back = Promise.all([once(a, 'connected'), once(b, 'connected')]);
    await s1.stop({ restarting: { reconnectInMs: 10, tryForMs: 2000 } });
    const [ev] = await restarting;
    expect(ev).toEqual({ reconnectInMs: 10, tryForMs: 2000 });
    const s2 = await relay({ key, port: s1.port });
    const [[ea], [eb]] = await back;
    expect(ea.reconnected && eb.reconnected).toBe(true);
    expect(a.serverKey?.equals(s2.publicKey)).toBe(true);
    await exchange(a, b, 20);
  });

  it('reconnects after an abrupt server death', async () => {
    const key = NodePrivateKey.generate();
    const s1 = await relay({ key });
    const a = await client(s1.url, fast);
    const b = await client(s1.url, fast);
    await exchange(a, b, 20);
    const lost = once(a, 'disconnected');
    const back = Promise.all([once(a, 'connected'), once(b, 'connected')]);
    await s1.stop({ restarting: false, signal: AbortSignal.abort() });
    const [ev] = await lost;
    expect(ev.willReconnect).toBe(true);
    await relay({ key, port: s1.port });
    await back;
    await exchange(a, b, 20);
  });
});

describe('UdpBridge', () => {
  it('carries datagrams both ways between two local UDP sockets through the relay', async () => {
    const s = await relay();
    const a = await client(s.url);
    const b = await client(s.url);
    const udp = async (): Promise<UdpSocket> => {
      const u = createSocket('udp4');
      await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
      cleanups.push(() => new Promise<void>((r) => u.close(() => r())));
      return u;
    };
    const u1 = await udp();
    const u2 = await udp();
    const ba = await UdpBridge.start({ client: a, peer: b.publicText(), listen: parseHostPort('127.0.0.1:0', 'listen', true), forward: { host: '127.0.0.1', port: u1.address().port } });
    cleanups.push(() => ba.stop());
    const bb = await UdpBridge.start({ client: b, peer: a.publicKey, listen: { host: '127.0.0.1', port: 0 } });
    cleanups.push(() => bb.stop());

    const atU1 = once(u1, 'message');
    u2.send(Buffer.from('ping'), bb.address.port, '127.0.0.1');
    expect((await atU1)[0].toString()).toBe('ping');
    const atU2 = once(u2, 'message');
    u1.send(Buffer.from('pong'), ba.address.port, '127.0.0.1');
    expect((await atU2)[0].toString()).toBe('pong');
    expect(ba.stats).toMatchObject({ toRelay: 1, fromRelay: 1 });
    expect(bb.stats).toMatchObject({ toRelay: 1, fromRelay: 1 });
    expect(() => parseHostPort('nohost', 'x')).toThrow(/host:port/);
    expect(parseHostPort('[::1]:53', 'x')).toEqual({ host: '::1', port: 53 });
  });
});
