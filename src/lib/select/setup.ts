/** What `derp select` and `derp connect --map` share: load the map, build the selector, measure. */
import type { DERPClientOptions } from '../client/client.js';
import { loadDerpMap, type LoadedDerpMap } from '../derpmap/load.js';
import { mapExitCode } from '../derpmap/exit.js';
import { ConfigError, DerpError, NoHealthyServerError } from '../errors.js';
import { measure, type MeasureResult } from './measure.js';
import { netcheckSource } from './netcheck.js';
import { ServerSelector } from './selector.js';

/** Exit code when no region/node qualifies. */
export const EXIT_NO_HEALTHY_SERVER = 8;

export const SELECT_EXIT_CODES_HELP = `  5  bad map (syntax or validation)
  6  cannot fetch or read the map
  8  no healthy server: nothing passed the filters, answered a probe and accepted a DERP connection`;

/** Exit code for a failure while loading / selecting (usage 2, map 5/6, none healthy 8). */
export function selectExitCode(err: unknown): number | undefined {
  if (err instanceof NoHealthyServerError) return EXIT_NO_HEALTHY_SERVER;
  if (err instanceof ConfigError) return 2;
  if (err instanceof DerpError && (err.code === 'DERP_ERR_MAP_INVALID' || err.code === 'DERP_ERR_MAP_FETCH')) return mapExitCode(err);
  return undefined;
}

export interface SelectSetupOptions {
  map: string;
  regions?: string[];
  exclude?: string[];
  fetchTimeoutMs?: number;
  probeTimeoutMs?: number;
  clientOptions?: Omit<DERPClientOptions, 'reconnect'>;
  /** Use the netcheck module for latencies (default true); false = DERP connect time only. */
  netcheck?: boolean;
}

export interface SelectSetup {
  loaded: LoadedDerpMap;
  selector: ServerSelector;
  result: MeasureResult;
  /** Runs the measurement again (for periodic re-measurement). */
  remeasure: (signal?: AbortSignal) => Promise<MeasureResult>;
}

export async function setupSelection(o: SelectSetupOptions, signal?: AbortSignal): Promise<SelectSetup> {
  const loaded = await loadDerpMap(o.map, { ...(o.fetchTimeoutMs ? { timeoutMs: o.fetchTimeoutMs } : {}) });
  const selector = new ServerSelector(loaded.map, { regions: o.regions ?? [], exclude: o.exclude ?? [] });
  const nc = o.netcheck === false ? undefined : netcheckSource(selector);
  const run = (s?: AbortSignal) =>
    measure(selector, {
      ...(o.clientOptions ? { clientOptions: o.clientOptions } : {}),
      ...(o.probeTimeoutMs ? { timeoutMs: o.probeTimeoutMs } : {}),
      ...(nc ? { netcheck: nc } : {}),
      ...(s ? { signal: s } : {}),
    });
  const result = await run(signal);
  return { loaded, selector, result, remeasure: run };
}
