/**
 * A region of three `derp serve` processes meshed by list (spec §10), end to end: one hop between any
 * two nodes; a node SIGKILLed mid-stream costs the others nothing and its clients come back elsewhere;
 * restarted on its port it rejoins. Privileged frames from a plain client close that client only.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { NodePrivateKey, encode } from '../../src/lib/protocol/index.js';
import { RawClient } from '../helpers/rawclient.js';
import { until } from '../faults/helpers.js';
import { RegionMember, reach, kill, linksUp, meshKeyFile, metric, nodeArgs, removeDir, restartOn, startRegion, streamPacket, type MeshProc } from './procs.js';

const procs: MeshProc[] = [];
const members: RegionMember[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const m of members) await m.close();
  await Promise.all(procs.map((p) => kill(p)));
  for (const d of dirs) await removeDir(d);
});

async function member(urls: string[]): Promise<RegionMember> {
  const m = new RegionMember(urls);
  members.push(m);
  await m.start();
  return m;
}

const forwarded = (p: MeshProc, direction: 'in' | 'out'): Promise<number> => metric(p, 'derp_packets_forwarded_total', { direction });

/** Sequence-numbered packets from one member to another, at most WINDOW unanswered. */
const WINDOW = 32;
class Stream {
  sent = 0;
  private stopped = false;
  private readonly running: Promise<void>;
  constructor(private readonly from: RegionMember, private readonly to: RegionMember) {
    this.running = (async () => {
      while (!this.stopped) {
        if (this.sent - this.to.seqs.length < WINDOW) {
          await this.from.send(this.to.publicKey, streamPacket(this.sent++));
        } else await new Promise((r) => setTimeout(r, 1));
      }
    })();
  }
  get delivered(): number {
    return this.to.seqs.length;
  }
  async stop(): Promise<number[]> {
    this.stopped = true;
    await this.running;
    await until(() => this.to.seqs.length >= this.sent, 10_000, `all ${this.sent} stream packets delivered`);
    return [...this.to.seqs];
  }
}

describe('region mesh of three derp serve processes (by list)', () => {
  it('one hop A↔C; B SIGKILLed mid-stream: A↔C lose nothing, B\u2019s clients move and are reachable, B rejoins', async () => {
    const key = await meshKeyFile();
    dirs.push(key.dir);
    const { ports, nodes } = await startRegion(3, key.file);
    procs.push(...nodes);
    const [a, b, c] = nodes as [MeshProc, MeshProc, MeshProc];
    const [pa, pb, pc] = ports as [number, number, number];
    await Promise.all([linksUp(a, [pb, pc]), linksUp(b, [pa, pc]), linksUp(c, [pa, pb])]);

    // A client on A reaches a client on C and back, each packet in one hop.
    const x = await member([a.url]);
    const y = await member([c.url]);
    await reach(x, y, 'x→y');
    await reach(y, x, 'y→x');
    const before = { aOut: await forwarded(a, 'out'), aIn: await forwarded(a, 'in'), cOut: await forwarded(c, 'out'), cIn: await forwarded(c, 'in') };
    const xGot = x.received.length;
    const yGot = y.received.length;
    for (let i = 0; i < 10; i++) await x.send(y.publicKey, Buffer.from(`x${i}`));
    for (let i = 0; i < 10; i++) await y.send(x.publicKey, Buffer.from(`y${i}`));
    await until(() => y.received.length === yGot + 10 && x.received.length === xGot + 10, 10_000, 'ten packets each way');
    expect(await forwarded(a, 'out')).toBe(before.aOut + 10);
    expect(await forwarded(c, 'in')).toBe(before.cIn + 10);
    expect(await forwarded(c, 'out')).toBe(before.cOut + 10);
    expect(await forwarded(a, 'in')).toBe(before.aIn + 10);
    // Never through B: one hop.
    expect(await forwarded(b, 'in')).toBe(0);
    expect(await forwarded(b, 'out')).toBe(0);

    // z lives on B and would move to C, then A, when its node goes.
    const z = await member([b.url, c.url, a.url]);
    await reach(x, z, 'x→z on B');

    // A↔C stream both ways while B dies (members of their own: nothing else is sent to them).
    const sx = await member([a.url]);
    const sy = await member([c.url]);
    await reach(sx, sy, 'sx→sy');
    await reach(sy, sx, 'sy→sx');
    const ac = new Stream(sx, sy);
    const ca = new Stream(sy, sx);
    await until(() => ac.delivered >= 200 && ca.delivered >= 200, 10_000, '200 stream packets each way');
    b.proc.kill('SIGKILL');
    await b.exit;
    const atKill = { ac: ac.delivered, ca: ca.delivered };
    // A and C see B's link go down; z is back on C and reachable from A again.
    await until(async () => (await metric(a, 'derp_mesh_peer_up', { peer: `127.0.0.1:${pb}` })) === 0 && (await metric(c, 'derp_mesh_peer_up', { peer: `127.0.0.1:${pb}` })) === 0, 10_000, 'A and C report B down');
    await until(() => z.connected && z.url === c.url, 10_000, 'z reconnected to C');
    await reach(x, z, 'x→z after B died');
    await until(() => ac.delivered >= atKill.ac + 200 && ca.delivered >= atKill.ca + 200, 10_000, 'the stream kept flowing after the kill');

    // B again on its port (a new ephemeral key: --dev); A and C relink, and a client on B reaches A.
    const b2 = await restartOn(nodeArgs(ports, 1, key.file));
    procs.push(b2);
    await Promise.all([linksUp(a, [pb]), linksUp(c, [pb]), linksUp(b2, [pa, pc])]);
    const w = await member([b2.url]);
    await reach(w, x, 'w on B → x on A');
    await reach(x, w, 'x on A → w on B');

    const acSeqs = await ac.stop();
    const caSeqs = await ca.stop();
    // Not one packet lost, duplicated or reordered between A and C through B's death and return.
    const all = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
    expect(acSeqs).toEqual(all(ac.sent));
    expect(caSeqs).toEqual(all(ca.sent));
    expect(z.history).toEqual([b.url, c.url]);
    console.log(`[mesh] by list: A→C ${ac.sent} and C→A ${ca.sent} packets through B's SIGKILL and restart, 0 lost`);
  });

});

describe('privileged frames against a derp serve process', () => {
  it('privileged frames from a client without the mesh key close that connection only; a stream on the same relay goes on', async () => {
    const key = await meshKeyFile();
    dirs.push(key.dir);
    const { nodes } = await startRegion(1, key.file);
    const [r] = nodes as [MeshProc];
    procs.push(r);
    const s1 = await member([r.url]);
    const s2 = await member([r.url]);
    const stream = new Stream(s1, s2);
    await until(() => stream.delivered >= 100, 10_000, '100 stream packets');
    const victim = NodePrivateKey.generate().publicKey;
    const frames = [encode.watchConns(), encode.forwardPacket(s1.publicKey, s2.publicKey, Buffer.from('forged')), encode.closePeer(s2.publicKey), encode.closePeer(victim)];
    for (const f of frames) {
      const bad = await RawClient.connect({ port: r.port });
      const at = stream.delivered;
      bad.write(f);
      await bad.closedPromise;
      await until(() => stream.delivered >= at + 50, 10_000, 'the stream still flowing after a privileged frame');
    }
    expect(await metric(r, 'derp_mesh_auth_failures_total', { reason: 'permission_denied' })).toBe(frames.length);
    // ClosePeer did nothing: both stream ends are on their first connection, and the forged packet never arrived.
    expect(s2.history.length + s1.history.length).toBe(2);
    expect(s1.client!.stats.connects + s2.client!.stats.connects).toBe(2);
    expect(s2.received.some((b) => b.toString() === 'forged')).toBe(false);
    const seqs = await stream.stop();
    expect(seqs).toEqual(Array.from({ length: stream.sent }, (_, i) => i));
    expect(r.proc.exitCode).toBeNull();
  });
});
