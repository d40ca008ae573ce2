/** Loopback "regions" for netcheck tests: a relay + STUN server, optionally behind a delay proxy. */
import { writeFile } from 'node:fs/promises';
import type { DERPMap, DERPRegion, DERPServer } from '../../src/lib/derpmap/types.js';
import { toSeedJson } from '../../src/lib/derpmap/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/keys.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { StunServer } from '../../src/lib/stun/server.js';
import { DelayProxy } from '../helpers/delay-proxy.js';

export interface RegionSpec {
  id: number;
  code: string;
  /** One-way delay added in each direction (RTT grows by twice this); undefined = no proxy. */
  delayMs?: number;
  /** The proxy drops UDP (STUN blocked). */
  dropUdp?: boolean;
  /** No relay (only STUN). */
  noRelay?: boolean;
  /** Use this port as the node's DERP port instead of a relay (e.g. a fake captive portal). */
  derpPort?: number;
}

export interface TestRegion {
  spec: RegionSpec;
  relay?: RelayServer;
  stun: StunServer;
  proxy?: DelayProxy;
  node: DERPServer;
}

export async function startRegion(spec: RegionSpec): Promise<TestRegion> {
  const stun = new StunServer({ port: 0, host: '127.0.0.1' });
  await stun.start();
  let relay: RelayServer | undefined;
  if (!spec.noRelay && spec.derpPort === undefined) {
    relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0' });
    await relay.start();
  }
  const relayPort = spec.derpPort ?? relay?.port;
  let proxy: DelayProxy | undefined;
  if (spec.delayMs !== undefined) {
    proxy = await DelayProxy.start({ target: { udpPort: stun.port, tcpPort: relayPort }, delayMs: spec.delayMs, dropUdp: spec.dropUdp });
  }
  const node: DERPServer = {
    id: `${spec.id}a`,
    hostname: '127.0.0.1',
    ipv4: '127.0.0.1',
    ipv6: 'none',
    stunPort: proxy?.udpPort ?? stun.port,
    derpPort: (proxy && relayPort !== undefined ? proxy.tcpPort : relayPort) ?? 1,
    region: spec.code,
    regionCode: spec.id,
    canStun: true,
    canRelay: relayPort !== undefined,
    plainHttp: true,
    canPort80: true,
  };
  return { spec, relay, stun, proxy, node };
}

export function mapOf(regions: TestRegion[], extra: Partial<DERPRegion> = {}): DERPMap {
  const map: DERPMap = { regions: {} };
  for (const r of regions) {
    map.regions[r.spec.id] = { regionId: r.spec.id, regionCode: r.spec.code, regionName: `Region ${r.spec.code}`, nodes: [r.node], ...extra };
  }
  return map;
}

export async function writeMap(file: string, map: DERPMap): Promise<void> {
  // Seed JSON: the Tailscale schema has no plainHttp.
  await writeFile(file, JSON.stringify(toSeedJson(map)));
}

export async function stopRegions(regions: TestRegion[]): Promise<void> {
  await Promise.all(regions.map(async (r) => {
    await r.proxy?.close();
    await r.relay?.stop({ restarting: false });
    await r.stun.stop();
  }));
}
