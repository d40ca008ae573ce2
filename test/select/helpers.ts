/** Loopback "regions" (one RelayServer each, plain HTTP) and event-driven waits for the select tests. */
import type { EventEmitter } from 'node:events';
import type { DERPMap, DERPServer } from '../../src/lib/derpmap/types.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/relay.js';
import type { LatencyReport } from '../../src/lib/select/index.js';

export interface Regions {
  servers: RelayServer[];
  map: DERPMap;
  stop(): Promise<void>;
}

export function loopbackNode(regionId: number, port: number): DERPServer {
  return {
    id: `${regionId}a`,
    hostname: '127.0.0.1',
    ipv4: '127.0.0.1',
    stunPort: -1,
    derpPort: port,
    region: `r${regionId}`,
    regionCode: regionId,
    canStun: false,
    canRelay: true,
    plainHttp: true,
  };
}

/** n relays on ephemeral ports as regions 1..n (codes r1..rn). */
export async function startRegions(n: number): Promise<Regions> {
  const servers: RelayServer[] = [];
  for (let i = 0; i < n; i++) {
    const s = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0' });
    await s.start();
    servers.push(s);
  }
  const map: DERPMap = { regions: {} };
  servers.forEach((s, i) => {
    const id = i + 1;
    map.regions[id] = { regionId: id, regionCode: `r${id}`, regionName: `Region ${id}`, nodes: [loopbackNode(id, s.port)] };
  });
  return { servers, map, stop: async () => void (await Promise.all(servers.map((s) => s.stop({ restarting: false })))) };
}

export function fixedReport(lat: Record<number, number>, at = Date.now()): LatencyReport {
  return { at, regions: Object.entries(lat).map(([id, ms]) => ({ regionId: Number(id), latencyMs: ms, method: 'stun' as const, node: null })) };
}

/** Resolves when `cond()` holds, re-checking after every listed event of `em`. */
export function until(em: EventEmitter, events: string[], cond: () => boolean): Promise<void> {
  if (cond()) return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (!cond()) return;
      for (const e of events) em.off(e, check);
      resolve();
    };
    for (const e of events) em.on(e, check);
  });
}

/** Collects an async iterator's items; wait() resolves once one matches. */
export class Collector<T> {
  readonly items: T[] = [];
  private waiters: { pred: (t: T) => boolean; resolve: (t: T) => void }[] = [];

  constructor(it: AsyncIterable<T>) {
    void (async () => {
      for await (const t of it) {
        this.items.push(t);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(t)) return true;
          w.resolve(t);
          return false;
        });
      }
    })();
  }

  wait(pred: (t: T) => boolean): Promise<T> {
    const found = this.items.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve) => this.waiters.push({ pred, resolve }));
  }
}
