/**
 * Measurement for selection: a DERP connect probe of every relay node (connect outcome for health, and
 * connect time as a latency when no netcheck is supplied), plus an optional netcheck run whose STUN/HTTPS
 * latencies take precedence. Results go straight into the selector.
 */
import { DERPClient, type DERPClientOptions } from '../client/client.js';
import { regionsOf } from '../derpmap/addr.js';
import { describeError } from '../errors.js';
import { CONNECT_PROBE_CONCURRENCY, DEFAULT_CONNECT_PROBE_TIMEOUT_MS } from './constants.js';
import type { LatencyReport, RegionSample, ServerSelector } from './selector.js';

export interface NodeProbe {
  regionId: number;
  node: string;
  ok: boolean;
  /** Whole connect time (TCP + TLS + HTTP upgrade + handshake), ms; null on failure. */
  ms: number | null;
  error?: string;
}

export type NetcheckFn = (signal?: AbortSignal) => Promise<LatencyReport>;

export interface MeasureOptions {
  /** DERPClient options for the probes (TLS etc.); reconnect is always off. */
  clientOptions?: Omit<DERPClientOptions, 'reconnect'>;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Latencies from netcheck (STUN/HTTPS). Without it the connect time is the latency ('derp' method). */
  netcheck?: NetcheckFn;
  now?: () => number;
}

export interface MeasureResult {
  report: LatencyReport;
  probes: NodeProbe[];
  /** Where the latencies came from. */
  latencySource: 'netcheck' | 'derp-connect';
  netcheckError?: string;
}

async function pool<T>(items: T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Connects to each relay node of the selector's considered regions once, then disconnects. */
export async function probeConnects(selector: ServerSelector, opts: MeasureOptions = {}): Promise<NodeProbe[]> {
  const now = opts.now ?? Date.now;
  const ids = new Set(selector.consideredRegions());
  const nodes = regionsOf(selector.map)
    .filter((r) => ids.has(r.regionId) && !r.noMeasureNoHome)
    .flatMap((r) => r.nodes.filter((n) => n.canRelay && selector.nodeAllowed(n.id)));
  const out: NodeProbe[] = [];
  await pool(nodes, CONNECT_PROBE_CONCURRENCY, async (node) => {
    opts.signal?.throwIfAborted();
    const client = new DERPClient({ ...opts.clientOptions, reconnect: false, connectTimeoutMs: opts.timeoutMs ?? DEFAULT_CONNECT_PROBE_TIMEOUT_MS, isProber: true });
    const t0 = performance.now();
    try {
      await client.connect(node, opts.signal);
      const ms = performance.now() - t0;
      out.push({ regionId: node.regionCode, node: node.id, ok: true, ms });
      selector.noteConnectResult(node.id, true, now());
    } catch (err) {
      const error = describeError(err);
      out.push({ regionId: node.regionCode, node: node.id, ok: false, ms: null, error });
      selector.noteConnectResult(node.id, false, now(), error);
    } finally {
      await client.disconnect();
    }
  });
  return out;
}

/** Runs netcheck (if given) and the connect probes concurrently and feeds both into the selector. */
export async function measure(selector: ServerSelector, opts: MeasureOptions = {}): Promise<MeasureResult> {
  const now = opts.now ?? Date.now;
  const start = now();
  const [probes, nc] = await Promise.all([
    probeConnects(selector, opts),
    opts.netcheck
      ? opts.netcheck(opts.signal).then(
          (r) => ({ report: r, error: undefined }),
          (err: unknown) => ({ report: undefined, error: describeError(err) }),
        )
      : Promise.resolve(undefined),
  ]);
  let report: LatencyReport;
  let latencySource: MeasureResult['latencySource'];
  if (nc?.report) {
    report = nc.report;
    latencySource = 'netcheck';
  } else {
    const best = new Map<number, RegionSample>();
    for (const p of probes) {
      if (!p.ok || p.ms === null) continue;
      const old = best.get(p.regionId);
      if (!old || p.ms < old.latencyMs!) best.set(p.regionId, { regionId: p.regionId, latencyMs: p.ms, method: 'derp', node: p.node });
    }
    report = { at: now(), regions: [...best.values()] };
    latencySource = 'derp-connect';
  }
  selector.noteReport(report, start);
  return { report, probes, latencySource, ...(nc?.error ? { netcheckError: nc.error } : {}) };
}
