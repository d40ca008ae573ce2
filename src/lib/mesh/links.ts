/**
 * The node's mesh links, one per endpoint: started when discovery (or the static list) adds an
 * endpoint, stopped (and everything it taught the relay forgotten) when it goes away.
 */
import type { ClientTlsOptions, ReconnectPolicy } from '../client/index.js';
import type { NodePrivateKey } from '../protocol/keys.js';
import type { Logger } from '../util/logger.js';
import { MESH_MAX_BUFFERED_BYTES, MESH_RECONNECT } from './constants.js';
import { MeshLink, type MeshLinkStatus, type MeshRelay } from './link.js';
import type { MeshEndpoint } from './types.js';

export interface MeshLinksInit {
  relay: MeshRelay;
  privateKey: NodePrivateKey;
  serverPublicKey: Buffer;
  meshKey: Buffer;
  secure: boolean;
  tls?: Omit<ClientTlsOptions, 'serverName'>;
  /** False for links between workers of one host (they share one server key). Default true. */
  detectSelf?: boolean;
  /** Links to the other workers of this host (PacketForwarder.sibling). Default false. */
  sibling?: boolean;
  /** Called whenever one of the links comes up. */
  onLinkUp?: () => void;
  maxBufferedBytes?: number;
  reconnect?: Partial<ReconnectPolicy>;
  liveness?: { pingIntervalMs: number; readTimeoutMs: number };
  logger: Logger;
}

export class MeshLinks {
  private readonly links = new Map<string, MeshLink>();
  private stopped = false;

  constructor(private readonly init: MeshLinksInit) {}

  /** The endpoints to keep links to: new ones are dialed, missing ones closed, the rest left alone. */
  setEndpoints(endpoints: readonly MeshEndpoint[]): void {
    if (this.stopped) return;
    const want = new Map(endpoints.map((e) => [e.id, e]));
    for (const [id, link] of this.links) {
      if (want.has(id)) continue;
      this.links.delete(id);
      this.init.logger.log('info', 'mesh peer removed', { peer: link.name });
      void link.stop();
    }
    for (const [id, ep] of want) {
      if (this.links.has(id)) continue;
      const i = this.init;
      const link = new MeshLink({
        endpoint: ep,
        relay: i.relay,
        privateKey: i.privateKey,
        serverPublicKey: i.serverPublicKey,
        meshKey: i.meshKey,
        secure: i.secure,
        ...(i.tls === undefined ? {} : { tls: i.tls }),
        ...(i.detectSelf === undefined ? {} : { detectSelf: i.detectSelf }),
        ...(i.sibling === undefined ? {} : { sibling: i.sibling }),
        ...(i.onLinkUp === undefined ? {} : { onUp: i.onLinkUp }),
        maxBufferedBytes: i.maxBufferedBytes ?? MESH_MAX_BUFFERED_BYTES,
        reconnect: i.reconnect ?? MESH_RECONNECT,
        ...(i.liveness === undefined ? {} : { liveness: i.liveness }),
        logger: i.logger,
      });
      this.links.set(id, link);
      void link.start();
    }
  }

  /** The link to an endpoint id (for tests). */
  get(id: string): MeshLink | undefined {
    return this.links.get(id);
  }

  /** Whether any link reports `key` connected to its node. */
  knows(key: Buffer): boolean {
    for (const l of this.links.values()) if (l.knows(key)) return true;
    return false;
  }

  status(): MeshLinkStatus[] {
    return [...this.links.values()].map((l) => l.status());
  }

  /** Links that are up right now. */
  get up(): number {
    let n = 0;
    for (const l of this.links.values()) if (l.state === 'up') n++;
    return n;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const all = [...this.links.values()];
    this.links.clear();
    await Promise.all(all.map((l) => l.stop()));
  }
}
