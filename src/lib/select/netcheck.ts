/** Adapter: the netcheck module's runNetcheck as the selector's latency source (STUN, HTTPS fallback). */
import type { DERPMap } from '../derpmap/types.js';
import { runNetcheck, type NetcheckOptions } from '../netcheck/index.js';
import type { NetcheckFn } from './measure.js';
import { latencyReportFrom, type ServerSelector } from './selector.js';

/** A NetcheckFn over the selector's considered regions only (no captive-portal check: not needed to rank). */
export function netcheckSource(selector: ServerSelector, opts: Omit<NetcheckOptions, 'signal'> = {}): NetcheckFn {
  const ids = new Set(selector.consideredRegions());
  const map: DERPMap = { ...selector.map, regions: Object.fromEntries(Object.entries(selector.map.regions).filter(([id]) => ids.has(Number(id)))) };
  return async (signal) => latencyReportFrom(await runNetcheck(map, { captivePortal: 'off', ...opts, ...(signal ? { signal } : {}) }));
}
