/**
 * The measurements `derp bench` and `npm run bench` share: throughput (optionally rate-limited), idle
 * connections (and the server's RSS per connection), handshakes/s. Each drives forked workers (pool.ts).
 */
import { ConnectError } from '../errors.js';
import type { LoadTls, Transport } from './conn.js';
import { maxLatencyMs, percentile } from './histogram.js';
import type { MarkReport, WorkerEvent } from './messages.js';
import type { Worker } from './pool.js';
import { procCpuSplitUs, procOpenFilesLimit, procRssKiB, sleep } from './proc.js';

/** The relay under load, as the scenarios see it. */
export interface LoadTarget {
  /** DERP URL: http(s) for the Upgrade, ws(s) for WebSocket. */
  url: string;
  /** 'ws' carries DERP over WebSocket even on an http(s) URL; default from the URL scheme. */
  transport?: Transport;
  /** Certificate checks for https/wss (default: verify against the system roots). */
  tls?: LoadTls;
  /** The server's pid on this machine, for its CPU and RSS from /proc; undefined = unknown. */
  pid?: number;
  label: string;
  /**
   * The server's CPU so far, µs, when it is more than the one process `pid` (e.g. a supervisor and its
   * workers); default: /proc/<pid>/stat of `pid` alone.
   */
  cpu?: () => { user: number; sys: number };
  /** Throws if the server is known to have died. */
  check(): void;
}

/** Window of un-received packets per pair, as in the reference derper measurement. */
export const WINDOW = 32;

export interface Timing {
  warmupMs: number;
  durationMs: number;
}

export interface ThroughputResult {
  server: string;
  pairs: number;
  size: number;
  /** Target packets/s for a rate-limited run, else 0. */
  rate: number;
  pps: number;
  mbps: number;
  sent: number;
  received: number;
  dropPct: number;
  p50Ms: number;
  p99Ms: number;
  /** Highest latency recorded while measuring, ms. */
  maxMs: number;
  serverCpuUsPerPkt: number | null;
  serverCpuPct: number | null;
  genCpuPct: number;
  /** Generator CPU (all workers) per packet delivered while measuring, µs. */
  genCpuUsPerPkt: number | null;
  workers: number;
  /** Worst generator worker's event-loop lag while measuring (p99 / max), ms. */
  genLoopP99Ms: number;
  genLoopMaxMs: number;
  /** Packets skipped in a pair's sequence: lost by the relay (a later one arrived first). */
  gaps: number;
  stalls: number;
  errors: string[];
}

/** Live counters of a throughput run, for a progress line. */
export interface ThroughputProgress {
  phase: 'warmup' | 'measure';
  elapsedMs: number;
  sent: number;
  received: number;
}

export interface ThroughputOptions {
  /** Called about every PROGRESS_INTERVAL_MS while sending. */
  onProgress?: (p: ThroughputProgress) => void;
  /** Called once every pair is connected, before any packet: each pair's client ports [sender, receiver]. */
  onReady?: (ports: [number, number][]) => void | Promise<void>;
}

/** The server's CPU reader: its own `cpu`, else /proc of its pid, else none. */
function serverCpu(server: LoadTarget): (() => { user: number; sys: number }) | undefined {
  if (server.cpu) return server.cpu;
  const pid = server.pid;
  return pid ? () => procCpuSplitUs(pid) : undefined;
}

/** How often a throughput run polls its workers for the progress callback. */
export const PROGRESS_INTERVAL_MS = 500;

/** Splits n items over k buckets as evenly as possible. */
export function spread(n: number, k: number): number[] {
  return Array.from({ length: k }, (_, i) => Math.floor(n / k) + (i < n % k ? 1 : 0)).filter((x) => x > 0);
}

/** Sums of what the workers reported between two marks: receive rate (per second), packets received, generator CPU µs. */
export function betweenMarks(m1: MarkReport[], m2: MarkReport[]): { perSec: number; received: number; genCpuUs: number } {
  let perSec = 0;
  let received = 0;
  let genCpuUs = 0;
  m1.forEach((a, i) => {
    const b = m2[i]!;
    received += b.received - a.received;
    perSec += (b.received - a.received) / ((b.t - a.t) / 1000);
    genCpuUs += b.cpuUs - a.cpuUs;
  });
  return { perSec, received, genCpuUs };
}

export type DoneReport = Extract<WorkerEvent, { ev: 'done' }>;

/** The workers' final reports added up, their latency histograms merged. */
export function mergeDone(done: DoneReport[]): { hist: Map<number, number>; samples: number; sent: number; received: number; gaps: number; stalls: number; errors: string[] } {
  const hist = new Map<number, number>();
  const sum = { samples: 0, sent: 0, received: 0, gaps: 0, stalls: 0 };
  const errors: string[] = [];
  for (const d of done) {
    sum.sent += d.sent;
    sum.received += d.received;
    sum.gaps += d.gaps;
    sum.stalls += d.stalls;
    errors.push(...d.errors);
    for (const [b, c] of d.hist) {
      hist.set(b, (hist.get(b) ?? 0) + c);
      sum.samples += c;
    }
  }
  return { hist, ...sum, errors };
}

/** Sleeps `ms`, reporting the workers' counters every PROGRESS_INTERVAL_MS when asked to. */
async function waitReporting(ms: number, ws: Worker[], phase: ThroughputProgress['phase'], onProgress: ThroughputOptions['onProgress']): Promise<void> {
  if (!onProgress) return sleep(ms);
  const t0 = performance.now();
  for (;;) {
    const left = ms - (performance.now() - t0);
    if (left <= 0) return;
    await sleep(Math.min(left, PROGRESS_INTERVAL_MS));
    const peeks = await Promise.all(ws.map((w) => w.request({ cmd: 'peek' }, 'mark')));
    onProgress({ phase, elapsedMs: performance.now() - t0, sent: peeks.reduce((a, p) => a + p.sent, 0), received: peeks.reduce((a, p) => a + p.received, 0) });
  }
}

export async function runThroughput(
  server: LoadTarget,
  workers: Worker[],
  pairs: number,
  size: number,
  timing: Timing,
  totalRate = 0,
  opts: ThroughputOptions = {},
): Promise<ThroughputResult> {
  const counts = spread(pairs, Math.min(workers.length, pairs));
  const ws = workers.slice(0, counts.length);
  const ready = await Promise.all(
    ws.map((w, i) => w.request({ cmd: 'throughput', url: server.url, transport: server.transport, tls: server.tls, pairs: counts[i]!, size, window: WINDOW, ratePerPair: totalRate / pairs }, 'ready')),
  );
  const failed = ready.find((r) => r.failed > 0);
  if (failed) {
    for (const w of ws) w.send({ cmd: 'stop' });
    await Promise.all(ws.map((w) => w.next('done')));
    throw new ConnectError(`${failed.failed} pair(s) failed to connect to ${server.label}: ${failed.firstError}`);
  }
  await opts.onReady?.(ready.flatMap((r) => r.ports ?? []));
  for (const w of ws) w.send({ cmd: 'go' });
  await waitReporting(timing.warmupMs, ws, 'warmup', opts.onProgress);
  const readCpu = serverCpu(server);
  const cpuNow = (): number => {
    const c = readCpu?.();
    return c ? c.user + c.sys : 0;
  };
  const measured = readCpu !== undefined;
  const cpu0 = cpuNow();
  const wall0 = performance.now();
  const m1 = await Promise.all(ws.map((w) => w.request({ cmd: 'mark' }, 'mark')));
  await waitReporting(timing.durationMs, ws, 'measure', opts.onProgress);
  const m2 = await Promise.all(ws.map((w) => w.request({ cmd: 'mark' }, 'mark')));
  const wallUs = (performance.now() - wall0) * 1000;
  const cpu1 = cpuNow();
  const done = await Promise.all(ws.map((w) => w.request({ cmd: 'stop' }, 'done')));
  server.check();

  const { perSec: pps, received: delivered, genCpuUs } = betweenMarks(m1, m2);
  const { hist, samples, sent, received, gaps, stalls, errors } = mergeDone(done);
  const srvUs = cpu1 - cpu0;
  return {
    server: server.label,
    pairs,
    size,
    rate: totalRate,
    pps,
    mbps: (pps * size * 8) / 1e6,
    sent,
    received,
    dropPct: sent > 0 ? ((sent - received) / sent) * 100 : 0,
    p50Ms: percentile(hist, samples, 0.5),
    p99Ms: percentile(hist, samples, 0.99),
    maxMs: maxLatencyMs(hist),
    serverCpuUsPerPkt: measured && delivered > 0 ? srvUs / delivered : null,
    serverCpuPct: measured ? (srvUs / wallUs) * 100 : null,
    genCpuPct: (genCpuUs / wallUs) * 100,
    genCpuUsPerPkt: delivered > 0 ? genCpuUs / delivered : null,
    workers: ws.length,
    genLoopP99Ms: Math.max(...done.map((d) => d.loopDelayP99Ms)),
    genLoopMaxMs: Math.max(...done.map((d) => d.loopDelayMaxMs)),
    gaps,
    stalls,
    errors,
  };
}

export interface IdleResult {
  transport: Transport;
  requested: number;
  opened: number;
  failed: number;
  /** The server's RSS before and after opening the clients, KiB; NaN without its pid. */
  rssBeforeKiB: number;
  rssAfterKiB: number;
  bytesPerConn: number;
  /** Soft RLIMIT_NOFILE of the server and of the most limited generator worker. */
  fdLimits: { server: number | null; generator: number | null };
  /** The first connection error, when some failed. */
  firstError?: string;
  note?: string;
}

export interface IdleOptions {
  /** How long to hold the clients open once they are all connected (after the RSS reading). */
  holdMs?: number;
}

/** Per-worker connection attempts in flight while opening idle clients (keeps under the accept backlog). */
const IDLE_CONCURRENCY = 64;
/** Wait after connecting before reading RSS, so buffers of the connect burst are settled. */
const IDLE_SETTLE_MS = 1500;
/** Clients connected and closed before the RSS baseline is read. */
const IDLE_WARMUP_MAX = 200;
/** File descriptors a Node process needs besides its sockets (stdio, IPC, epoll, libuv, ...). */
export const FD_SLACK = 64;

/** Idle clients `workers` generator processes can hold within the fd limit (theirs is this process's: Node raises soft to hard). */
export function idleCapacity(workers: number, fdLimit = procOpenFilesLimit('self') ?? Infinity): number {
  return Math.max(0, fdLimit - FD_SLACK) * workers;
}

/**
 * Opens `count` idle clients and holds them. With the server's pid, its RSS is read before (after a
 * warm-up batch) and after (once settled): the memory one idle connection costs it.
 */
export async function runIdle(server: LoadTarget, workers: Worker[], transport: Transport, count: number, opts: IdleOptions = {}): Promise<IdleResult> {
  const pid = server.pid;
  const notes: string[] = [];
  let n = count;
  const srvLimit = pid ? procOpenFilesLimit(pid) : undefined;
  if (srvLimit !== undefined && n + FD_SLACK > srvLimit) {
    n = srvLimit - FD_SLACK;
    notes.push(`server fd limit ${srvLimit} caps clients at ${n}`);
  }
  const genLimit = Math.min(...workers.map((w) => (w.pid ? (procOpenFilesLimit(w.pid) ?? Infinity) : Infinity)));
  const perWorker = Math.ceil(n / workers.length);
  if (perWorker + FD_SLACK > genLimit) {
    n = (genLimit - FD_SLACK) * workers.length;
    notes.push(`generator fd limit ${genLimit} × ${workers.length} workers caps clients at ${n}`);
  }
  const open = (w: Worker, c: number) => w.request({ cmd: 'idle', url: server.url, transport, tls: server.tls, count: c, concurrency: IDLE_CONCURRENCY }, 'ready');
  let before = NaN;
  if (pid) {
    // A warm-up batch first: JIT-compiled handshake code and the heap's first growth are one-time costs
    // that would otherwise be charged to the measured clients.
    const warm = Math.min(IDLE_WARMUP_MAX, Math.ceil(n / 20));
    await open(workers[0]!, warm);
    await workers[0]!.request({ cmd: 'close' }, 'closed');
    await sleep(IDLE_SETTLE_MS);
    before = procRssKiB(pid);
  }
  const counts = spread(n, workers.length);
  const ready = await Promise.all(counts.map((c, i) => open(workers[i]!, c)));
  let after = NaN;
  if (pid) {
    await sleep(IDLE_SETTLE_MS);
    server.check();
    after = procRssKiB(pid);
  }
  if (opts.holdMs) await sleep(opts.holdMs);
  server.check();
  const opened = ready.reduce((s, r) => s + r.opened, 0);
  const failed = ready.reduce((s, r) => s + r.failed, 0);
  const firstError = ready.find((r) => r.firstError)?.firstError;
  if (failed > 0) notes.push(`${failed} failed: ${firstError}`);
  await Promise.all(counts.map((_, i) => workers[i]!.request({ cmd: 'close' }, 'closed')));
  return {
    transport,
    requested: count,
    opened,
    failed,
    rssBeforeKiB: before,
    rssAfterKiB: after,
    bytesPerConn: opened > 0 ? ((after - before) * 1024) / opened : NaN,
    fdLimits: { server: srvLimit ?? null, generator: Number.isFinite(genLimit) ? genLimit : null },
    ...(firstError ? { firstError } : {}),
    note: notes.length > 0 ? notes.join('; ') : undefined,
  };
}

export interface HandshakeResult {
  server: string;
  concurrency: number;
  count: number;
  failed: number;
  perSec: number;
  serverCpuUsPerHandshake: number | null;
  /** The same split into user space (JS, crypto) and kernel (accept, reads, writes, close). */
  serverUserUsPerHandshake: number | null;
  serverSysUsPerHandshake: number | null;
  genCpuPct: number;
  /** Generator CPU (all workers) per handshake, µs. */
  genCpuUsPerHandshake: number | null;
  firstError?: string;
}

/** `concurrency` loops of connect + handshake + close for `durationMs` (or until `maxCount` attempts in all). */
export async function runHandshakes(server: LoadTarget, workers: Worker[], concurrency: number, durationMs: number, maxCount?: number): Promise<HandshakeResult> {
  const readCpu = serverCpu(server);
  const cpu0 = readCpu?.() ?? { user: 0, sys: 0 };
  const t0 = performance.now();
  const counts = spread(concurrency, workers.length);
  const quota = maxCount === undefined ? undefined : spread(maxCount, counts.length);
  const res = await Promise.all(
    counts.map((c, i) =>
      workers[i]!.request({ cmd: 'handshakes', url: server.url, transport: server.transport, tls: server.tls, concurrency: c, durationMs, ...(quota ? { maxCount: quota[i] ?? 0 } : {}) }, 'handshakes'),
    ),
  );
  const wallUs = (performance.now() - t0) * 1000;
  const cpu1 = readCpu?.() ?? { user: 0, sys: 0 };
  server.check();
  const count = res.reduce((s, r) => s + r.count, 0);
  const elapsed = Math.max(...res.map((r) => r.elapsedMs));
  const per = (v: number): number | null => (readCpu && count > 0 ? v / count : null);
  return {
    server: server.label,
    concurrency,
    count,
    failed: res.reduce((s, r) => s + r.failed, 0),
    perSec: count / (elapsed / 1000),
    serverCpuUsPerHandshake: per(cpu1.user + cpu1.sys - cpu0.user - cpu0.sys),
    serverUserUsPerHandshake: per(cpu1.user - cpu0.user),
    serverSysUsPerHandshake: per(cpu1.sys - cpu0.sys),
    genCpuPct: (res.reduce((s, r) => s + r.cpuUs, 0) / wallUs) * 100,
    genCpuUsPerHandshake: count > 0 ? res.reduce((s, r) => s + r.cpuUs, 0) / count : null,
    firstError: res.find((r) => r.firstError)?.firstError,
  };
}
