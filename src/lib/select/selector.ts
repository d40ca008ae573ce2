/**
 * ServerSelector (the seed's interface): ranks the nodes of a DERP map from pure inputs — the map, the
 * latest latency reports, DERP connect outcomes and the clock — so it can be tested without sockets.
 *
 * Healthy node = its region has a fresh successful STUN/HTTPS probe (netcheck report) AND its own latest
 * DERP connect within the freshness window succeeded (after derpprobe, spec netcheck-and-stun.md §8).
 * Home region = netcheck's choosePreferred with hysteresis (§6.8) over healthy, home-eligible regions.
 */
import type { DERPMap, DERPRegion, DERPServer } from '../derpmap/types.js';
import { regionsOf } from '../derpmap/addr.js';
import { ConfigError, NoHealthyServerError } from '../errors.js';
import { choosePreferred } from '../netcheck/preferred.js';
import { PREFERRED_DERP_ABSOLUTE_DIFF_MS } from '../netcheck/constants.js';
import { HEALTH_FRESHNESS_MS } from './constants.js';

/** How a region's latency was measured; 'derp' = our own DERP connect-time probe (HTTPS-equivalent). */
export type LatencyMethod = 'stun' | 'https' | 'derp';

export interface RegionSample {
  regionId: number;
  latencyMs: number | null;
  method: LatencyMethod | null;
  /** Node that answered, if known. */
  node: string | null;
}

/** One measurement round (a netcheck report, or our own probe); `at` = epoch ms it finished. */
export interface LatencyReport {
  at: number;
  regions: RegionSample[];
}

export interface ConnectOutcome {
  ok: boolean;
  at: number;
  error?: string;
}

export interface SelectorFilter {
  /** Only these regions (ID or code); empty/absent = all. */
  regions?: ReadonlyArray<string | number>;
  /** Drop these (region ID, region code or node name). */
  exclude?: ReadonlyArray<string | number>;
}

export interface ServerSelectorOptions extends SelectorFilter {
  /** Clock (epoch ms). Default Date.now. */
  now?: () => number;
  /** Probe / connect evidence older than this does not count. Default HEALTH_FRESHNESS_MS. */
  freshnessMs?: number;
  /** Require a successful DERP connect for health (default true). */
  requireConnect?: boolean;
}

export interface Candidate {
  regionId: number;
  regionCode: string;
  regionName: string;
  node: string;
  server: DERPServer;
  /** Fresh region latency (ms), null when unmeasured or stale. */
  latencyMs: number | null;
  method: LatencyMethod | null;
  /** latency × HomeParams.RegionScore (when > 0); null without latency. */
  score: number | null;
  /** Region multiplier applied, when any. */
  regionScore?: number;
  /** Latest connect outcome (fresh or not). */
  connect: ConnectOutcome | null;
  healthy: boolean;
  /** Can be chosen at all (filters passed and healthy). */
  eligible: boolean;
  /** Can be the home region (eligible and not Avoid / NoMeasureNoHome). */
  homeEligible: boolean;
  /** The current home region's chosen node. */
  chosen: boolean;
  /** 1-based position among eligible candidates; null when not eligible. */
  rank: number | null;
  /** Why it sits where it does (or why it was excluded). */
  reason: string;
}

export interface HomeDecision {
  /** 0 = none. */
  regionId: number;
  /** What the plain lowest-latency rule would have picked (differs when hysteresis kept the old home). */
  bestRegionId: number;
  reason: string;
}

interface StoredReport {
  at: number;
  latency: Map<number, RegionSample>;
}

function regionIdsOf(map: DERPMap, spec: string | number, what: string): number[] {
  const text = String(spec).trim();
  if (/^\d+$/.test(text)) {
    const id = Number(text);
    if (!map.regions[id]) throw new ConfigError(`${what} ${text}: no region with that ID in the map`, { context: { region: text } });
    return [id];
  }
  const hits = regionsOf(map).filter((r) => r.regionCode.toLowerCase() === text.toLowerCase());
  if (hits.length === 0) throw new ConfigError(`${what} ${JSON.stringify(text)}: no region with that ID or code in the map`, { context: { region: text } });
  return hits.map((r) => r.regionId);
}

/** Resolves a region given by ID or code. */
export function resolveRegion(map: DERPMap, spec: string | number): DERPRegion {
  const [id] = regionIdsOf(map, spec, 'region');
  return map.regions[id!]!;
}

/** Converts a netcheck report (src/lib/netcheck/types.ts shape) to the selector's input. */
export function latencyReportFrom(report: { now: string; regions: ReadonlyArray<{ regionId: number; latencyMs: number | null; method: 'stun' | 'https' | null; node: string | null }> }): LatencyReport {
  return { at: Date.parse(report.now), regions: report.regions.map((r) => ({ regionId: r.regionId, latencyMs: r.latencyMs, method: r.method, node: r.node })) };
}

export class ServerSelector {
  readonly map: DERPMap;
  private readonly now: () => number;
  private readonly freshnessMs: number;
  private readonly requireConnect: boolean;
  private readonly allowedRegions: Set<number> | undefined;
  private readonly excludedRegions = new Set<number>();
  private readonly excludedNodes = new Set<string>();
  private reports: StoredReport[] = [];
  private readonly connects = new Map<string, ConnectOutcome>();
  private readonly activity = new Map<number, number>();
  private home = 0;
  private lastHome: HomeDecision = { regionId: 0, bestRegionId: 0, reason: 'not decided yet' };
  private lastReportStart: number | undefined;

  constructor(map: DERPMap, opts: ServerSelectorOptions = {}) {
    this.map = map;
    this.now = opts.now ?? Date.now;
    this.freshnessMs = opts.freshnessMs ?? HEALTH_FRESHNESS_MS;
    this.requireConnect = opts.requireConnect ?? true;
    if (opts.regions && opts.regions.length > 0) {
      this.allowedRegions = new Set(opts.regions.flatMap((r) => regionIdsOf(map, r, '--region')));
    }
    const nodeNames = new Set(regionsOf(map).flatMap((r) => r.nodes.map((n) => n.id)));
    for (const e of opts.exclude ?? []) {
      const text = String(e).trim();
      if (nodeNames.has(text)) this.excludedNodes.add(text);
      else for (const id of regionIdsOf(map, text, '--exclude')) this.excludedRegions.add(id);
    }
  }

  /** Records a measurement round; the home is re-decided with hysteresis against the previous one. */
  noteReport(report: LatencyReport, reportStart?: number): void {
    const latency = new Map<number, RegionSample>();
    for (const s of report.regions) if (s.latencyMs !== null && Number.isFinite(s.latencyMs) && s.latencyMs >= 0) latency.set(s.regionId, s);
    this.reports.push({ at: report.at, latency });
    this.lastReportStart = reportStart;
    this.rank();
  }

  /** Records a DERP connect result for a node (by DERPNode.Name). */
  noteConnectResult(node: string, ok: boolean, at: number = this.now(), error?: string): void {
    this.connects.set(node, { ok, at, ...(error !== undefined ? { error } : {}) });
  }

  /** A frame arrived from this region's DERP connection (keeps a delivering home, §6.8 "heardOld"). */
  noteActivity(regionId: number, at: number = this.now()): void {
    this.activity.set(regionId, at);
  }

  connectOutcome(node: string): ConnectOutcome | undefined {
    return this.connects.get(node);
  }

  private prune(): void {
    const now = this.now();
    this.reports = this.reports.filter((r) => now - r.at <= this.freshnessMs);
  }

  /** Latest fresh sample for a region. */
  private latest(regionId: number): RegionSample | undefined {
    const now = this.now();
    for (let i = this.reports.length - 1; i >= 0; i--) {
      const r = this.reports[i]!;
      if (now - r.at > this.freshnessMs) break;
      const s = r.latency.get(regionId);
      if (s) return s;
    }
    return undefined;
  }

  private scoreMultiplier(regionId: number): number | undefined {
    const s = this.map.homeParams?.regionScore?.[regionId];
    return s !== undefined && s > 0 ? s : undefined;
  }

  private filterReason(region: DERPRegion, node: DERPServer): string | undefined {
    if (this.allowedRegions && !this.allowedRegions.has(region.regionId)) return 'not in --region';
    if (this.excludedRegions.has(region.regionId)) return 'region excluded';
    if (this.excludedNodes.has(node.id)) return 'node excluded';
    if (!node.canRelay) return 'STUN-only node';
    return undefined;
  }

  /** Every node of the map with its score, health and the reason for its place; eligible first, best first. */
  rank(extraExclude: ReadonlyArray<string> = []): Candidate[] {
    this.prune();
    const now = this.now();
    const extra = new Set(extraExclude);
    const all: Candidate[] = [];
    for (const region of regionsOf(this.map)) {
      const sample = region.noMeasureNoHome ? undefined : this.latest(region.regionId);
      const mult = this.scoreMultiplier(region.regionId);
      region.nodes.forEach((node) => {
        const connect = this.connects.get(node.id) ?? null;
        const latencyMs = sample?.latencyMs ?? null;
        const score = latencyMs === null ? null : latencyMs * (mult ?? 1);
        const connectFresh = connect !== null && now - connect.at <= this.freshnessMs;
        const connectOk = connectFresh && connect.ok;
        const healthy = latencyMs !== null && (connectOk || !this.requireConnect) && !(connectFresh && !connect.ok);
        let reason = this.filterReason(region, node) ?? (extra.has(node.id) ? 'excluded by caller' : undefined);
        if (reason === undefined) {
          if (region.noMeasureNoHome) reason = 'region is NoMeasureNoHome (never measured, never home)';
          else if (latencyMs === null) reason = 'no fresh STUN/HTTPS probe answer';
          else if (connectFresh && !connect.ok) reason = `last DERP connect failed${connect.error ? `: ${connect.error}` : ''}`;
          else if (!connectOk && this.requireConnect) reason = connect ? 'DERP connect outcome is stale' : 'no DERP connect yet';
        }
        const eligible = reason === undefined && healthy;
        all.push({
          regionId: region.regionId,
          regionCode: region.regionCode,
          regionName: region.regionName,
          node: node.id,
          server: node,
          latencyMs,
          method: sample?.method ?? null,
          score,
          ...(mult !== undefined ? { regionScore: mult } : {}),
          connect,
          healthy,
          eligible,
          homeEligible: eligible && !region.avoid && !region.noMeasureNoHome,
          chosen: false,
          rank: null,
          reason: reason ?? '',
        });
      });
    }
    const nodeIndex = (c: Candidate) => this.map.regions[c.regionId]!.nodes.findIndex((n) => n.id === c.node);
    const answered = (c: Candidate) => (this.latest(c.regionId)?.node === c.node ? 0 : 1);
    const eligible = all
      .filter((c) => c.eligible)
      .sort((a, b) => a.score! - b.score! || a.regionId - b.regionId || answered(a) - answered(b) || nodeIndex(a) - nodeIndex(b));
    const rest = all.filter((c) => !c.eligible);
    const home = this.decideHome(eligible);
    const homeNode = eligible.find((c) => c.regionId === home.regionId);
    eligible.forEach((c, i) => {
      c.rank = i + 1;
      if (c === homeNode) {
        c.chosen = true;
        c.reason = home.reason;
      } else if (c.regionId === home.regionId) c.reason = 'home region, later node';
      else if (!c.homeEligible) c.reason = `usable, never home (${this.map.regions[c.regionId]!.avoid ? 'Avoid' : 'NoMeasureNoHome'})`;
      else c.reason = `rank ${i + 1} by score`;
    });
    // The home first, then the rest by score.
    if (homeNode) {
      eligible.splice(eligible.indexOf(homeNode), 1);
      eligible.unshift(homeNode);
    }
    return [...eligible, ...rest];
  }

  /** The home region (0 if none), re-decided now with hysteresis. */
  homeRegion(): HomeDecision {
    this.rank();
    return this.lastHome;
  }

  private decideHome(cands: Candidate[]): HomeDecision {
    const homeOk = new Set(cands.filter((c) => c.homeEligible).map((c) => c.regionId));
    const regionLatency: Record<number, number> = {};
    for (const id of homeOk) regionLatency[id] = this.latest(id)!.latencyMs!;
    const history = this.reports.map((r) => {
      const o: Record<number, number> = {};
      for (const [id, s] of r.latency) if (homeOk.has(id)) o[id] = s.latencyMs!;
      return o;
    });
    const excluded = new Set(regionsOf(this.map).map((r) => r.regionId).filter((id) => !homeOk.has(id)));
    const regionScore = this.map.homeParams?.regionScore;
    const prevRaw = this.home;
    const prev = homeOk.has(prevRaw) ? prevRaw : 0;
    const now = this.now();
    const base = { regionLatency, history, regionScore, excluded, now };
    const best = choosePreferred({ ...base, previous: 0 });
    const chosen = choosePreferred({
      ...base,
      previous: prev,
      lastDerpActivity: (id) => (id === prev ? this.activity.get(id) : undefined),
      ...(this.lastReportStart !== undefined ? { reportStart: this.lastReportStart } : {}),
    });
    this.home = chosen;
    let reason: string;
    if (chosen === 0) reason = 'no healthy home candidate';
    else if (chosen === prev && best !== prev)
      reason = `home kept: region ${best} is not ≥ ${PREFERRED_DERP_ABSOLUTE_DIFF_MS} ms and ≥ 1/3 faster (hysteresis)`;
    else if (prevRaw !== 0 && prevRaw !== chosen && prev === 0) reason = `lowest latency; previous home ${prevRaw} is unhealthy`;
    else if (prev !== 0 && prev !== chosen) reason = `lowest latency; clearly better than previous home ${prev}`;
    else if (chosen === prev && this.lastHome.regionId === chosen && !this.lastHome.reason.startsWith('home kept')) reason = this.lastHome.reason;
    else reason = 'lowest latency';
    this.lastHome = { regionId: chosen, bestRegionId: best, reason };
    return this.lastHome;
  }

  /** Best healthy node of a region (ID or code), skipping `exclude` node names. */
  selectServer(region: string | number, exclude: ReadonlyArray<string> = [], signal?: AbortSignal): DERPServer {
    signal?.throwIfAborted();
    const r = resolveRegion(this.map, region);
    const all = this.rank(exclude).filter((c) => c.regionId === r.regionId);
    const pick = all.find((c) => c.eligible);
    if (!pick) throw this.noneError(`no healthy server in region ${r.regionId} (${r.regionCode})`, all, { region: r.regionId });
    return pick.server;
  }

  /** Lowest-score server among these that has a fresh latency (health not required). */
  selectByLatency(servers: ReadonlyArray<DERPServer>, signal?: AbortSignal): DERPServer {
    signal?.throwIfAborted();
    let best: { s: DERPServer; score: number } | undefined;
    for (const s of servers) {
      const lat = this.latest(s.regionCode)?.latencyMs;
      if (lat === undefined || lat === null || !s.canRelay) continue;
      const score = lat * (this.scoreMultiplier(s.regionCode) ?? 1);
      if (!best || score < best.score) best = { s, score };
    }
    if (!best) throw new NoHealthyServerError(`none of ${servers.length} servers has a fresh latency measurement`, { context: { candidates: servers.length } });
    return best.s;
  }

  /** Best healthy server among these (by score). */
  selectHealthy(servers: ReadonlyArray<DERPServer>, signal?: AbortSignal): DERPServer {
    signal?.throwIfAborted();
    const names = new Set(servers.map((s) => s.id));
    const all = this.rank().filter((c) => names.has(c.node));
    const pick = all.find((c) => c.eligible);
    if (!pick) throw this.noneError(`none of ${servers.length} servers is healthy`, all, {});
    return pick.server;
  }

  /** The home's best node, or NoHealthyServerError. */
  selectHome(signal?: AbortSignal): Candidate {
    signal?.throwIfAborted();
    const all = this.rank();
    const pick = all.find((c) => c.chosen);
    if (!pick) throw this.noneError('no healthy home region', all, {});
    return pick;
  }

  /**
   * Regions to stay connected to: the home first, then the best other healthy regions (one node each,
   * the region's best), at most k; `skip` region IDs are left out (the home too, if skipped).
   */
  pickRegions(k: number, skip: ReadonlySet<number> = new Set()): Candidate[] {
    const out: Candidate[] = [];
    const seen = new Set<number>();
    for (const c of this.rank()) {
      if (!c.eligible || seen.has(c.regionId) || skip.has(c.regionId)) continue;
      seen.add(c.regionId);
      out.push(c);
      if (out.length >= k) break;
    }
    return out;
  }

  /** Region IDs that pass the --region / --exclude filters (excluded nodes' regions stay). */
  consideredRegions(): number[] {
    return regionsOf(this.map)
      .map((r) => r.regionId)
      .filter((id) => (!this.allowedRegions || this.allowedRegions.has(id)) && !this.excludedRegions.has(id));
  }

  /** The node passes --exclude (by name). */
  nodeAllowed(node: string): boolean {
    return !this.excludedNodes.has(node);
  }

  private noneError(msg: string, cands: Candidate[], ctx: Record<string, string | number>): NoHealthyServerError {
    const why = cands.slice(0, 8).map((c) => `${c.node}: ${c.reason}`);
    return new NoHealthyServerError(`${msg}${why.length ? ` (${why.join('; ')})` : ''}`, { context: { ...ctx, candidates: cands.length } });
  }
}
