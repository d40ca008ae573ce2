/**
 * `npm run bench`: drives `derp serve` (its own process) from forked generator workers, then the same
 * load against a minimal Node TCP forwarder (bench/baseline-forwarder.ts) for scale, and prints the
 * figures with Tailscale's Go derper numbers and our targets beside them. Options: bench/options.ts.
 */
import { cpus } from 'node:os';
import { ConfigError, describeError } from '../src/lib/errors.js';
import { parseOptions, USAGE, type BenchOptions } from './options.js';
import { BENCH_TLS, baselineArgs, benchWorker, relayArgs, startServer, stunBaselineArgs, stunRelayArgs, stunServerArgs, type ServerHandle } from './procs.js';
import {
  FD_SLACK,
  procOpenFilesLimit,
  runHandshakes,
  runIdle,
  runThroughput,
  WINDOW,
  type IdleResult,
  type Transport,
  type Worker,
} from '../src/lib/loadgen/index.js';
import { runFlood } from './flood.js';
import { measureHandshakeBreakdown } from './handshake-breakdown.js';
import { METRICS_PAIRS, runMetricsCost } from './metrics.js';
import { HALF_LOAD, NETCHECK_REGIONS } from './reference.js';
import { emptyReport, render, type BenchReport } from './report.js';
import { runScaling, serveHasWorkersFlag } from './scaling.js';
import { REPO_ROOT } from './procs.js';
import { runNetcheckBench, runStun } from './stun.js';

/** Exit code for bad command-line options (oclif's usage-error convention). */
const EXIT_USAGE = 2;

async function bench(o: BenchOptions): Promise<BenchReport> {
  const progress = (msg: string): void => {
    if (!o.json) process.stderr.write(`· ${msg}\n`);
  };
  const report: BenchReport = emptyReport({
    command: o.command,
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version },
    settings: { ...o.timing, window: WINDOW, workers: o.workers, quick: o.quick, url: o.url ?? null, compareUrl: o.compareUrl ?? null, stunSockets: o.stun.sockets, stunWindow: o.stun.window },
  });
  const workers = Array.from({ length: o.workers }, (_, i) => benchWorker(i));
  const servers: ServerHandle[] = [];
  const relay = async (purpose: string, extra: string[] = []): Promise<ServerHandle> => {
    if (o.url) return { url: o.url, pid: o.pid, label: 'external server', tls: BENCH_TLS, check: () => undefined, stop: async () => undefined };
    progress(`starting derp serve (${purpose})`);
    const s = await startServer(`derp serve (${purpose})`, relayArgs([...extra, ...o.serverArgs]));
    servers.push(s);
    return s;
  };
  try {
    if (!o.skip.has('throughput') || !o.skip.has('handshakes')) {
      // The headline figures are the relay alone; the metrics comparison below runs its own pair.
      const main = await relay('throughput', o.url ? [] : ['--metrics-addr', 'none']);
      if (!o.skip.has('throughput')) {
        let baseline: ServerHandle | null = null;
        if (!o.skip.has('baseline')) {
          progress('starting baseline forwarder');
          baseline = await startServer('baseline forwarder', baselineArgs());
          servers.push(baseline);
        }
        for (const sc of o.scenarios) {
          progress(`throughput ${sc.pairs} × ${sc.size} B → relay`);
          report.throughput.push(await runThroughput(main, workers, sc.pairs, sc.size, o.timing));
          if (baseline) {
            progress(`throughput ${sc.pairs} × ${sc.size} B → baseline`);
            report.baseline.push(await runThroughput(baseline, workers, sc.pairs, sc.size, o.timing));
          }
        }
        if (baseline) await baseline.stop();
        if (!o.skip.has('metrics') && !o.url) {
          const on = await relay('throughput, metrics on', ['--metrics-addr', '127.0.0.1:0']);
          for (const sc of o.scenarios.filter((x) => x.pairs === METRICS_PAIRS)) report.metricsCost.push(await runMetricsCost(main, on, workers, sc.pairs, sc.size, o.timing, progress));
          await on.stop();
        } else if (!o.skip.has('metrics')) report.notes.push('metrics cost skipped: --url (the bench needs to start both servers)');
        const max = report.throughput.find((r) => r.pairs === HALF_LOAD.pairs && r.size === HALF_LOAD.size);
        if (!o.skip.has('halfload') && max && max.pps > 0) {
          const rate = Math.round(max.pps / 2);
          progress(`latency at half load: ${HALF_LOAD.pairs} × ${HALF_LOAD.size} B at ${rate} pkts/s`);
          report.halfLoad = await runThroughput(main, workers, HALF_LOAD.pairs, HALF_LOAD.size, o.timing, rate);
        }
      }
      if (!o.skip.has('handshakes')) {
        if (!o.skip.has('breakdown')) {
          progress('handshake breakdown: each step of acceptClientInfo timed alone');
          report.handshakeBreakdown = measureHandshakeBreakdown();
        }
        progress(`handshakes/s with ${o.handshakeConcurrency} concurrent connections`);
        report.handshakes = await runHandshakes(main, workers, o.handshakeConcurrency, o.timing.durationMs);
        if (!o.skip.has('baseline') && !o.url) {
          // The floor for Node: the baseline forwarder's handshake (upgrade, ServerKey, one X25519 for
          // ServerInfo; no box opened, no JSON, no hub, no stats) under the same load.
          progress('starting baseline forwarder (handshake floor)');
          const floor = await startServer('baseline forwarder', baselineArgs());
          servers.push(floor);
          progress(`handshakes/s with ${o.handshakeConcurrency} concurrent connections → baseline forwarder`);
          report.handshakesBaseline = await runHandshakes(floor, workers, o.handshakeConcurrency, o.timing.durationMs);
          await floor.stop();
        }
        if (o.compareUrl) {
          const other: ServerHandle = { url: o.compareUrl, pid: o.comparePid, label: o.compareUrl, tls: BENCH_TLS, check: () => undefined, stop: async () => undefined };
          progress(`handshakes/s with ${o.handshakeConcurrency} concurrent connections → ${o.compareUrl}`);
          report.handshakesCompare = await runHandshakes(other, workers, o.handshakeConcurrency, o.timing.durationMs);
        }
      }
      await main.stop();
    }

    if (!o.skip.has('scaling')) {
      if (o.url) report.notes.push('scaling skipped: --url (the stage starts derp serve --workers 1 and --workers N itself)');
      else {
        report.scaling = await runScaling({
          n: o.relayWorkers,
          timing: o.timing,
          concurrency: o.handshakeConcurrency,
          serverArgs: o.serverArgs,
          workers,
          rounds: o.quick ? 1 : 2,
          flag: serveHasWorkersFlag(process.execPath, 'bin/run.js', REPO_ROOT),
          progress,
        });
      }
    }

    if (!o.skip.has('flood')) {
      if (o.url && o.pid === undefined) report.notes.push('flood skipped: --url without --pid (it reads the relay\'s RSS)');
      else {
        // Metrics on: the V8 heap figures come from its /metrics (the flood measures robustness, not speed).
        // More rounds only against a relay the bench starts: each round needs a fresh one.
        const rounds = o.url ? 1 : o.floodRounds;
        if (o.url && o.floodRounds > 1) report.notes.push('flood: one round only with --url (each round starts a fresh relay)');
        for (let round = 1; round <= rounds; round++) {
          if (rounds > 1) progress(`flood: round ${round} of ${rounds}`);
          const s = await relay('flood', o.url ? [] : ['--metrics-addr', '127.0.0.1:0']);
          const decoy = o.floodDecoy ? await relay('flood decoy', ['--metrics-addr', 'none']) : undefined;
          const f = await runFlood(s, workers, { phaseMs: o.floodSeconds * 1000, serverArgs: o.url ? [] : o.serverArgs, placement: o.floodPlacement, attacks: o.floodAttacks, decoy, warmupMs: o.floodWarmupSeconds * 1000 }, progress);
          await decoy?.stop();
          await s.stop();
          if (report.flood === null) report.flood = f;
          else report.floodRounds.push(f);
        }
      }
    }

    await benchStun(o, workers, servers, report, progress);

    if (!o.skip.has('idle')) {
      if (o.url && o.pid === undefined) report.notes.push('idle memory skipped: --url without --pid');
      else {
        const parts: { transport: Transport; count: number; extra: string[] }[] = [
          { transport: o.url?.startsWith('https') ? 'tls' : 'tcp', count: o.idle.tcp, extra: [] },
        ];
        if (!o.skip.has('ws')) parts.push({ transport: 'ws', count: o.idle.ws, extra: [] });
        if (!o.skip.has('tls') && !o.url) parts.push({ transport: 'tls', count: o.idle.tls, extra: ['--self-signed', '127.0.0.1'] });
        if (o.url) report.notes.push('idle memory: all transports measured one after another on the one external server');
        // One process holds at most its fd limit of sockets: add workers so the generator side never caps N.
        const fdLimit = procOpenFilesLimit(process.pid) ?? Infinity;
        const needed = Math.ceil(Math.max(...parts.map((p) => p.count)) / Math.max(1, fdLimit - FD_SLACK));
        while (workers.length < needed) workers.push(benchWorker(workers.length));
        for (const p of parts) {
          if (p.count === 0) continue;
          // A fresh server per transport, so one measurement's leftovers do not hide in the next one's baseline.
          const s = await relay(`idle ${p.transport}`, p.extra);
          progress(`idle memory: ${p.count} ${p.transport} clients`);
          try {
            report.idle.push(await runIdle(s, workers, p.transport, p.count));
          } catch (err) {
            if (p.transport === 'tcp') throw err;
            // TLS/WS are secondary figures: report why one is missing rather than lose the whole run.
            report.notes.push(`idle ${p.transport} failed: ${describeError(err)}`);
            report.idle.push(failedIdle(p.transport, p.count));
          }
          await s.stop();
        }
      }
    }
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    for (const s of servers) await s.stop();
  }
  for (const r of [...report.throughput, ...report.baseline, ...(report.halfLoad ? [report.halfLoad] : [])]) {
    const what = `${r.server} ${r.pairs} × ${r.size} B${r.rate ? ' (half load)' : ''}`;
    if (r.errors.length > 0) report.notes.push(`${what}: ${r.errors.join('; ')}`);
    if (r.stalls > 0) report.notes.push(`${what}: ${r.stalls} stalled window(s) reset after no delivery for 1 s`);
  }
  return report;
}

/** STUN Binding load on our server (one process, then N with reusePort), the bare responder, and netcheck. */
async function benchStun(o: BenchOptions, workers: Worker[], servers: ServerHandle[], report: BenchReport, progress: (msg: string) => void): Promise<void> {
  const { sockets, window } = o.stun;
  const start = async (label: string, args: string[]): Promise<ServerHandle> => {
    const s = await startServer(label, args);
    servers.push(s);
    return s;
  };
  const portOf = (s: ServerHandle): number => {
    if (!s.stunPort) throw new ConfigError(`${s.label} reported no STUN port`);
    return s.stunPort;
  };
  if (o.url && !(o.skip.has('stun') && o.skip.has('stun-multi') && o.skip.has('netcheck'))) {
    report.notes.push('STUN and netcheck figures come from servers the bench started, not from --url');
  }
  if (!o.skip.has('stun')) {
    progress('starting derp serve (STUN, no rate limit)');
    const s = await start('derp serve (STUN)', stunRelayArgs(o.serverArgs));
    progress(`STUN Binding load: ${sockets} sockets × ${window} in flight → derp serve`);
    report.stun.push(await runStun('derp serve', [s], portOf(s), workers, sockets, window, o.timing));
    await s.stop();
    if (!o.skip.has('baseline')) {
      progress('starting bare dgram STUN responder');
      const b = await start('bare STUN responder', stunBaselineArgs());
      progress(`STUN Binding load: ${sockets} sockets × ${window} in flight → bare responder`);
      report.stunBaseline = await runStun('bare dgram responder', [b], portOf(b), workers, sockets, window, o.timing);
      await b.stop();
    }
  }
  if (!o.skip.has('stun-multi')) {
    const n = Math.max(2, cpus().length);
    progress(`starting ${n} StunServer processes on one port (reusePort)`);
    const first = await start('StunServer 1 (reusePort)', stunServerArgs({ reusePort: true }));
    const group = [first];
    for (let i = 2; i <= n; i++) group.push(await start(`StunServer ${i} (reusePort)`, stunServerArgs({ port: portOf(first), reusePort: true })));
    progress(`STUN Binding load: ${sockets} sockets × ${window} in flight → ${n} processes`);
    report.stun.push(await runStun(`StunServer × ${n} (reusePort)`, group, portOf(first), workers, sockets, window, o.timing));
    for (const g of group) await g.stop();
  }
  if (!o.skip.has('netcheck')) {
    progress(`starting ${NETCHECK_REGIONS} loopback STUN regions`);
    const regions = await start('STUN regions', stunServerArgs({ count: NETCHECK_REGIONS }));
    progress(`netcheck × ${o.netcheckRuns} over ${NETCHECK_REGIONS} regions`);
    report.netcheck = await runNetcheckBench(regions.stunPorts ?? [], o.netcheckRuns);
    regions.check();
    await regions.stop();
  }
  for (const r of [...report.stun, ...(report.stunBaseline ? [report.stunBaseline] : [])]) {
    if (r.errors.length > 0) report.notes.push(`STUN ${r.server}: ${r.errors.join('; ')}`);
  }
}

function failedIdle(transport: Transport, count: number): IdleResult {
  return { transport, requested: count, opened: 0, failed: count, rssBeforeKiB: NaN, rssAfterKiB: NaN, bytesPerConn: NaN, fdLimits: { server: null, generator: null } };
}

async function main(): Promise<number> {
  if (process.argv.includes('--help')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let o: BenchOptions;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return EXIT_USAGE;
  }
  const report = await bench(o);
  process.stdout.write(o.json ? `${JSON.stringify(report, null, 2)}\n` : render(report));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${describeError(err)}\n`);
    process.exit(1);
  },
);
