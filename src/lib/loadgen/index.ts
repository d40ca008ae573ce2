/**
 * The DERP load generator behind `derp bench` and `npm run bench`: forked worker processes (pool.ts,
 * worker.ts) drive bare DERP connections (conn.ts) through the scenarios (scenarios.ts); CPU and RSS
 * come from /proc (proc.ts), latency from a fixed-bucket histogram (histogram.ts).
 */
export { BenchConn, HANDSHAKE_TIMEOUT_MS, clientInfoFor, parseTarget, type DialOptions, type LoadTls, type Target, type Transport } from './conn.js';
export { FrameScanner, type FrameHandler } from './scanner.js';
export { HIST_BUCKETS, HIST_BUCKET_US, maxLatencyMs, percentile } from './histogram.js';
export { MIN_PAYLOAD, type AttackKind, type AttackReport, type CanaryReport, type MarkReport, type WorkerCommand, type WorkerEvent } from './messages.js';
export { WORKER_ENTRY, Worker, type WorkerOptions } from './pool.js';
export { parseProcStat, parseSchedStat, procAlive, procChildren, procCpuSplitUs, procCpuUs, procOpenFilesLimit, procRssKiB, procTree, procTreeCpuSplitUs, sleep, sumTreeCpuUs, threadSchedStat, type ProcStat, type SchedStat } from './proc.js';
export {
  FD_SLACK,
  PROGRESS_INTERVAL_MS,
  WINDOW,
  betweenMarks,
  idleCapacity,
  mergeDone,
  runHandshakes,
  runIdle,
  runThroughput,
  spread,
  type DoneReport,
  type HandshakeResult,
  type IdleOptions,
  type IdleResult,
  type LoadTarget,
  type ThroughputOptions,
  type ThroughputProgress,
  type ThroughputResult,
  type Timing,
} from './scenarios.js';
export {
  BENCH_DEFAULTS,
  BENCH_LIMITS,
  BENCH_SCHEMA,
  parseBenchDuration,
  renderBench,
  runBench,
  type BenchEvents,
  type BenchMode,
  type BenchOptions,
  type BenchReport,
  type BenchTransport,
} from './bench.js';
export { mallocTrim } from './trim.js';
