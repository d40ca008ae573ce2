/**
 * One netcheck report (net/netcheck/netcheck.go GetReport, spec netcheck-and-stun.md §6): STUN to every
 * region concurrently over one UDP4 and one UDP6 socket with the full plan's staggered tries, HTTPS
 * latency for regions STUN could not reach, captive-portal detection, and the home region.
 */
import { networkInterfaces } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { regionsOf, stunTargets } from '../derpmap/addr.js';
import type { DERPMap, DERPRegion } from '../derpmap/types.js';
import { describeError, TimeoutError } from '../errors.js';
import { StunSocket, type StunProbeResult } from '../stun/client.js';
import { silentLogger, type Logger } from '../util/logger.js';
import {
  CAPTIVE_PORTAL_DELAY_MS,
  CAPTIVE_PORTAL_TIMEOUT_MS,
  HTTPS_DIAL_TIMEOUT_MS,
  HTTPS_PROBE_TIMEOUT_MS,
  INITIAL_RETRANSMIT_MS,
  INITIAL_TRIES,
  MAX_CONCURRENT_REGIONS,
  REPORT_TIMEOUT_MS,
  STUN_PROBE_TIMEOUT_MS,
} from './constants.js';
import { captivePortalEndpoints, detectCaptivePortal, measureHttpsLatency } from './https.js';
import { choosePreferred, excludedHomeRegions, type NetcheckHistory } from './preferred.js';
import type { NetcheckReport, RegionReport } from './types.js';

export interface NetcheckOptions {
  signal?: AbortSignal;
  /** Called when a region gets its first answer, and for the rest when the report ends. */
  onProgress?: (done: number, total: number, region: RegionReport) => void;
  /** Hard cap for the whole report (default 5 s, ReportTimeout). */
  reportTimeoutMs?: number;
  /** Stop waiting for STUN (default 3 s, stunProbeTimeout). */
  stunTimeoutMs?: number;
  /** Spacing of a region's tries (default 100 ms). */
  retransmitMs?: number;
  /** Budget of the HTTPS fallback (default 5 s, still bounded by the report deadline) and per node dial (1.5 s). */
  httpsTimeoutMs?: number;
  httpsDialTimeoutMs?: number;
  /** Captive-portal check start delay (200 ms) and timeout (3 s). */
  captivePortalDelayMs?: number;
  captivePortalTimeoutMs?: number;
  /** Probe IPv4 (default true) / IPv6 (default: when the host has a global IPv6 address). */
  ipv4?: boolean;
  ipv6?: boolean | 'auto';
  /**
   * HTTPS latency for regions without a STUN answer: 'unanswered' (default: every such region),
   * 'udp-blocked' (Tailscale: only when no STUN reply came at all), 'off'.
   */
  httpsFallback?: 'unanswered' | 'udp-blocked' | 'off';
  /** 'auto' (Tailscale: skipped or cancelled once STUN works), 'always', 'off'. */
  captivePortal?: 'auto' | 'always' | 'off';
  /**
   * Tailscale's enoughRegions: once this many regions answered, wait 2 × the slowest latency seen and
   * stop. Default Infinity: wait for every region (like `tailscale netcheck --verbose`).
   */
  enoughRegions?: number;
  /** Repeated reports: home selection with hysteresis over this history (the report is added to it). */
  history?: NetcheckHistory;
  /** Reuse these STUN sockets (not closed); default: bind fresh ones for this report. */
  sockets?: { v4?: StunSocket; v6?: StunSocket };
  maxConcurrentRegions?: number;
  logger?: Logger;
}

interface RegionState {
  region: DERPRegion;
  report: RegionReport;
  errors: Set<string>;
  done: boolean;
}

interface Probe {
  delayMs: number;
  node: string;
  host: string;
  port: number;
}

/** Rounds to µs so JSON stays readable. */
const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/** Whether the host has an IPv6 address other than loopback / link-local (ifState.HaveV6). */
export function hostHasGlobalIPv6(): boolean {
  return Object.values(networkInterfaces()).some((addrs) =>
    (addrs ?? []).some((a) => a.family === 'IPv6' && !a.internal && !a.address.toLowerCase().startsWith('fe80')),
  );
}

async function bindOrNull(type: 'udp4' | 'udp6', log: Logger): Promise<StunSocket | null> {
  try {
    return await StunSocket.create(type, { address: type === 'udp6' ? '::' : '0.0.0.0' }, log);
  } catch (err) {
    log.log('info', `netcheck: no ${type} socket`, { error: describeError(err) });
    return null;
  }
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** The initial/full plan (makeProbePlanInitial): tries 0..2 at 0, 100, 200 ms, node = Nodes[try % len]. */
export function probePlan(region: DERPRegion, family: 4 | 6, retransmitMs: number = INITIAL_RETRANSMIT_MS): Probe[] {
  const out: Probe[] = [];
  if (region.noMeasureNoHome || region.nodes.length === 0) return out;
  for (let t = 0; t < INITIAL_TRIES; t++) {
    const node = region.nodes[t % region.nodes.length]!;
    const target = stunTargets(node).find((x) => x.family === family);
    if (target) out.push({ delayMs: t * retransmitMs, node: node.id, host: target.host, port: target.port });
  }
  return out;
}

export async function runNetcheck(map: DERPMap, opts: NetcheckOptions = {}): Promise<NetcheckReport> {
  const log = opts.logger ?? silentLogger;
  const startedWall = Date.now();
  const t0 = performance.now();
  const reportTimeout = opts.reportTimeoutMs ?? REPORT_TIMEOUT_MS;
  const deadline = AbortSignal.any([...(opts.signal ? [opts.signal] : []), AbortSignal.timeout(reportTimeout)]);
  opts.signal?.throwIfAborted();

  const all = regionsOf(map);
  const states = new Map<number, RegionState>();
  for (const r of all) {
    states.set(r.regionId, {
      region: r,
      errors: new Set(),
      done: false,
      report: { regionId: r.regionId, regionCode: r.regionCode, regionName: r.regionName, latencyMs: null, v4LatencyMs: null, v6LatencyMs: null, method: null, node: null, probes: 0, errors: [] },
    });
  }
  const measured = all.filter((r) => !r.noMeasureNoHome && r.nodes.length > 0);
  const total = measured.length;
  let doneCount = 0;
  const markDone = (st: RegionState): void => {
    if (st.done) return;
    st.done = true;
    doneCount++;
    opts.onProgress?.(doneCount, total, st.report);
  };

  const rep: Omit<NetcheckReport, 'now' | 'durationMs' | 'regions' | 'preferredDERP'> = {
    udp: false,
    ipv4: false,
    ipv6: false,
    ipv4CanSend: false,
    ipv6CanSend: false,
    osHasIPv6: false,
    mappingVariesByDestIP: null,
    regionLatency: {},
    regionV4Latency: {},
    regionV6Latency: {},
    globalV4Counters: {},
    globalV6Counters: {},
    globalV4: '',
    globalV6: '',
    captivePortal: null,
  };

  // Sockets: one per family for every probe, so the mapping seen by different servers can be compared.
  const own: StunSocket[] = [];
  const wantV4 = opts.ipv4 ?? true;
  let v4 = opts.sockets?.v4 ?? null;
  let v6 = opts.sockets?.v6 ?? null;
  if (wantV4 && !v4 && (v4 = await bindOrNull('udp4', log))) own.push(v4);
  if (!v6 && (v6 = await bindOrNull('udp6', log))) own.push(v6);
  rep.osHasIPv6 = v6 !== null;
  const ipv6Opt = opts.ipv6 ?? 'auto';
  const wantV6 = ipv6Opt === 'auto' ? hostHasGlobalIPv6() : ipv6Opt;
  const sock = (f: 4 | 6): StunSocket | null => (f === 4 ? (wantV4 ? v4 : null) : wantV6 ? v6 : null);

  // Captive portal: 200 ms in; in 'auto' mode skipped/cancelled once STUN works (netcheckhook).
  const captiveMode = opts.captivePortal ?? 'auto';
  const captiveCtl = new AbortController();
  const captive: Promise<boolean | null> =
    captiveMode === 'off'
      ? Promise.resolve(null)
      : (async () => {
          const signal = AbortSignal.any([captiveCtl.signal, deadline, AbortSignal.timeout(opts.captivePortalTimeoutMs ?? CAPTIVE_PORTAL_TIMEOUT_MS)]);
          try {
            await sleep(opts.captivePortalDelayMs ?? CAPTIVE_PORTAL_DELAY_MS, undefined, { signal: AbortSignal.any([captiveCtl.signal, deadline]) });
          } catch {
            return null; // cancelled before it started: STUN already answered, or the report ended
          }
          if (captiveMode === 'auto' && rep.udp) return null;
          const result = await detectCaptivePortal(captivePortalEndpoints(measured), {
            signal,
            onError: (e, err) => log.log('debug', 'netcheck: captive-portal endpoint failed', { endpoint: e, error: describeError(err) }),
          });
          return signal.aborted ? null : result;
        })();

  const stunStart = performance.now();
  const stunCtl = new AbortController();
  const stunSignal = AbortSignal.any([stunCtl.signal, deadline]);
  const stunTimer = setTimeout(() => stunCtl.abort(new TimeoutError('STUN phase over')), opts.stunTimeoutMs ?? STUN_PROBE_TIMEOUT_MS);
  let enoughTimer: NodeJS.Timeout | undefined;
  const enough = opts.enoughRegions ?? Infinity;
  let answered = 0;
  let maxLatency = 0;

  const record = (st: RegionState, family: 4 | 6, r: StunProbeResult, node: string): void => {
    const d = r.rttMs;
    const id = st.region.regionId;
    const first = rep.regionLatency[id] === undefined;
    rep.udp = true;
    if (captiveMode === 'auto') captiveCtl.abort();
    if (first || d < rep.regionLatency[id]!) {
      rep.regionLatency[id] = d;
      st.report.latencyMs = round(d);
      st.report.method = 'stun';
      st.report.node = node;
    }
    if (family === 6) {
      rep.regionV6Latency[id] = Math.min(rep.regionV6Latency[id] ?? Infinity, d);
      st.report.v6LatencyMs = round(rep.regionV6Latency[id]);
      rep.ipv6 = true;
      rep.ipv6CanSend = true;
      const ipp = `[${r.address}]:${r.port}`;
      rep.globalV6 = ipp;
      rep.globalV6Counters[ipp] = (rep.globalV6Counters[ipp] ?? 0) + 1;
    } else {
      rep.regionV4Latency[id] = Math.min(rep.regionV4Latency[id] ?? Infinity, d);
      st.report.v4LatencyMs = round(rep.regionV4Latency[id]);
      rep.ipv4 = true;
      rep.ipv4CanSend = true;
      const ipp = `${r.address}:${r.port}`;
      rep.globalV4Counters[ipp] = (rep.globalV4Counters[ipp] ?? 0) + 1;
      if (rep.globalV4 === '') rep.globalV4 = ipp;
      else if (rep.globalV4 !== ipp) rep.mappingVariesByDestIP = true;
      else if (rep.mappingVariesByDestIP === null) rep.mappingVariesByDestIP = false;
    }
    if (first) {
      markDone(st);
      answered++;
      maxLatency = Math.max(maxLatency, d);
      if (answered === Math.min(enough, total)) {
        if (answered === total) stunCtl.abort();
        // Full reports wait twice the slowest latency seen for the rest (netcheck.go).
        else if (enoughTimer === undefined) enoughTimer = setTimeout(() => stunCtl.abort(), maxLatency * 2);
      }
    }
  };

  /** probeWouldHelp: nothing to learn once the region answered and the family's open question is settled. */
  const wouldHelp = (id: number, family: 4 | 6): boolean => {
    if (rep.regionLatency[id] === undefined) return true;
    if (family === 6 && Object.keys(rep.regionV6Latency).length === 0) return true;
    if (family === 4 && rep.mappingVariesByDestIP === null) return true;
    return false;
  };

  const inFlight: Promise<unknown>[] = [];
  const runSet = async (st: RegionState, family: 4 | 6, s: StunSocket, probes: Probe[]): Promise<void> => {
    const setCtl = new AbortController();
    const setSignal = AbortSignal.any([setCtl.signal, stunSignal]);
    await Promise.all(
      probes.map(async (p) => {
        const wait = p.delayMs - (performance.now() - stunStart);
        try {
          if (wait > 0) await sleep(wait, undefined, { signal: setSignal });
        } catch {
          return; // the set answered or the STUN phase ended before this try was due
        }
        if (setSignal.aborted) return;
        if (!wouldHelp(st.region.regionId, family)) {
          setCtl.abort();
          return;
        }
        st.report.probes++;
        const remaining = (opts.stunTimeoutMs ?? STUN_PROBE_TIMEOUT_MS) - (performance.now() - stunStart);
        // In-flight requests stay tied to the phase, not the set: a late reply to an earlier try still counts.
        const sent = s.send(p.host, p.port, { retransmit: false, timeoutMs: Math.max(1, remaining), signal: stunSignal });
        inFlight.push(sent.catch(() => undefined)); // outcome handled below; this copy only lets the report wait for it
        try {
          const r = await sent;
          record(st, family, r, p.node);
          setCtl.abort();
        } catch (err) {
          if (stunSignal.aborted && !(err instanceof TimeoutError)) return;
          // Another try of this region answered: a lost or late one is not worth reporting.
          if (rep.regionLatency[st.region.regionId] !== undefined) return;
          if (err instanceof TimeoutError) {
            if (family === 4) rep.ipv4CanSend = true;
            else rep.ipv6CanSend = true;
            st.errors.add(`no STUN reply over IPv${family} from ${p.node}`);
          } else st.errors.add(`STUN IPv${family} ${p.node}: ${describeError(err)}`);
        }
      }),
    );
  };

  const sets: Array<() => Promise<void>> = [];
  for (const r of measured) {
    const st = states.get(r.regionId)!;
    for (const family of [4, 6] as const) {
      const s = sock(family);
      const probes = probePlan(r, family, opts.retransmitMs ?? INITIAL_RETRANSMIT_MS);
      if (s && probes.length > 0) sets.push(() => runSet(st, family, s, probes));
    }
  }
  try {
    await Promise.race([
      forEachLimited(sets, (opts.maxConcurrentRegions ?? MAX_CONCURRENT_REGIONS) * 2, (f) => f()),
      new Promise<void>((resolve) => stunSignal.addEventListener('abort', () => resolve(), { once: true })),
    ]);
  } finally {
    clearTimeout(stunTimer);
    clearTimeout(enoughTimer);
    stunCtl.abort();
    await Promise.all(inFlight);
  }

  opts.signal?.throwIfAborted();
  // HTTPS latency for regions STUN did not reach (measureHTTPSLatency).
  const fallback = opts.httpsFallback ?? 'unanswered';
  if (fallback !== 'off' && !deadline.aborted && (fallback === 'unanswered' || !rep.udp)) {
    const todo = measured.filter((r) => rep.regionLatency[r.regionId] === undefined && !r.avoid && r.nodes.some((n) => n.canRelay));
    const httpsSignal = AbortSignal.any([deadline, AbortSignal.timeout(opts.httpsTimeoutMs ?? HTTPS_PROBE_TIMEOUT_MS)]);
    await forEachLimited(todo, opts.maxConcurrentRegions ?? MAX_CONCURRENT_REGIONS, async (r) => {
      const st = states.get(r.regionId)!;
      try {
        const got = await measureHttpsLatency(r, {
          signal: httpsSignal,
          dialTimeoutMs: opts.httpsDialTimeoutMs ?? HTTPS_DIAL_TIMEOUT_MS,
          onAttempt: () => st.report.probes++,
        });
        const first = rep.regionLatency[r.regionId] === undefined;
        if (first || got.latencyMs < rep.regionLatency[r.regionId]!) {
          rep.regionLatency[r.regionId] = got.latencyMs;
          st.report.latencyMs = round(got.latencyMs);
          st.report.method = 'https';
          st.report.node = got.node;
        }
        if (got.family === 4) rep.ipv4 = true;
        else rep.ipv6 = true;
        markDone(st);
      } catch (err) {
        st.errors.add(`HTTPS: ${describeError(err)}`);
      }
    });
  }

  rep.captivePortal = await captive;
  await Promise.all(own.map((s) => s.close()));
  opts.signal?.throwIfAborted();

  const latencies: Record<number, number> = {};
  for (const [k, v] of Object.entries(rep.regionLatency)) latencies[Number(k)] = v;
  const preferredDERP = opts.history
    ? opts.history.add(latencies, { map, reportStart: startedWall })
    : choosePreferred({ regionLatency: latencies, history: [latencies], previous: 0, regionScore: map.homeParams?.regionScore, excluded: excludedHomeRegions(map) });

  for (const st of states.values()) {
    st.report.errors = [...st.errors];
    if (measured.includes(st.region)) markDone(st);
  }
  const roundAll = (o: Record<number, number>): Record<number, number> => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, round(v)]));
  return {
    now: new Date().toISOString(),
    durationMs: round(performance.now() - t0),
    ...rep,
    regionLatency: roundAll(rep.regionLatency),
    regionV4Latency: roundAll(rep.regionV4Latency),
    regionV6Latency: roundAll(rep.regionV6Latency),
    preferredDERP,
    regions: [...states.values()].map((s) => s.report),
  };
}
