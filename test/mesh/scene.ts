/** In-process meshed relays on loopback for the mesh tests. */
import { randomBytes } from 'node:crypto';
import { MeshLinks, type MeshEndpoint } from '../../src/lib/mesh/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { silentLogger } from '../../src/lib/util/logger.js';
import { until } from '../server/helpers.js';

export interface MeshNode {
  name: string;
  key: NodePrivateKey;
  relay: RelayServer;
  links: MeshLinks;
}

export function endpointOf(relay: RelayServer, host = '127.0.0.1'): MeshEndpoint {
  return { id: `127.0.0.1:${relay.port}`, host, address: '127.0.0.1', port: relay.port, target: { spec: `127.0.0.1:${relay.port}`, host: '127.0.0.1', port: relay.port } };
}

/** Starts `n` relays sharing `meshKey`, each linked to all the others; waits until every link is up. */
export async function meshOf(n: number, meshKey: Buffer = randomBytes(32)): Promise<{ nodes: MeshNode[]; meshKey: Buffer; stop: () => Promise<void> }> {
  const nodes: MeshNode[] = [];
  for (let i = 0; i < n; i++) {
    const key = NodePrivateKey.generate();
    const relay = new RelayServer({ privateKey: key, addr: '127.0.0.1:0', meshKey });
    await relay.start();
    const links = new MeshLinks({ relay, privateKey: key, serverPublicKey: key.publicKey, meshKey, secure: false, logger: silentLogger, reconnect: { baseMs: 10, maxMs: 200 } });
    nodes.push({ name: String.fromCharCode(65 + i), key, relay, links });
  }
  for (const node of nodes) node.links.setEndpoints(nodes.filter((o) => o !== node).map((o) => endpointOf(o.relay)));
  await until(() => nodes.every((node) => node.links.up === n - 1 && node.relay.meshView().watchers === n - 1), 'every mesh link up and watching');
  return {
    nodes,
    meshKey,
    stop: async () => {
      for (const node of nodes) await node.links.stop();
      for (const node of nodes) await node.relay.stop({ restarting: false });
    },
  };
}
