/**
 * Whether a mesh link is up, as the relay and its metrics see it. A mesh peer that goes silent without closing its sockets (a frozen host, a partition): the link's
 * pings go unanswered, the link is dropped and what it taught forgotten, so a client that left that
 * node for another is reachable again through the other node's link — not after the 2-minute read timeout.
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DERPClient } from '../../src/lib/client/index.js';
import { MeshLinks, type MeshEndpoint } from '../../src/lib/mesh/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { MemoryLogger, silentLogger } from '../../src/lib/util/logger.js';
import { until } from '../faults/helpers.js';
import { endpointOf } from './scene.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A TCP relay to `port` that can stop carrying bytes both ways while keeping every socket open. */
async function freezableProxy(port: number): Promise<{ port: number; freeze: () => void }> {
  let frozen = false;
  const socks = new Set<net.Socket>();
  const server = net.createServer((down) => {
    const up = net.connect(port, '127.0.0.1');
    socks.add(down).add(up);
    down.on('data', (d) => frozen || up.write(d));
    up.on('data', (d) => frozen || down.write(d));
    const end = (): void => {
      if (frozen) return;
      down.destroy();
      up.destroy();
    };
    down.on('close', end).on('error', end);
    up.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(async () => {
    for (const s of socks) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return { port: (server.address() as net.AddressInfo).port, freeze: () => (frozen = true) };
}

async function node(meshKey: Buffer): Promise<{ key: NodePrivateKey; relay: RelayServer }> {
  const key = NodePrivateKey.generate();
  const relay = new RelayServer({ privateKey: key, addr: '127.0.0.1:0', meshKey });
  await relay.start();
  cleanups.push(() => relay.stop({ restarting: false, signal: AbortSignal.abort() }));
  return { key, relay };
}

function links(n: { key: NodePrivateKey; relay: RelayServer }, meshKey: Buffer, endpoints: MeshEndpoint[], liveness?: { pingIntervalMs: number; readTimeoutMs: number }): MeshLinks {
  const l = new MeshLinks({ relay: n.relay, privateKey: n.key, serverPublicKey: n.key.publicKey, meshKey, secure: false, logger: silentLogger, reconnect: { baseMs: 10, maxMs: 100 }, ...(liveness ? { liveness } : {}) });
  cleanups.push(() => l.stop());
  l.setEndpoints(endpoints);
  return l;
}

async function client(url: string, key?: NodePrivateKey): Promise<DERPClient> {
  const c = new DERPClient({ ...(key ? { privateKey: key } : {}), reconnect: false });
  cleanups.push(() => c.disconnect());
  await c.connect(url);
  return c;
}

describe('mesh link liveness', () => {
  it('a peer that stops answering is dropped within the read timeout, and its former client is reached through the node it moved to', async () => {
    const meshKey = randomBytes(32);
    const [a, b, c] = [await node(meshKey), await node(meshKey), await node(meshKey)];
    const toB = await freezableProxy(b.relay.port);
    const viaProxy: MeshEndpoint = { ...endpointOf(b.relay), id: `127.0.0.1:${toB.port}`, port: toB.port };
    const la = links(a, meshKey, [viaProxy, endpointOf(c.relay)], { pingIntervalMs: 100, readTimeoutMs: 600 });
    links(b, meshKey, [endpointOf(a.relay), endpointOf(c.relay)]);
    links(c, meshKey, [endpointOf(a.relay), endpointOf(b.relay)]);
    await until(() => la.up === 2, 5_000, 'A linked to B (through the proxy) and C');

    const zKey = NodePrivateKey.generate();
    const zOnB = await client(b.relay.url, zKey);
    await until(() => la.get(viaProxy.id)!.knows(zKey.publicKey), 5_000, 'A learned z on B');
    const x = await client(a.relay.url);
    // Pongs keep a healthy link alive: still its first connection after B answered pings for longer than the read timeout.
    const pingsAtStart = b.relay.stats().gotPing;
    await until(() => b.relay.stats().gotPing >= pingsAtStart + 10, 5_000, 'B answered ten pings of A\u2019s link');
    expect(la.get(viaProxy.id)!.status()).toMatchObject({ state: 'up', connects: 1 });

    // B goes silent to A; z leaves B for C (B's PeerGone never reaches A).
    toB.freeze();
    await zOnB.disconnect();
    const zOnC = await client(c.relay.url, zKey);
    const got = zOnC.receive()[Symbol.asyncIterator]().next();
    await until(() => la.get(viaProxy.id)!.state !== 'up', 5_000, 'A dropped the silent link');
    expect(la.get(viaProxy.id)!.knows(zKey.publicKey)).toBe(false);
    await until(() => la.knows(zKey.publicKey), 5_000, 'A knows z through C');
    await x.send(zKey.publicKey, Buffer.from('found'));
    expect((await got).value?.data.toString()).toBe('found');
  });

  it('a link the peer refuses (another mesh key) is never reported up, not even between connecting and the refusal', async () => {
    const peer = await node(randomBytes(32));
    const mine = await node(randomBytes(32));
    const logger = new MemoryLogger();
    const l = new MeshLinks({ relay: mine.relay, privateKey: mine.key, serverPublicKey: mine.key.publicKey, meshKey: randomBytes(32), secure: false, logger, reconnect: { baseMs: 10, maxMs: 50 } });
    cleanups.push(() => l.stop());
    const states = new Set<string>();
    const watch = setInterval(() => states.add(l.status()[0]?.state ?? 'none'), 1);
    cleanups.push(async () => clearInterval(watch));
    l.setEndpoints([endpointOf(peer.relay)]);
    await until(() => (l.status()[0]?.refusals ?? 0) >= 3, 5_000, 'three refusals');
    expect(l.status()[0]!.connects).toBeGreaterThanOrEqual(3);
    expect(logger.entries.filter((e) => e.msg === 'mesh link up')).toEqual([]);
    expect(states.has('up')).toBe(false);
  });
});
