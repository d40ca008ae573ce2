/** Loopback relay nodes for the probe tests: a real RelayServer (+ StunServer), plain HTTP or TLS. */
import { createServer, type Server, type Socket } from 'node:net';
import type { DERPRegion, DERPServer, DERPMap } from '../../src/lib/derpmap/types.js';
import { NodePrivateKey } from '../../src/lib/protocol/keys.js';
import { RelayServer } from '../../src/lib/server/index.js';
import type { AdmitFn } from '../../src/lib/server/hooks.js';
import { StunServer } from '../../src/lib/stun/server.js';
import type { ProbeRegion } from '../../src/lib/probe/index.js';
import { probeRegionsFromMap } from '../../src/lib/probe/index.js';

export interface TestNode {
  node: DERPServer;
  key: NodePrivateKey;
  relay: RelayServer;
  stun?: StunServer;
  stop(): Promise<void>;
}

export interface NodeSpec {
  id: string;
  regionId?: number;
  regionCode?: string;
  tls?: { cert: string; key: string };
  /** Map fields to set on the node (certName, hostname, stunPort, …). */
  node?: Partial<DERPServer>;
  /** Start a STUN server and point the node at it (default true). */
  stun?: boolean;
  admit?: AdmitFn;
  /** The region's mesh key: clients presenting it are mesh peers. */
  meshKey?: Buffer;
}

export async function startNode(spec: NodeSpec): Promise<TestNode> {
  const key = NodePrivateKey.generate();
  const relay = new RelayServer({ privateKey: key, addr: '127.0.0.1:0', ...(spec.tls ? { tls: spec.tls } : {}), ...(spec.admit ? { admit: spec.admit } : {}), ...(spec.meshKey ? { meshKey: spec.meshKey } : {}) });
  await relay.start();
  let stun: StunServer | undefined;
  if (spec.stun !== false) {
    stun = new StunServer({ port: 0, host: '127.0.0.1' });
    await stun.start();
  }
  const regionId = spec.regionId ?? 900;
  const node: DERPServer = {
    id: spec.id,
    hostname: '127.0.0.1',
    ipv4: '127.0.0.1',
    ipv6: 'none',
    stunPort: stun?.port ?? -1,
    derpPort: relay.port,
    region: spec.regionCode ?? 'tst',
    regionCode: regionId,
    canStun: stun !== undefined,
    canRelay: true,
    ...(spec.tls ? {} : { plainHttp: true }),
    ...spec.node,
  };
  return {
    node,
    key,
    relay,
    stun,
    stop: async () => {
      await relay.stop({ restarting: false });
      await stun?.stop();
    },
  };
}

export function mapOf(nodes: DERPServer[]): DERPMap {
  const regions: Record<number, DERPRegion> = {};
  for (const n of nodes) {
    const r = (regions[n.regionCode] ??= { regionId: n.regionCode, regionCode: n.region, regionName: `Region ${n.region}`, nodes: [] });
    r.nodes.push(n);
  }
  return { regions };
}

export function regionsOf(nodes: DERPServer[]): ProbeRegion[] {
  return probeRegionsFromMap(mapOf(nodes));
}

/** A TCP server that accepts and never answers (a hung relay); counts and holds its sockets. */
export async function startSilentServer(): Promise<{ port: number; sockets: Set<Socket>; peak(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let peak = 0;
  const server: Server = createServer((s) => {
    sockets.add(s);
    peak = Math.max(peak, sockets.size);
    s.on('close', () => sockets.delete(s));
    // Read and discard, so the client's close is seen.
    s.resume();
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return {
    port: addr.port,
    sockets,
    peak: () => peak,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
