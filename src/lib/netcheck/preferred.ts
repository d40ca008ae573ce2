/**
 * Home ("preferred") DERP selection with hysteresis, as netcheck.go addReportHistoryAndSetPreferredDERP
 * (spec netcheck-and-stun.md §6.8). Pure: callers pass the history and the clock.
 */
import type { DERPMap } from '../derpmap/types.js';
import {
  PREFERRED_DERP_ABSOLUTE_DIFF_MS,
  PREFERRED_DERP_FRAME_TIME_MS,
  PREFERRED_DERP_KEEPALIVE_TIMEOUT_MS,
  REPORT_HISTORY_MAX_AGE_MS,
} from './constants.js';

export interface PreferredInput {
  /** This report's best latency per region (ms). */
  regionLatency: Record<number, number>;
  /** regionLatency of every report in the history window, this one included. */
  history: ReadonlyArray<Record<number, number>>;
  /** The previous report's home, 0 if none. */
  previous: number;
  /** HomeParams.RegionScore: latency multipliers (> 0 applies; < 1 favours a region). */
  regionScore?: Record<number, number>;
  /** Regions that are never chosen (Avoid, NoMeasureNoHome). */
  excluded?: ReadonlySet<number>;
  /** Epoch ms of the last frame received from a region's DERP connection (a client's own home). */
  lastDerpActivity?: (regionId: number) => number | undefined;
  /** When this report started and "now" (epoch ms); only used with lastDerpActivity. */
  reportStart?: number;
  now?: number;
  /** ForcePreferredDERP: used when it has a sample or recent activity. */
  force?: number;
}

/** The region to call home: lowest scored latency over the history, but the old home stays unless clearly beaten. */
export function choosePreferred(input: PreferredInput): number {
  const scores = input.regionScore ?? {};
  const scaled = (id: number, d: number): number => {
    const s = scores[id];
    return s !== undefined && s > 0 ? d * s : d;
  };
  const excluded = input.excluded ?? new Set<number>();
  const bestRecent = new Map<number, number>();
  for (const lat of input.history) {
    for (const [k, d] of Object.entries(lat)) {
      const id = Number(k);
      const v = scaled(id, d);
      const old = bestRecent.get(id);
      if (old === undefined || v < old) bestRecent.set(id, v);
    }
  }
  const prev = input.previous;
  let preferred = 0;
  let bestAny = 0;
  let oldCur = 0;
  // Region-id order so ties are deterministic (Go's map order is random).
  const ids = Object.keys(input.regionLatency).map(Number).sort((a, b) => a - b);
  for (const id of ids) {
    if (excluded.has(id)) continue;
    const cur = scaled(id, input.regionLatency[id]!);
    if (id === prev) oldCur = cur;
    const best = bestRecent.get(id) ?? cur;
    if (preferred === 0 || best < bestAny) {
      bestAny = best;
      preferred = id;
    }
  }
  const now = input.now ?? Date.now();
  const activity = prev !== 0 ? input.lastDerpActivity?.(prev) : undefined;
  const changing = prev !== 0 && preferred !== prev;
  const heardOld =
    changing && activity !== undefined && ((input.reportStart !== undefined && activity > input.reportStart) || now - activity < PREFERRED_DERP_FRAME_TIME_MS);
  if (changing && (oldCur !== 0 || heardOld)) {
    // Keep the old home unless the new one is ≥ 10 ms and ≥ 1/3 faster (avoids flapping).
    if (oldCur - bestAny < PREFERRED_DERP_ABSOLUTE_DIFF_MS) preferred = prev;
    else if (bestAny > (oldCur / 3) * 2) preferred = prev;
  }
  if (input.force) {
    const forceActivity = input.lastDerpActivity?.(input.force);
    if (input.regionLatency[input.force] !== undefined || (forceActivity !== undefined && now - forceActivity < PREFERRED_DERP_KEEPALIVE_TIMEOUT_MS)) {
      preferred = input.force;
    }
  }
  if (preferred === 0 && activity !== undefined && now - activity < PREFERRED_DERP_KEEPALIVE_TIMEOUT_MS) preferred = prev;
  return preferred;
}

/** Regions a map never allows as home. */
export function excludedHomeRegions(map: DERPMap): Set<number> {
  const out = new Set<number>();
  for (const r of Object.values(map.regions)) if (r.avoid || r.noMeasureNoHome) out.add(r.regionId);
  return out;
}

export interface HistoryEntry {
  at: number;
  regionLatency: Record<number, number>;
  preferredDERP: number;
}

/** Recent reports (5 min 5 s) and the current home, for repeated netchecks (`--every`, the selector). */
export class NetcheckHistory {
  private entries: HistoryEntry[] = [];

  constructor(private readonly maxAgeMs: number = REPORT_HISTORY_MAX_AGE_MS) {}

  /** The home chosen by the latest add(), 0 if none yet. */
  get preferred(): number {
    return this.entries.at(-1)?.preferredDERP ?? 0;
  }

  get size(): number {
    return this.entries.length;
  }

  /** Records a report's latencies and returns the home it gets, given the history before it. */
  add(
    regionLatency: Record<number, number>,
    opts: { map?: DERPMap; now?: number } & Pick<PreferredInput, 'lastDerpActivity' | 'reportStart' | 'force'> = {},
  ): number {
    const now = opts.now ?? Date.now();
    const previous = this.preferred;
    this.entries = this.entries.filter((e) => now - e.at <= this.maxAgeMs);
    const history = [...this.entries.map((e) => e.regionLatency), regionLatency];
    const preferredDERP = choosePreferred({
      regionLatency,
      history,
      previous,
      regionScore: opts.map?.homeParams?.regionScore,
      excluded: opts.map ? excludedHomeRegions(opts.map) : undefined,
      lastDerpActivity: opts.lastDerpActivity,
      reportStart: opts.reportStart,
      force: opts.force,
      now,
    });
    this.entries.push({ at: now, regionLatency, preferredDERP });
    return preferredDERP;
  }
}
