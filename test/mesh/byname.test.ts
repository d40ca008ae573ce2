/**
 * A region meshed by one DNS name (spec §10.2, issue 10 §1): three RelayNodes on 127.0.0.1–3 (one port,
 * as pods behind a headless Service), `mesh.with: [region.test]` answered by an injected resolver. Each
 * node dials every address of the name, itself included (that link stops as "self"); the zone losing an
 * address removes that link and what it taught; the address coming back rejoins it.
 */
import type { LookupAddress } from 'node:dns';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveServeConfig } from '../../src/lib/config/index.js';
import { DerpError } from '../../src/lib/errors.js';
import { RelayNode } from '../../src/lib/node/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { freePort, until } from '../faults/helpers.js';
import { RegionMember, reach, meshKeyFile, removeDir } from './procs.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const ADDRS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const NAME = 'region.test';

interface Zone {
  records: string[];
  lookups: number;
}

function lookupIn(zone: Zone) {
  return async (host: string): Promise<LookupAddress[]> => {
    zone.lookups++;
    if (host !== NAME) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return zone.records.map((address) => ({ address, family: 4 }));
  };
}

/** One node per address, all on one port (picked free on 127.0.0.1; tried again if another address has it). */
async function startRegion(zone: Zone, keyFile: string): Promise<{ port: number; nodes: RelayNode[]; logs: MemoryLogger[] }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const nodes: RelayNode[] = [];
    const logs: MemoryLogger[] = [];
    try {
      for (const host of ADDRS) {
        const logger = new MemoryLogger();
        const config = resolveServeConfig(undefined, { dev: true, addr: `${host}:${port}`, stun: false, 'metrics-addr': 'none', 'mesh-with': [NAME], 'mesh-psk-file': keyFile, 'mesh-resolve-seconds': 3600 });
        nodes.push(await RelayNode.start({ config, logger, meshLookup: lookupIn(zone) }));
        logs.push(logger);
      }
      return { port, nodes, logs };
    } catch (err) {
      for (const n of nodes) await n.stop();
      if (!(err instanceof DerpError && err.code === 'DERP_ERR_SERVER') || attempt >= 4) throw err;
    }
  }
}

const states = (n: RelayNode): Record<string, string> => Object.fromEntries((n.mesh?.status() ?? []).map((s) => [s.id, s.state]));

async function member(url: string): Promise<RegionMember> {
  const m = new RegionMember([url]);
  cleanups.push(() => m.close());
  await m.start();
  return m;
}


describe('region mesh by DNS name (injected resolver)', () => {
  it('every node links to the others and stops its link to itself; an address leaving the zone is unlinked and forgotten, and rejoins', async () => {
    const key = await meshKeyFile();
    cleanups.push(() => removeDir(key.dir));
    const zone: Zone = { records: [...ADDRS], lookups: 0 };
    const { port, nodes } = await startRegion(zone, key.file);
    for (const n of nodes) cleanups.push(() => n.stop());
    await Promise.all(nodes.map((n) => n.meshReady));
    const ids = ADDRS.map((a) => `${a}:${port}`);
    const want = (self: number, present = ids): Record<string, string> => Object.fromEntries(present.map((id) => [id, id === ids[self] ? 'self' : 'up']));
    // Up on the dialing side, and its WatchConns registered on the other (a frame later).
    await until(() => nodes.every((n, i) => JSON.stringify(states(n)) === JSON.stringify(want(i)) && n.relay.meshView().watchers === 2), 10_000, 'two links up and watching, one "self", on every node');
    for (const [i, n] of nodes.entries()) {
      // The self link learned nothing and watches nothing; the node is watched by the two others only.
      expect(n.mesh!.status().find((s) => s.id === ids[i])).toMatchObject({ state: 'self', keys: 0, serverKey: n.privateKey.publicText() });
      expect(n.relay.meshView().watchers).toBe(2);
    }

    const x = await member(nodes[0]!.relay.url);
    const z = await member(nodes[2]!.relay.url);
    await reach(x, z, 'x on .1 → z on .3');
    await reach(z, x, 'z on .3 → x on .1');

    // The zone drops .3; the others re-resolve (as on SIGHUP or the interval): the link goes, z is forgotten.
    zone.records = ADDRS.slice(0, 2);
    await Promise.all(nodes.slice(0, 2).map((n) => n.meshDiscovery!.refresh()));
    for (const n of nodes.slice(0, 2)) {
      expect(Object.keys(states(n)).sort()).toEqual(ids.slice(0, 2));
      expect(n.mesh!.knows(z.publicKey)).toBe(false);
    }
    // x's packets for z are now dropped at .1 as for any unknown key (nothing is forwarded to .3).
    const dropped = nodes[0]!.relay.stats().packetsDropped.unknown_dest;
    const out = nodes[0]!.relay.stats().packetsForwardedOut;
    await x.send(z.publicKey, Buffer.from('nowhere'));
    await until(() => nodes[0]!.relay.stats().packetsDropped.unknown_dest === dropped + 1, 5_000, 'the packet for z counted as unknown_dest');
    expect(nodes[0]!.relay.stats().packetsForwardedOut).toBe(out);
    // .3 closed by .1 and .2: only .3's own links (which it still has) watch them now.
    await until(() => nodes[2]!.relay.meshView().watchers === 0, 5_000, '.3 is watched by nobody');

    // Back in the zone: relinked, z learned again, packets cross.
    zone.records = [...ADDRS];
    await Promise.all(nodes.slice(0, 2).map((n) => n.meshDiscovery!.refresh()));
    await until(() => nodes.every((n, i) => JSON.stringify(states(n)) === JSON.stringify(want(i))), 10_000, 'the region whole again');
    await until(() => nodes[0]!.mesh!.knows(z.publicKey), 5_000, '.1 learned z again');
    await reach(x, z, 'x → z after the rejoin');
    expect(z.received.some((b) => b.toString() === 'nowhere')).toBe(false);
  });
});
