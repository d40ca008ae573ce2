/** runProbe against real relays on loopback: healthy, STUN off, refused key, unmeshed pair, timeouts. */
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfigText, resolveServeConfig } from '../../src/lib/config/index.js';
import { RelayNode } from '../../src/lib/node/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/keys.js';
import { MemoryLogger, silentLogger } from '../../src/lib/util/logger.js';
import { MeshLinks } from '../../src/lib/mesh/index.js';
import { runProbe, type CheckResult, type ProbeReport } from '../../src/lib/probe/index.js';
import { regionsOf, startNode, startSilentServer } from './nodes.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function node(...args: Parameters<typeof startNode>) {
  const n = await startNode(...args);
  cleanups.push(n.stop);
  return n;
}

function check(rep: ProbeReport, node: string, name: string, peer?: string): CheckResult {
  const r = rep.nodes.find((n) => n.node === node)?.checks.find((c) => c.check === name && (peer === undefined || c.peer === peer));
  if (!r) throw new Error(`no ${name} result for ${node}`);
  return r;
}

describe('runProbe', () => {
  it('a healthy plain-HTTP node: every check good or skipped with its reason', async () => {
    const a = await node({ id: '900a' });
    const seen: string[] = [];
    const rep = await runProbe(regionsOf([a.node]), { checks: ['stun4', 'stun6', 'tls', 'http', 'derp', 'packet', 'mesh', 'bandwidth'], bandwidthBytes: 200_000, packets: 5, onCheck: (t, r) => seen.push(`${t.node.id}/${r.check}`) });
    const n = rep.nodes[0]!;
    expect(n.checks.map((c) => `${c.check}:${c.status}`)).toEqual([
      'stun4:good', 'stun6:skipped', 'tls:skipped', 'http:good', 'derp:good', 'packet:good', 'mesh:skipped', 'bandwidth:good',
    ]);
    expect(check(rep, '900a', 'stun4')).toMatchObject({ unit: 'ms', details: { mappedAddress: expect.stringMatching(/^127\.0\.0\.1:\d+$/) } });
    expect(check(rep, '900a', 'stun6').message).toMatch(/IPv6 is disabled/);
    expect(check(rep, '900a', 'tls').message).toBe('plain HTTP node');
    expect(check(rep, '900a', 'derp').details).toMatchObject({ upgradeMs: expect.any(Number), websocketMs: expect.any(Number) });
    expect(check(rep, '900a', 'packet').details).toMatchObject({ sent: 5, received: 5, lost: 0 });
    expect(check(rep, '900a', 'bandwidth')).toMatchObject({ unit: 'Mbit/s', details: { bytes: 200_000 } });
    expect(check(rep, '900a', 'mesh').message).toMatch(/one node/);
    expect(rep).toMatchObject({ status: 'good', summary: { nodes: 1, checks: 8, good: 5, warn: 0, bad: 0, skipped: 3 } });
    expect(seen.sort()).toEqual(n.checks.map((c) => `900a/${c.check}`).sort());
    // Every probe client disconnected.
    await expect.poll(() => a.relay.stats().currentConnections, { timeout: 3_000 }).toBe(0);
  });

  it('STUN off in the map → skipped; STUN expected but silent → bad naming the address', async () => {
    const off = await node({ id: '900a', stun: false });
    const silent: UdpSocket = createSocket('udp4');
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => silent.close(() => r())));
    const port = silent.address().port;
    const mute = await node({ id: '901a', regionId: 901, regionCode: 'mut', stun: false, node: { stunPort: port, canStun: true } });
    const rep = await runProbe(regionsOf([off.node, mute.node]), { checks: ['stun4'], checkTimeoutMs: 2_000 });
    expect(check(rep, '900a', 'stun4')).toMatchObject({ status: 'skipped', message: expect.stringMatching(/no STUN/) });
    const bad = check(rep, '901a', 'stun4');
    expect(bad.status).toBe('bad');
    expect(bad.message).toContain(`127.0.0.1:${port}`);
    expect(rep.status).toBe('bad');
  });

  it('a relay that refuses the probe key: derp bad, saying it closed before ServerInfo', async () => {
    const key = NodePrivateKey.generate();
    const denied = key.publicKey;
    const n = await node({ id: '900a', admit: (req) => (req.key.equals(denied) ? { allow: false, source: 'deny-list', reason: 'listed' } : { allow: true, source: 'default', reason: 'ok' }) });
    const rep = await runProbe(regionsOf([n.node]), { checks: ['derp'], privateKey: key });
    const d = check(rep, '900a', 'derp');
    expect(d.status).toBe('bad');
    expect(d.message).toMatch(/upgrade: 900a: the relay closed the connection before ServerInfo: it refused the probe's key nodekey:/);
    expect(d.message).toMatch(/websocket: /);
    // Another key gets in.
    const ok = await runProbe(regionsOf([n.node]), { checks: ['derp'] });
    expect(check(ok, '900a', 'derp').status).toBe('good');
  });

  it('`derp serve` with an allow list: only listed keys get through; --key-file keys make every check pass', async () => {
    const probeKey = NodePrivateKey.generate();
    const peerKey = NodePrivateKey.generate();
    const yaml = `dev: true\naddr: "127.0.0.1:0"\nadmission:\n  allowKeys: ["${probeKey.publicText()}", "${peerKey.publicText()}"]\n`;
    const rn = await RelayNode.start({ config: resolveServeConfig(parseConfigText(yaml, 'derp.yaml')), logger: new MemoryLogger() });
    cleanups.push(() => rn.stop());
    const n = { id: '900a', hostname: '127.0.0.1', ipv4: '127.0.0.1', ipv6: 'none', stunPort: rn.stun!.port, derpPort: rn.relay.port, region: 'tst', regionCode: 900, canStun: true, canRelay: true, plainHttp: true };
    const checks = ['derp', 'packet'] as const;
    const anon = await runProbe(regionsOf([n]), { checks: [...checks] });
    expect(check(anon, '900a', 'derp').message).toMatch(/refused the probe's key/);
    // The receiver's fresh key is not on the list: the packet check says who was refused.
    const one = await runProbe(regionsOf([n]), { checks: [...checks], privateKey: probeKey });
    expect(check(one, '900a', 'derp').status).toBe('good');
    expect(check(one, '900a', 'packet')).toMatchObject({ status: 'bad', message: expect.stringMatching(/refused the probe's key nodekey:/) });
    expect(check(one, '900a', 'packet').message).not.toContain(probeKey.publicText());
    const both = await runProbe(regionsOf([n]), { checks: [...checks], privateKey: probeKey, peerPrivateKey: peerKey });
    expect(both.nodes[0]!.checks.map((c) => c.status)).toEqual(['good', 'good']);
  });

  it('two unmeshed nodes of one region: mesh bad in both directions, one result per pair', async () => {
    const a = await node({ id: '900a' });
    const b = await node({ id: '900b' });
    const rep = await runProbe(regionsOf([a.node, b.node]), { checks: ['mesh'] });
    const ab = check(rep, '900a', 'mesh', '900b');
    const ba = check(rep, '900b', 'mesh', '900a');
    for (const r of [ab, ba]) {
      expect(r.status).toBe('bad');
      expect(r.message).toMatch(/not delivered within \d+ ms/);
    }
    expect(ab.message).toMatch(/client on 900a to a client on 900b/);
    expect(rep.nodes.map((n) => n.checks.length)).toEqual([1, 1]);
  });

  it('two meshed nodes of one region: mesh good in both directions (derpprobe\'s mesh probe through ForwardPacket)', async () => {
    const meshKey = randomBytes(32);
    const a = await node({ id: '900a', meshKey });
    const b = await node({ id: '900b', meshKey });
    for (const [x, y] of [[a, b], [b, a]] as const) {
      const links = new MeshLinks({ relay: x.relay, privateKey: x.key, serverPublicKey: x.key.publicKey, meshKey, secure: false, logger: silentLogger });
      cleanups.push(() => links.stop());
      links.setEndpoints([{ id: `127.0.0.1:${y.relay.port}`, host: '127.0.0.1', address: '127.0.0.1', port: y.relay.port, target: { spec: 'peer', host: '127.0.0.1' } }]);
    }
    const rep = await runProbe(regionsOf([a.node, b.node]), { checks: ['mesh'] });
    for (const [from, to] of [['900a', '900b'], ['900b', '900a']] as const) {
      const r = check(rep, from, 'mesh', to);
      expect(r.status, r.message).toBe('good');
    }
    expect(a.relay.stats().packetsForwardedOut + b.relay.stats().packetsForwardedOut).toBeGreaterThanOrEqual(2);
  });

  it('a relay that accepts and never answers: the check times out and the run deadline ends the rest', async () => {
    const hung = await startSilentServer();
    cleanups.push(hung.close);
    const n = await node({ id: '900a', stun: false, node: { derpPort: hung.port } });
    const rep = await runProbe(regionsOf([n.node]), { checks: ['http'], checkTimeoutMs: 300 });
    expect(check(rep, '900a', 'http')).toMatchObject({ status: 'bad', message: 'timed out after 300 ms' });
    // Deadline: one slot, two slow checks; the second never starts.
    const rep2 = await runProbe(regionsOf([n.node]), { checks: ['http', 'derp'], checkTimeoutMs: 5_000, runTimeoutMs: 300, concurrency: 1 });
    expect(check(rep2, '900a', 'http').message).toMatch(/^run deadline/);
    expect(check(rep2, '900a', 'derp').message).toMatch(/^run deadline/);
    // Every socket the probe opened to the hung server is closed.
    await expect.poll(() => hung.sockets.size, { timeout: 3_000 }).toBe(0);
  });

  it('runs at most `concurrency` checks at once', async () => {
    const hung = await startSilentServer();
    cleanups.push(hung.close);
    // Four nodes on the hung server; each http check holds one connection until it times out.
    const ns = await Promise.all(['900a', '900b', '900c', '900d'].map((id) => node({ id, stun: false, node: { derpPort: hung.port } })));
    const rep = await runProbe(regionsOf(ns.map((n) => n.node)), { checks: ['http'], checkTimeoutMs: 200, concurrency: 2 });
    expect(rep.nodes.map((n) => n.checks[0]!.message)).toEqual(Array(4).fill('timed out after 200 ms'));
    expect(hung.peak()).toBe(2);
  });

  it('an abort ends the run with the unfinished checks bad, and still returns the report', async () => {
    const hung = await startSilentServer();
    cleanups.push(hung.close);
    const n = await node({ id: '900a', stun: false, node: { derpPort: hung.port } });
    const ctl = new AbortController();
    const running = runProbe(regionsOf([n.node]), { checks: ['http', 'derp'], concurrency: 1, signal: ctl.signal });
    // Abort once the hung server holds the http check's connection.
    await expect.poll(() => hung.sockets.size, { timeout: 5_000 }).toBe(1);
    ctl.abort();
    const rep = await running;
    expect(check(rep, '900a', 'http')).toMatchObject({ status: 'bad', message: 'the probe was aborted before this check finished' });
    expect(check(rep, '900a', 'derp')).toMatchObject({ status: 'bad', message: 'the probe was aborted before this check started' });
    await expect.poll(() => hung.sockets.size, { timeout: 3_000 }).toBe(0);
  });
});
