/**
 * What metrics cost the relay: the same throughput scenario against `derp serve --metrics-addr none`
 * and against `derp serve` with /metrics on and scraped every second, alternating off/on rounds so
 * drift on a shared machine hits both sides alike. The best round of each side is compared.
 */
import { runThroughput, type Timing, type Worker } from '../src/lib/loadgen/index.js';
import type { ServerHandle } from './procs.js';

/** Prometheus' usual scrape interval is 15–60 s; once a second is a deliberately harsh load. */
export const SCRAPE_INTERVAL_MS = 1_000;
/** Off/on rounds per scenario. */
export const METRICS_ROUNDS = 3;
/** The scenarios compared (the targets: 8 pairs of 1200 B and of 64 B). */
export const METRICS_PAIRS = 8;
/** The budget: metrics on may cost at most this much throughput. */
export const METRICS_MAX_COST_PCT = 3;

export interface MetricsCostResult {
  pairs: number;
  size: number;
  offPps: number[];
  onPps: number[];
  /** (best off − best on) / best off, in percent; negative = on was faster (noise). */
  costPct: number;
  /** Server CPU per relayed packet (µs) per round; steadier than pkts/s when the machine is shared. */
  offCpuUsPerPkt: (number | null)[];
  onCpuUsPerPkt: (number | null)[];
  /** (lowest on − lowest off) / lowest off, in percent; NaN without CPU figures. */
  cpuCostPct: number;
  scrapes: number;
  scrapeErrors: string[];
  /** Bytes of the last /metrics body. */
  scrapeBytes: number;
}

/** Scrapes `url` every second until stopped; counts answers and keeps distinct errors. */
function scraper(url: string): { stop(): { scrapes: number; errors: string[]; bytes: number } } {
  let scrapes = 0;
  let bytes = 0;
  const errors = new Set<string>();
  const once = async (): Promise<void> => {
    try {
      const res = await fetch(url);
      const body = await res.text();
      if (res.status !== 200) errors.add(`HTTP ${res.status}`);
      else {
        scrapes++;
        bytes = body.length;
      }
    } catch (err) {
      errors.add((err as Error).message);
    }
  };
  const timer = setInterval(() => void once(), SCRAPE_INTERVAL_MS);
  void once();
  return {
    stop() {
      clearInterval(timer);
      return { scrapes, errors: [...errors], bytes };
    },
  };
}

export async function runMetricsCost(
  off: ServerHandle,
  on: ServerHandle,
  workers: Worker[],
  pairs: number,
  size: number,
  timing: Timing,
  progress: (msg: string) => void,
): Promise<MetricsCostResult> {
  if (on.metricsUrl === undefined) throw new Error(`${on.label} reported no metricsUrl`);
  const r: MetricsCostResult = { pairs, size, offPps: [], onPps: [], costPct: NaN, offCpuUsPerPkt: [], onCpuUsPerPkt: [], cpuCostPct: NaN, scrapes: 0, scrapeErrors: [], scrapeBytes: 0 };
  for (let round = 1; round <= METRICS_ROUNDS; round++) {
    progress(`metrics cost ${pairs} × ${size} B, round ${round}/${METRICS_ROUNDS}: metrics off`);
    const o = await runThroughput(off, workers, pairs, size, timing);
    r.offPps.push(o.pps);
    r.offCpuUsPerPkt.push(o.serverCpuUsPerPkt);
    progress(`metrics cost ${pairs} × ${size} B, round ${round}/${METRICS_ROUNDS}: metrics on, scraped every ${SCRAPE_INTERVAL_MS / 1000} s`);
    const s = scraper(on.metricsUrl);
    try {
      const x = await runThroughput(on, workers, pairs, size, timing);
      r.onPps.push(x.pps);
      r.onCpuUsPerPkt.push(x.serverCpuUsPerPkt);
    } finally {
      const got = s.stop();
      r.scrapes += got.scrapes;
      r.scrapeBytes = got.bytes;
      for (const e of got.errors) if (!r.scrapeErrors.includes(e)) r.scrapeErrors.push(e);
    }
  }
  const bestOff = Math.max(...r.offPps);
  const bestOn = Math.max(...r.onPps);
  r.costPct = bestOff > 0 ? ((bestOff - bestOn) / bestOff) * 100 : NaN;
  const lowest = (xs: (number | null)[]): number => Math.min(...xs.map((v) => v ?? NaN));
  const cpuOff = lowest(r.offCpuUsPerPkt);
  const cpuOn = lowest(r.onCpuUsPerPkt);
  r.cpuCostPct = cpuOff > 0 ? ((cpuOn - cpuOff) / cpuOff) * 100 : NaN;
  return r;
}
