/**
 * `derp bench`: one bounded load run against any DERP relay (ours or Tailscale's derper: it speaks only
 * the wire protocol) in one of three modes, and its `derp.bench/v1` report. The command parses flags,
 * calls `runBench`, and renders the report (`renderBench`) or prints it as JSON.
 */
import { readFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { ConfigError, ConnectError, HandshakeError } from '../errors.js';
import { MAX_PACKET_SIZE } from '../protocol/index.js';
import { parseTarget, type LoadTls, type Transport } from './conn.js';
import { MIN_PAYLOAD } from './messages.js';
import { Worker } from './pool.js';
import { procAlive, procOpenFilesLimit } from './proc.js';
import {
  FD_SLACK,
  WINDOW,
  idleCapacity,
  runHandshakes,
  runIdle,
  runThroughput,
  type HandshakeResult,
  type IdleResult,
  type LoadTarget,
  type ThroughputProgress,
  type ThroughputResult,
} from './scenarios.js';
import { parseDuration } from '../util/duration.js';

export const BENCH_SCHEMA = 'derp.bench/v1';
export type BenchMode = 'throughput' | 'idle' | 'handshake';
export type BenchTransport = 'derp' | 'websocket';

/** Bounds: every run ends, and no flag can ask for more than one machine should try. */
export const BENCH_LIMITS = {
  /** Longest run, ms (--duration; the warm-up counts separately and has the same cap). */
  maxDurationMs: 10 * 60_000,
  /** Sender/receiver pairs (two connections each). */
  maxPairs: 1000,
  /** Idle clients (also capped by the fd limit, see idleCapacity). */
  maxConns: 100_000,
  /** Concurrent handshake loops. */
  maxConcurrency: 1024,
  /** Generator worker processes. */
  maxWorkers: 16,
  /** Packet data bytes: at least the timestamp and sequence number, at most DERP's MaxPacketSize. */
  minSize: MIN_PAYLOAD,
  maxSize: MAX_PACKET_SIZE,
} as const;

export const BENCH_DEFAULTS = {
  mode: 'throughput' as BenchMode,
  pairs: 8,
  size: 1200,
  durationMs: 5_000,
  warmupMs: 1_000,
  conns: 1_000,
  concurrency: 64,
  workers: 1,
} as const;

export interface BenchOptions {
  url: string;
  mode: BenchMode;
  /** Default: from the URL (ws/wss → websocket, http/https → the HTTP upgrade). */
  transport?: BenchTransport;
  pairs: number;
  size: number;
  /** Total packets/s over all pairs; 0 or absent = as fast as the window allows. */
  rate?: number;
  durationMs: number;
  warmupMs: number;
  conns: number;
  concurrency: number;
  /** Handshake mode: stop after this many attempts even if time is left. */
  count?: number;
  workers: number;
  /** The server's pid on this machine: its CPU (throughput, handshake) and RSS (idle). */
  pid?: number;
  caFile?: string;
  insecure?: boolean;
}

export interface BenchEvents {
  /** A phase began ("connecting 8 pairs", "measuring"). */
  onPhase?: (text: string) => void;
  /** Throughput: live counters, about twice a second. */
  onThroughput?: (p: ThroughputProgress, durationMs: number) => void;
}

export interface LatencyMs {
  p50: number | null;
  p99: number | null;
  max: number | null;
}

export interface BenchReport {
  schema: typeof BENCH_SCHEMA;
  date: string;
  url: string;
  mode: BenchMode;
  transport: BenchTransport;
  workers: number;
  serverPid: number | null;
  machine: { cpus: number; cpuModel: string; node: string };
  throughput: {
    pairs: number;
    size: number;
    /** Asked-for total packets/s, null = unpaced. */
    rate: number | null;
    window: number;
    warmupMs: number;
    durationMs: number;
    packetsPerSec: number;
    mbitPerSec: number;
    sent: number;
    delivered: number;
    lost: number;
    lossPct: number;
    latencyMs: LatencyMs;
    generatorCpu: { pctOfCore: number; usPerPacket: number | null };
    serverCpu: { pctOfCore: number; usPerPacket: number | null } | null;
    stalls: number;
  } | null;
  idle: {
    requested: number;
    opened: number;
    failed: number;
    heldMs: number;
    serverRss: { beforeKiB: number; afterKiB: number; bytesPerConn: number | null } | null;
    fdLimits: { server: number | null; generator: number | null };
  } | null;
  handshake: {
    concurrency: number;
    durationMs: number;
    count: number;
    failed: number;
    perSec: number;
    generatorCpu: { pctOfCore: number; usPerHandshake: number | null };
    serverCpu: { usPerHandshake: number | null; userUs: number | null; sysUs: number | null } | null;
  } | null;
  /** Anything that made the run fail (connections lost, the server gone), or worth knowing. */
  errors: string[];
  notes: string[];
  ok: boolean;
}

/** "5" (seconds), "5s", "500ms", "1.5m" → ms; ConfigError naming the flag otherwise. */
export function parseBenchDuration(flag: string, text: string, allowZero = false): number {
  const ms = parseDuration(text, { bareUnit: 's', allowZero });
  if (ms === undefined) throw new ConfigError(`${flag}: bad duration ${JSON.stringify(text)} (seconds, or e.g. 500ms, 5s, 2m)`, { context: { flag } });
  if (ms > BENCH_LIMITS.maxDurationMs) throw new ConfigError(`${flag} ${text} is over the ${BENCH_LIMITS.maxDurationMs / 60_000} min maximum`, { context: { flag } });
  return ms;
}

interface Resolved {
  target: LoadTarget;
  transport: BenchTransport;
}

/** Checks what flags cannot (URL, transport, pid, fd limit) and builds the target; ConfigError = usage. */
async function resolve(o: BenchOptions): Promise<Resolved> {
  let u: URL;
  try {
    u = new URL(o.url);
  } catch (cause) {
    throw new ConfigError(`--url ${JSON.stringify(o.url)} is not a URL`, { cause });
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw new ConfigError(`--url ${o.url}: scheme must be http, https, ws or wss`);
  const isWs = u.protocol === 'ws:' || u.protocol === 'wss:';
  if (isWs && o.transport === 'derp') throw new ConfigError(`--transport derp does not go with a ${u.protocol}// URL (use http: or https:)`);
  const transport: BenchTransport = o.transport ?? (isWs ? 'websocket' : 'derp');
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  if (!secure && (o.caFile || o.insecure)) throw new ConfigError('--ca-file and --insecure need an https: or wss: URL');
  const tls: LoadTls = { insecure: o.insecure ?? false };
  if (o.caFile) {
    try {
      tls.ca = await readFile(o.caFile, 'utf8');
    } catch (cause) {
      throw new ConfigError(`cannot read --ca-file ${o.caFile}: ${(cause as Error).message}`, { cause, context: { file: o.caFile } });
    }
  }
  if (o.pid !== undefined && !procAlive(o.pid)) throw new ConfigError(`--pid ${o.pid}: no such process on this machine`);
  // Each connection is a file descriptor in a worker: say so before the run rather than fail in it.
  const sockets = o.mode === 'idle' ? o.conns : o.mode === 'throughput' ? 2 * o.pairs : o.concurrency;
  const cap = idleCapacity(o.workers);
  if (sockets > cap) {
    const what = o.mode === 'idle' ? `--conns ${o.conns}` : o.mode === 'throughput' ? `--pairs ${o.pairs} (${sockets} connections)` : `--concurrency ${o.concurrency}`;
    throw new ConfigError(
      `${what} is more than ${o.workers} worker(s) can hold: the open-files limit is ${procOpenFilesLimit('self')} per process ` +
        `(${FD_SLACK} kept for the process itself), so at most ${cap} connections. Raise it (ulimit -n) or add --workers.`,
    );
  }
  const t: Transport = parseTarget(o.url, transport === 'websocket' ? 'ws' : undefined).transport;
  const pid = o.pid;
  return {
    transport,
    target: {
      url: o.url,
      transport: t,
      tls,
      ...(pid !== undefined ? { pid } : {}),
      label: o.url,
      check: () => {
        if (pid !== undefined && !procAlive(pid)) throw new ConnectError(`the server (pid ${pid}) died during the run`);
      },
    },
  };
}

const orNull = (n: number | null | undefined): number | null => (n === null || n === undefined || !Number.isFinite(n) ? null : n);

function throughputSection(r: ThroughputResult, o: BenchOptions): NonNullable<BenchReport['throughput']> {
  const lost = Math.max(0, r.sent - r.received);
  return {
    pairs: r.pairs,
    size: r.size,
    rate: r.rate > 0 ? r.rate : null,
    window: WINDOW,
    warmupMs: o.warmupMs,
    durationMs: o.durationMs,
    packetsPerSec: r.pps,
    mbitPerSec: r.mbps,
    sent: r.sent,
    delivered: r.received,
    lost,
    lossPct: r.sent > 0 ? (lost / r.sent) * 100 : 0,
    latencyMs: { p50: orNull(r.p50Ms), p99: orNull(r.p99Ms), max: orNull(r.maxMs) },
    generatorCpu: { pctOfCore: r.genCpuPct, usPerPacket: orNull(r.genCpuUsPerPkt) },
    serverCpu: r.serverCpuPct === null ? null : { pctOfCore: r.serverCpuPct, usPerPacket: orNull(r.serverCpuUsPerPkt) },
    stalls: r.stalls,
  };
}

function idleSection(r: IdleResult, heldMs: number): NonNullable<BenchReport['idle']> {
  return {
    requested: r.requested,
    opened: r.opened,
    failed: r.failed,
    heldMs,
    serverRss: Number.isFinite(r.rssBeforeKiB) ? { beforeKiB: r.rssBeforeKiB, afterKiB: r.rssAfterKiB, bytesPerConn: orNull(r.bytesPerConn) } : null,
    fdLimits: r.fdLimits,
  };
}

function handshakeSection(r: HandshakeResult, durationMs: number, pid: number | undefined): NonNullable<BenchReport['handshake']> {
  return {
    concurrency: r.concurrency,
    durationMs,
    count: r.count,
    failed: r.failed,
    perSec: r.perSec,
    generatorCpu: { pctOfCore: r.genCpuPct, usPerHandshake: orNull(r.genCpuUsPerHandshake) },
    serverCpu: pid === undefined ? null : { usPerHandshake: r.serverCpuUsPerHandshake, userUs: r.serverUserUsPerHandshake, sysUs: r.serverSysUsPerHandshake },
  };
}

/**
 * Runs one bounded load. Throws ConfigError for bad options (usage), a DerpError when the run cannot
 * start (no connection, handshake refused); a run that started but lost connections or its server
 * returns a report with ok = false and the reasons in `errors`.
 */
export async function runBench(o: BenchOptions, ev: BenchEvents = {}): Promise<BenchReport> {
  const { target, transport } = await resolve(o);
  const report: BenchReport = {
    schema: BENCH_SCHEMA,
    date: new Date().toISOString(),
    url: o.url,
    mode: o.mode,
    transport,
    workers: o.workers,
    serverPid: o.pid ?? null,
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version },
    throughput: null,
    idle: null,
    handshake: null,
    errors: [],
    notes: [],
    ok: true,
  };
  const workers = Array.from({ length: o.workers }, (_, i) => new Worker(i));
  try {
    if (o.mode === 'throughput') {
      ev.onPhase?.(`connecting ${o.pairs} pair(s) to ${o.url}`);
      const r = await runThroughput(target, workers, o.pairs, o.size, { warmupMs: o.warmupMs, durationMs: o.durationMs }, o.rate ?? 0, {
        onProgress: (p) => ev.onThroughput?.(p, p.phase === 'warmup' ? o.warmupMs : o.durationMs),
      });
      report.throughput = throughputSection(r, o);
      report.errors.push(...r.errors);
      if (r.stalls > 0) report.notes.push(`${r.stalls} window(s) stalled (no delivery for 1 s) and were reset`);
    } else if (o.mode === 'idle') {
      ev.onPhase?.(`opening ${o.conns} idle client(s) to ${o.url}${o.pid ? ' and reading the server RSS' : ''}`);
      const r = await runIdle(target, workers, target.transport!, o.conns, { holdMs: o.durationMs });
      report.idle = idleSection(r, o.durationMs);
      if (r.opened === 0) throw new ConnectError(`no idle client could connect to ${o.url}: ${r.firstError ?? 'unknown error'}`);
      if (r.failed > 0) report.errors.push(`${r.failed} of ${r.requested} idle client(s) failed to connect: ${r.firstError ?? 'unknown error'}`);
      if (r.note) report.notes.push(r.note);
    } else {
      ev.onPhase?.(`handshakes with ${o.concurrency} concurrent connection(s) for ${o.durationMs / 1000} s`);
      const r = await runHandshakes(target, workers, o.concurrency, o.durationMs, o.count);
      if (r.count === 0) throw new HandshakeError(`no DERP handshake with ${o.url} succeeded (${r.failed} attempt(s)): ${r.firstError ?? 'unknown error'}`);
      report.handshake = handshakeSection(r, o.durationMs, o.pid);
      if (r.failed > 0) report.errors.push(`${r.failed} handshake(s) failed: ${r.firstError ?? 'unknown error'}`);
    }
    target.check();
  } catch (err) {
    // The server vanished mid-run: a failed run with what was measured, not a crash.
    if (o.pid !== undefined && !procAlive(o.pid)) {
      report.errors.push(`the server (pid ${o.pid}) died during the run`);
      report.ok = false;
      return report;
    }
    throw err;
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
  report.ok = report.errors.length === 0;
  return report;
}

function int(n: number | null | undefined): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '—' : Math.round(n).toLocaleString('en-US');
}

function fix(n: number | null | undefined, digits: number): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(digits);
}

/** The report as a few readable lines. */
export function renderBench(r: BenchReport): string {
  const out: string[] = [`derp bench ${r.mode} → ${r.url} (${r.transport}), ${r.workers} generator worker(s), ${r.date}`];
  const t = r.throughput;
  if (t) {
    out.push(
      `  load        ${t.pairs} pair(s) × ${t.size} B, ${t.rate ? `${int(t.rate)} pkts/s asked` : `unpaced (window ${t.window})`}; ` +
        `${fix(t.warmupMs / 1000, 1)} s warm-up, ${fix(t.durationMs / 1000, 1)} s measured`,
    );
    out.push(`  delivered   ${int(t.packetsPerSec)} pkts/s, ${fix(t.mbitPerSec, 1)} Mbit/s`);
    out.push(`  loss        ${int(t.lost)} of ${int(t.sent)} sent (${fix(t.lossPct, 3)} %)`);
    out.push(`  latency     p50 ${fix(t.latencyMs.p50, 2)} ms, p99 ${fix(t.latencyMs.p99, 2)} ms, max ${fix(t.latencyMs.max, 2)} ms`);
    out.push(`  generator   ${fix(t.generatorCpu.pctOfCore, 0)} % of a core, ${fix(t.generatorCpu.usPerPacket, 2)} µs/packet`);
    out.push(t.serverCpu ? `  server      ${fix(t.serverCpu.pctOfCore, 0)} % of a core, ${fix(t.serverCpu.usPerPacket, 2)} µs/packet` : '  server      CPU unknown (give --pid)');
  }
  const i = r.idle;
  if (i) {
    out.push(`  idle        ${int(i.opened)} of ${int(i.requested)} client(s) connected, ${i.failed} failed, held ${fix(i.heldMs / 1000, 1)} s`);
    out.push(
      i.serverRss
        ? `  server RSS  ${int(i.serverRss.beforeKiB / 1024)} → ${int(i.serverRss.afterKiB / 1024)} MiB: ${fix((i.serverRss.bytesPerConn ?? NaN) / 1024, 1)} KiB per connection`
        : '  server RSS  unknown (give --pid)',
    );
    out.push(`  fd limits   server ${int(i.fdLimits.server)}, generator ${int(i.fdLimits.generator)}`);
  }
  const h = r.handshake;
  if (h) {
    out.push(`  handshakes  ${int(h.perSec)}/s (${int(h.count)} done, ${h.failed} failed, ${h.concurrency} concurrent, ${fix(h.durationMs / 1000, 1)} s)`);
    out.push(`  generator   ${fix(h.generatorCpu.pctOfCore, 0)} % of a core, ${fix(h.generatorCpu.usPerHandshake, 0)} µs/handshake`);
    out.push(h.serverCpu ? `  server      ${fix(h.serverCpu.usPerHandshake, 0)} µs CPU/handshake (user ${fix(h.serverCpu.userUs, 0)}, kernel ${fix(h.serverCpu.sysUs, 0)})` : '  server      CPU unknown (give --pid)');
  }
  for (const e of r.errors) out.push(`error: ${e}`);
  for (const n of r.notes) out.push(`note: ${n}`);
  return out.join('\n');
}
