/**
 * Per-second readings of the server: RSS and descriptors from /proc, heap, external memory, event-loop
 * delay and open connections from its /metrics (prom-client's default Node.js metrics).
 */
import { readdirSync } from 'node:fs';
import { procRssKiB } from '../src/lib/loadgen/index.js';

/** prom-client samples event-loop delay every 10 ms (its default); each reading includes one interval. */
export const PROM_LOOP_RESOLUTION_S = 0.01;
/** A scrape slower than this counts as missing (the sample's cells stay empty). */
const SCRAPE_TIMEOUT_MS = 900;

export interface ServerReading {
  rssMiB: number;
  fds: number;
  heapUsedMiB: number;
  externalMiB: number;
  heapTotalMiB: number;
  loopP99Ms: number;
  connections: number;
  /** Why /metrics gave nothing this time, if it did not. */
  scrapeError?: string;
}

export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Values of unlabelled samples of the named metrics in Prometheus text; missing ones are absent. */
export function metricValues(text: string, names: readonly string[]): Map<string, number> {
  const want = new Set(names);
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const sp = line.indexOf(' ');
    if (sp < 0) continue;
    const name = line.slice(0, sp);
    if (want.has(name)) out.set(name, Number(line.slice(sp + 1).split(' ')[0]));
  }
  return out;
}

const MIB = 1024 * 1024;
const NAMES = ['nodejs_heap_size_used_bytes', 'nodejs_heap_size_total_bytes', 'nodejs_external_memory_bytes', 'nodejs_eventloop_lag_p99_seconds', 'derp_open_connections'] as const;

export async function readServer(pid: number | undefined, metricsUrl: string | undefined): Promise<ServerReading> {
  const r: ServerReading = {
    rssMiB: pid ? procRssKiB(pid) / 1024 : NaN,
    fds: pid ? openFds(pid) : NaN,
    heapUsedMiB: NaN,
    externalMiB: NaN,
    heapTotalMiB: NaN,
    loopP99Ms: NaN,
    connections: NaN,
  };
  if (!metricsUrl) return r;
  try {
    const res = await fetch(metricsUrl, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) });
    const body = await res.text();
    if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
    const v = metricValues(body, NAMES);
    r.heapUsedMiB = (v.get('nodejs_heap_size_used_bytes') ?? NaN) / MIB;
    r.externalMiB = (v.get('nodejs_external_memory_bytes') ?? NaN) / MIB;
    r.heapTotalMiB = (v.get('nodejs_heap_size_total_bytes') ?? NaN) / MIB;
    const lag = v.get('nodejs_eventloop_lag_p99_seconds');
    r.loopP99Ms = lag === undefined ? NaN : Math.max(0, lag - PROM_LOOP_RESOLUTION_S) * 1000;
    r.connections = v.get('derp_open_connections') ?? NaN;
  } catch (err) {
    r.scrapeError = (err as Error).message;
  }
  return r;
}
