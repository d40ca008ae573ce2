import { Command, Flags } from '@oclif/core';
import { progress } from '../lib/cli/progress.js';
import { ConfigError, describeError } from '../lib/errors.js';
import { BENCH_DEFAULTS, BENCH_LIMITS, parseBenchDuration, renderBench, runBench, type BenchMode, type BenchOptions, type BenchTransport } from '../lib/loadgen/index.js';

/** Exit codes, documented in the description (and the README). */
export const BenchExit = { Ok: 0, Failed: 1, Usage: 2 } as const;

export default class Bench extends Command {
  static override summary = 'Load-test any DERP relay: throughput, idle connections or handshakes/s';
  static override description = `Drives a DERP relay (derp serve, Tailscale's derper, anything that speaks the DERP wire protocol) from forked generator worker processes and reports what it carried. Every run is bounded: --duration (at most 10 min), and pairs, connections and concurrency have maxima within the open-files limit.

Modes:
  throughput (default)  --pairs sender/receiver pairs, --size B packets, each pair keeping 32 packets in flight (or paced to --rate packets/s in all); after --warmup, --duration is measured. Reports delivered packets/s, Mbit/s (packet data), loss (sent − delivered, over the whole run), latency p50/p99/max (sender to receiver), generator CPU (% of one core, µs per packet) and, with --pid, the server's.
  idle                  opens --conns idle clients and holds them for --duration; with --pid, the server's RSS (/proc/<pid>/status) before and after, per connection.
  handshake             --concurrency loops of connect + DERP handshake + close for --duration (or --count attempts): handshakes/s, generator CPU, and with --pid the server's CPU per handshake.

URLs: http:// and https:// use the HTTP Upgrade (--transport websocket for WebSocket on them), ws:// and wss:// WebSocket. TLS is verified unless --insecure; --ca-file adds trusted CAs. --pid must be a process on this machine (e.g. the relay's), read from /proc.

--json prints one document (schemas/bench.schema.json, "schema": "derp.bench/v1").

Exit codes:
  0  the run completed
  1  the run failed: cannot connect, handshake refused, connections lost or the server died during the run
  2  bad usage: bad flag value, or more connections than the open-files limit allows`;

  static override examples = [
    '<%= config.bin %> bench --url http://127.0.0.1:3340/derp --pairs 8 --size 1200 --duration 5s',
    '<%= config.bin %> bench --url https://derp.example.com/derp --rate 10000 --duration 30s --json',
    '<%= config.bin %> bench --url http://127.0.0.1:3340/derp --mode idle --conns 2000 --pid $(pgrep -f "derp serve")',
    '<%= config.bin %> bench --url wss://derp.example.com/derp --mode handshake --concurrency 64 --duration 10s',
  ];

  static override flags = {
    url: Flags.string({ description: 'the relay: http(s)://host[:port]/derp or ws(s)://…', required: true }),
    mode: Flags.string({ description: 'what to measure', options: ['throughput', 'idle', 'handshake'], default: BENCH_DEFAULTS.mode }),
    transport: Flags.string({ description: 'how to carry DERP (default: from the URL scheme)', options: ['derp', 'websocket'] }),
    pairs: Flags.integer({ description: 'throughput: sender/receiver pairs', default: BENCH_DEFAULTS.pairs, min: 1, max: BENCH_LIMITS.maxPairs }),
    size: Flags.integer({ description: 'throughput: packet data bytes', default: BENCH_DEFAULTS.size, min: BENCH_LIMITS.minSize, max: BENCH_LIMITS.maxSize }),
    rate: Flags.integer({ description: 'throughput: total packets/s over all pairs (default: as fast as the relay takes them)', min: 1 }),
    duration: Flags.string({ description: 'measured time: seconds, or e.g. 500ms, 30s, 2m (max 10m)', default: `${BENCH_DEFAULTS.durationMs / 1000}s` }),
    warmup: Flags.string({ description: 'throughput: load before measuring (0 for none)', default: `${BENCH_DEFAULTS.warmupMs / 1000}s` }),
    conns: Flags.integer({ description: 'idle: clients to hold', default: BENCH_DEFAULTS.conns, min: 1, max: BENCH_LIMITS.maxConns }),
    concurrency: Flags.integer({ description: 'handshake: concurrent connect loops', default: BENCH_DEFAULTS.concurrency, min: 1, max: BENCH_LIMITS.maxConcurrency }),
    count: Flags.integer({ description: 'handshake: stop after this many attempts', min: 1 }),
    workers: Flags.integer({ description: 'generator worker processes', default: BENCH_DEFAULTS.workers, min: 1, max: BENCH_LIMITS.maxWorkers }),
    pid: Flags.integer({ description: "the server's pid on this machine: its CPU and RSS", min: 1 }),
    'ca-file': Flags.string({ description: 'extra trusted CA certificate(s), PEM' }),
    insecure: Flags.boolean({ description: 'do not verify the TLS certificate (testing only)', default: false }),
    json: Flags.boolean({ description: 'print one JSON document (derp.bench/v1)', default: false }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Bench);
    let opts: BenchOptions;
    try {
      opts = {
        url: flags.url,
        mode: flags.mode as BenchMode,
        ...(flags.transport ? { transport: flags.transport as BenchTransport } : {}),
        pairs: flags.pairs,
        size: flags.size,
        ...(flags.rate !== undefined ? { rate: flags.rate } : {}),
        durationMs: parseBenchDuration('--duration', flags.duration),
        warmupMs: flags.mode === 'throughput' ? parseBenchDuration('--warmup', flags.warmup, true) : 0,
        conns: flags.conns,
        concurrency: flags.concurrency,
        ...(flags.count !== undefined ? { count: flags.count } : {}),
        workers: flags.workers,
        ...(flags.pid !== undefined ? { pid: flags.pid } : {}),
        ...(flags['ca-file'] ? { caFile: flags['ca-file'] } : {}),
        insecure: flags.insecure,
      };
    } catch (err) {
      return this.error(describeError(err), { exit: BenchExit.Usage });
    }
    const spin = progress(!flags.json);
    let report;
    try {
      report = await runBench(opts, {
        onPhase: (text) => spin.step(text),
        onThroughput: (p, total) =>
          spin.step(`${p.phase === 'warmup' ? 'warming up' : 'measuring'} ${(p.elapsedMs / 1000).toFixed(1)}/${(total / 1000).toFixed(1)} s: ${p.received.toLocaleString('en-US')} delivered of ${p.sent.toLocaleString('en-US')} sent`),
      });
      spin.stop();
    } catch (err) {
      spin.stop();
      return this.error(describeError(err), { exit: err instanceof ConfigError ? BenchExit.Usage : BenchExit.Failed });
    }
    this.log(flags.json ? JSON.stringify(report, null, 2) : renderBench(report));
    if (!report.ok) this.error(`the run failed: ${report.errors.join('; ')}`, { exit: BenchExit.Failed });
  }
}
