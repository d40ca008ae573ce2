/** The region mesh in one process (spec §10): watch, forward, forget, privileges, wrong keys. */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { MeshLinks } from '../../src/lib/mesh/index.js';
import { RelayMetrics, renderVarz } from '../../src/lib/metrics/index.js';
import { FrameType, NodePrivateKey, PeerGoneReason, PeerPresentFlags, encode } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { silentLogger } from '../../src/lib/util/logger.js';
import { RawClient } from '../helpers/rawclient.js';
import { until } from '../server/helpers.js';
import { endpointOf, meshOf } from './scene.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function client(relay: RelayServer, key?: NodePrivateKey): Promise<RawClient> {
  const c = await RawClient.connect({ port: relay.port, ...(key ? { key } : {}) });
  cleanups.push(() => c.close());
  return c;
}

describe('region mesh', () => {
  it('a client on A reaches a client on C in one hop, both ways, and the forwarded counters show it', async () => {
    const m = await meshOf(3);
    cleanups.push(m.stop);
    const [a, , c] = m.nodes;
    const x = await client(a!.relay);
    const y = await client(c!.relay);
    await until(() => a!.links.knows(y.publicKey) && c!.links.knows(x.publicKey), 'A and C learned each other\u2019s client');
    x.sendPacket(y.publicKey, Buffer.from('x to y'));
    const got = await y.nextOf('RecvPacket');
    expect(Buffer.from(got.src).equals(x.publicKey)).toBe(true);
    expect(Buffer.from(got.data).toString()).toBe('x to y');
    y.sendPacket(x.publicKey, Buffer.from('y to x'));
    expect(Buffer.from((await x.nextOf('RecvPacket')).data).toString()).toBe('y to x');
    expect(a!.relay.stats().packetsForwardedOut).toBe(1);
    expect(c!.relay.stats().packetsForwardedIn).toBe(1);
    expect(c!.relay.stats().packetsForwardedOut).toBe(1);
    expect(m.nodes[1]!.relay.stats().packetsForwardedIn).toBe(0);
  });

  it('the metrics show the mesh: peers up, keys per peer, forwarded in/out, and derper\'s names on /debug/varz', async () => {
    const m = await meshOf(2);
    cleanups.push(m.stop);
    const [a, b] = m.nodes;
    const metrics = new RelayMetrics({ defaultMetrics: false });
    metrics.attachRelay(a!.relay, { observe: false });
    metrics.attachMesh(() => a!.links.status());
    const x = await client(a!.relay);
    const y = await client(b!.relay);
    await until(() => a!.links.knows(y.publicKey), 'A learned B\u2019s client');
    x.sendPacket(y.publicKey, Buffer.from('counted'));
    await y.nextOf('RecvPacket');
    const text = await metrics.metrics();
    const peer = `127.0.0.1:${b!.relay.port}`;
    expect(text).toContain(`derp_mesh_peer_up{peer="${peer}"} 1`);
    expect(text).toContain(`derp_mesh_peer_keys{peer="${peer}"} 1`);
    expect(text).toContain(`derp_mesh_peer_forwarded_packets_total{peer="${peer}"} 1`);
    expect(text).toContain('derp_packets_forwarded_total{direction="out"} 1');
    expect(text).toContain('derp_mesh_peers{state="up"} 1');
    expect(text).toContain('derp_mesh_watchers 1');
    expect(text).toContain('derp_mesh_remote_keys 1');
    const varz = renderVarz(metrics.snapshot());
    expect(varz).toContain('derp_packets_forwarded_out 1');
    expect(varz).toContain('derp_clients_remote 1');
  });

  it('forwarded packets of every size, written in place into the link\'s batches, arrive intact and in order', async () => {
    const m = await meshOf(2);
    cleanups.push(m.stop);
    const [a, b] = m.nodes;
    const x = await client(a!.relay);
    const y = await client(b!.relay);
    await until(() => a!.links.knows(y.publicKey), 'A learned B\u2019s client');
    // Sizes that fill a 64 KiB batch unevenly, overflow it and exceed it (a frame bigger than a batch).
    const sizes = [0, 1, 1200, 40_000, 30_000, 65_536, 7, 65_000, 1200, 64 * 1024 - 69, 3, 50_000];
    const sent = sizes.map((n, i) => {
      const p = Buffer.alloc(n, i + 1);
      if (n >= 4) p.writeUInt32BE(i, 0);
      return p;
    });
    for (const p of sent) x.sendPacket(y.publicKey, p);
    for (let i = 0; i < sent.length; i++) {
      const got = await y.nextOf('RecvPacket');
      expect(Buffer.from(got.data).equals(sent[i]!), `packet ${i} (${sizes[i]} bytes)`).toBe(true);
    }
    expect(a!.relay.stats().packetsForwardedOut).toBe(sizes.length);
  });

  it('a local connection wins over a forwarder; when the key leaves its node it is forgotten and its receivers hear PeerGone', async () => {
    const m = await meshOf(2);
    cleanups.push(m.stop);
    const [a, b] = m.nodes;
    const key = NodePrivateKey.generate();
    const onB = await client(b!.relay, key);
    await until(() => a!.links.knows(key.publicKey), 'A learned B\u2019s client');
    // The same key connects to A too: A delivers locally.
    const onA = await client(a!.relay, key);
    const sender = await client(a!.relay);
    sender.sendPacket(key.publicKey, Buffer.from('local'));
    expect(Buffer.from((await onA.nextOf('RecvPacket')).data).toString()).toBe('local');
    expect(a!.relay.stats().packetsForwardedOut).toBe(0);
    await onA.close();
    await until(() => a!.relay.stats().clients === 2, 'A dropped the local copy');
    sender.sendPacket(key.publicKey, Buffer.from('forwarded'));
    expect(Buffer.from((await onB.nextOf('RecvPacket')).data).toString()).toBe('forwarded');
    expect(a!.relay.stats().packetsForwardedOut).toBe(1);
    // The client on B sends to A's client (forwarded), then leaves B: A's client hears PeerGone(Disconnected).
    await until(() => b!.links.knows(sender.publicKey), 'B learned A\u2019s client');
    onB.sendPacket(sender.publicKey, Buffer.from('from B'));
    expect(Buffer.from((await sender.nextOf('RecvPacket')).data).toString()).toBe('from B');
    await onB.close();
    const gone = await sender.nextOf('PeerGone');
    expect(Buffer.from(gone.peer).equals(key.publicKey)).toBe(true);
    expect(gone.reason).toBe(PeerGoneReason.Disconnected);
    await until(() => !a!.links.knows(key.publicKey), 'A forgot the key');
  });

  it('a link that drops forgets at once everything it learned, and relearns it on reconnect', async () => {
    const m = await meshOf(2);
    cleanups.push(m.stop);
    const [a, b] = m.nodes;
    for (let i = 0; i < 5; i++) await client(b!.relay);
    await until(() => a!.relay.meshView().remoteKeys === 5, 'A knows B\u2019s five clients');
    // Close A's link connection from B's side (B sees a mesh peer with A's key and closes it).
    const closed = b!.relay.closeConnections((c) => c.key !== null && c.key.equals(a!.key.publicKey), 'test: cut the link');
    expect(closed).toBe(1);
    await until(() => a!.links.status()[0]!.connects === 2 && a!.relay.meshView().remoteKeys === 5, 'A reconnected and relearned');
  });

  it('ForwardPacket for a key that is not here is dropped (unknown_dest_on_fwd), answered NotHere, never re-forwarded', async () => {
    const m = await meshOf(3);
    cleanups.push(m.stop);
    const [a, b, c] = m.nodes;
    const meshPeer = await RawClient.connect({ port: b!.relay.port }, { version: 2, canAckPings: false, meshKey: m.meshKey });
    cleanups.push(() => meshPeer.close());
    const onC = await client(c!.relay);
    await until(() => b!.links.knows(onC.publicKey), 'B learned C\u2019s client');
    const src = NodePrivateKey.generate().publicKey;
    meshPeer.write(encode.forwardPacket(src, onC.publicKey, Buffer.from('one hop only')));
    const gone = await meshPeer.nextOf('PeerGone');
    expect(gone.reason).toBe(PeerGoneReason.NotHere);
    expect(b!.relay.stats().packetsDropped.unknown_dest_on_fwd).toBe(1);
    expect(b!.relay.stats().packetsForwardedOut).toBe(0);
    expect(c!.relay.stats().packetsForwardedIn).toBe(0);
    void a;
  });

  it('WatchConns floods every local key, then streams PeerPresent (with flags) and PeerGone', async () => {
    const meshKey = randomBytes(32);
    const key = NodePrivateKey.generate();
    const relay = new RelayServer({ privateKey: key, addr: '127.0.0.1:0', meshKey });
    await relay.start();
    cleanups.push(() => relay.stop({ restarting: false }));
    const early = await client(relay);
    const watcher = await RawClient.connect({ port: relay.port }, { version: 2, canAckPings: false, meshKey });
    cleanups.push(() => watcher.close());
    watcher.write(encode.watchConns());
    const seen = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const p = await watcher.nextOf('PeerPresent');
      seen.add(Buffer.from(p.peer).toString('hex'));
      if (Buffer.from(p.peer).equals(watcher.publicKey)) expect(p.flags).toBe(PeerPresentFlags.IsMeshPeer);
      else expect(p.flags).toBe(PeerPresentFlags.IsRegular);
    }
    expect(seen).toEqual(new Set([early.publicKey.toString('hex'), watcher.publicKey.toString('hex')]));
    const prober = await RawClient.connect({ port: relay.port }, { version: 2, canAckPings: false, isProber: true });
    const p = await watcher.nextOf('PeerPresent');
    expect(Buffer.from(p.peer).equals(prober.publicKey)).toBe(true);
    expect(p.flags).toBe(PeerPresentFlags.IsProber);
    expect(p.ip).toBe('127.0.0.1');
    await prober.close();
    const g = await watcher.nextOf('PeerGone');
    expect(Buffer.from(g.peer).equals(prober.publicKey)).toBe(true);
    expect(relay.stats().watchers).toBe(1);
  });

  it('privileged frames from a client without the mesh key close that connection only, counted', async () => {
    const meshKey = randomBytes(32);
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', meshKey });
    await relay.start();
    cleanups.push(() => relay.stop({ restarting: false }));
    const a = await client(relay);
    const b = await client(relay);
    const frames = [encode.watchConns(), encode.forwardPacket(a.publicKey, b.publicKey, Buffer.from('x')), encode.closePeer(b.publicKey)];
    for (const f of frames) {
      const bad = await client(relay);
      bad.write(f);
      await bad.closedPromise;
    }
    expect(relay.stats().meshPermissionDenied).toBe(3);
    // A wrong mesh key is a plain client: counted, and WatchConns still closes it.
    const wrong = await RawClient.connect({ port: relay.port }, { version: 2, canAckPings: false, meshKey: randomBytes(32) });
    expect(relay.stats().meshKeyMismatches).toBe(1);
    wrong.write(encode.watchConns());
    await wrong.closedPromise;
    expect(relay.stats().meshPermissionDenied).toBe(4);
    a.sendPacket(b.publicKey, Buffer.from('still fine'));
    expect(Buffer.from((await b.nextOf('RecvPacket')).data).toString()).toBe('still fine');
  });

  it('ClosePeer closes every connection of the key', async () => {
    const meshKey = randomBytes(32);
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', meshKey });
    await relay.start();
    cleanups.push(() => relay.stop({ restarting: false }));
    const key = NodePrivateKey.generate();
    const one = await client(relay, key);
    const two = await client(relay, key);
    const other = await client(relay);
    const admin = await RawClient.connect({ port: relay.port }, { version: 2, canAckPings: false, meshKey });
    cleanups.push(() => admin.close());
    admin.write(encode.closePeer(key.publicKey));
    await Promise.all([one.closedPromise, two.closedPromise]);
    expect(relay.stats().closePeerConns).toBe(2);
    await other.ping();
  });

  it('a link with the wrong mesh key is refused: counted on both sides, nothing learned', async () => {
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', meshKey: randomBytes(32) });
    await relay.start();
    cleanups.push(() => relay.stop({ restarting: false }));
    const mine = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0' });
    await mine.start();
    cleanups.push(() => mine.stop({ restarting: false }));
    const key = NodePrivateKey.generate();
    const links = new MeshLinks({ relay: mine, privateKey: key, serverPublicKey: key.publicKey, meshKey: randomBytes(32), secure: false, logger: silentLogger, reconnect: { baseMs: 10, maxMs: 50 } });
    cleanups.push(() => links.stop());
    links.setEndpoints([endpointOf(relay)]);
    await until(() => (links.status()[0]?.refusals ?? 0) >= 2, 'two refusals');
    expect(links.status()[0]!.lastError).toMatch(/does not accept our mesh key/);
    expect(relay.stats().meshKeyMismatches).toBeGreaterThanOrEqual(2);
    expect(mine.meshView().remoteKeys).toBe(0);
  });

  it('a link that reaches this node itself (same server key) stops', async () => {
    const meshKey = randomBytes(32);
    const key = NodePrivateKey.generate();
    const relay = new RelayServer({ privateKey: key, addr: '127.0.0.1:0', meshKey });
    await relay.start();
    cleanups.push(() => relay.stop({ restarting: false }));
    const links = new MeshLinks({ relay, privateKey: key, serverPublicKey: key.publicKey, meshKey, secure: false, logger: silentLogger });
    cleanups.push(() => links.stop());
    links.setEndpoints([endpointOf(relay)]);
    await until(() => links.status()[0]!.state === 'self', 'link stopped as self');
    expect(relay.meshView().watchers).toBe(0);
  });
});

void FrameType;
