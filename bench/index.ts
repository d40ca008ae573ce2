/**
 * `npm run bench`: drives `derp serve` (its own process) from forked generator workers, then the same
 * load against a minimal Node TCP forwarder (bench/baseline-forwarder.ts) for scale, and prints one
 * table with Tailscale's Go derper figures and our targets beside ours.
 *
 *   npm run bench -- [--quick] [--duration s] [--warmup s] [--workers n] [--url derp-url [--pid n]]
 *                    [--scenarios 8x1200,8x64] [--idle n] [--idle-tls n] [--idle-ws n] [--handshake-concurrency n]
 *                    [--skip throughput,baseline,halfload,idle,tls,ws,handshakes] [--server-arg x]... [--json]
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { ConfigError, describeError } from '../src/lib/errors.js';
import { baselineArgs, relayArgs, startServer, Worker, type ServerHandle } from './procs.js';
import { HALF_LOAD, THROUGHPUT_SCENARIOS } from './reference.js';
import { render, type BenchReport } from './report.js';
import { runHandshakes, runIdle, runThroughput, WINDOW, type IdleResult } from './scenarios.js';

const SKIPPABLE = ['throughput', 'baseline', 'halfload', 'idle', 'tls', 'ws', 'handshakes'] as const;

const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    workers: { type: 'string' },
    url: { type: 'string' },
    pid: { type: 'string' },
    idle: { type: 'string' },
    'idle-tls': { type: 'string' },
    'idle-ws': { type: 'string' },
    'handshake-concurrency': { type: 'string' },
    skip: { type: 'string', default: '' },
    scenarios: { type: 'string' },
    'server-arg': { type: 'string', multiple: true, default: [] },
    json: { type: 'boolean', default: false },
  },
  strict: true,
});

function num(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new ConfigError(`--${name} must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}

const quick = opts.quick;
const timing = {
  warmupMs: num('warmup', opts.warmup, quick ? 0.5 : 3) * 1000,
  durationMs: num('duration', opts.duration, quick ? 1.5 : 5) * 1000,
};
/**
 * Generator processes: every core but the relay's, at most 4. On 2 cores that is one worker; a second
 * one measured slower there (three busy processes on two cores add scheduler latency to every figure).
 */
const workerCount = Math.max(1, Math.floor(num('workers', opts.workers, Math.min(4, Math.max(1, cpus().length - 1)))));
const idleCounts = {
  tcp: Math.floor(num('idle', opts.idle, quick ? 2000 : 10_000)),
  tls: Math.floor(num('idle-tls', opts['idle-tls'], quick ? 300 : 2000)),
  ws: Math.floor(num('idle-ws', opts['idle-ws'], quick ? 300 : 2000)),
};
const handshakeConcurrency = Math.max(1, Math.floor(num('handshake-concurrency', opts['handshake-concurrency'], 64)));
const skip = new Set(opts.skip.split(',').filter(Boolean));
for (const s of skip) if (!(SKIPPABLE as readonly string[]).includes(s)) throw new ConfigError(`--skip: unknown part "${s}" (known: ${SKIPPABLE.join(', ')})`);
/** `--scenarios 8x1200,8x64`: a subset of the throughput scenarios. */
const scenarios = opts.scenarios
  ? opts.scenarios.split(',').map((name) => {
      const sc = THROUGHPUT_SCENARIOS.find((x) => `${x.pairs}x${x.size}` === name.trim());
      if (!sc) throw new ConfigError(`--scenarios: unknown "${name}" (known: ${THROUGHPUT_SCENARIOS.map((x) => `${x.pairs}x${x.size}`).join(', ')})`);
      return sc;
    })
  : THROUGHPUT_SCENARIOS;
const externalPid = opts.pid === undefined ? undefined : Math.floor(num('pid', opts.pid, 0));

const argv = process.argv.slice(2).map((a) => (/^[\w./:@=,-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`));
const command = process.env.npm_lifecycle_event === 'bench' ? `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}` : `npx tsx bench/index.ts ${argv.join(' ')}`.trim();

function progress(msg: string): void {
  if (!opts.json) process.stderr.write(`· ${msg}\n`);
}

function externalServer(url: string): ServerHandle {
  return { url, pid: externalPid, label: `external ${url}`, check: () => undefined, stop: async () => undefined };
}

async function main(): Promise<void> {
  const report: BenchReport = {
    command,
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version },
    settings: { ...timing, window: WINDOW, workers: workerCount, quick, url: opts.url ?? null },
    throughput: [],
    baseline: [],
    halfLoad: null,
    idle: [],
    handshakes: null,
    notes: [],
  };
  const workers = Array.from({ length: workerCount }, (_, i) => new Worker(i));
  const servers: ServerHandle[] = [];
  const relay = async (label: string, extra: string[] = []): Promise<ServerHandle> => {
    if (opts.url) return externalServer(opts.url);
    progress(`starting derp serve (${label})`);
    const s = await startServer(`derp serve (${label})`, relayArgs([...extra, ...opts['server-arg']]));
    servers.push(s);
    return s;
  };
  try {
    const main = await relay('throughput');
    if (!skip.has('throughput')) {
      let baseline: ServerHandle | null = null;
      if (!skip.has('baseline')) {
        progress('starting baseline forwarder');
        baseline = await startServer('baseline forwarder', baselineArgs());
        servers.push(baseline);
      }
      for (const sc of scenarios) {
        progress(`throughput ${sc.pairs} × ${sc.size} B → relay`);
        report.throughput.push(await runThroughput(main, workers, sc.pairs, sc.size, timing));
        if (baseline) {
          progress(`throughput ${sc.pairs} × ${sc.size} B → baseline`);
          report.baseline.push(await runThroughput(baseline, workers, sc.pairs, sc.size, timing));
        }
      }
      if (baseline) await baseline.stop();
      const max = report.throughput.find((r) => r.pairs === HALF_LOAD.pairs && r.size === HALF_LOAD.size);
      if (!skip.has('halfload') && max && max.pps > 0) {
        const rate = Math.round(max.pps / 2);
        progress(`latency at half load: ${HALF_LOAD.pairs} × ${HALF_LOAD.size} B at ${rate} pkts/s`);
        report.halfLoad = await runThroughput(main, workers, HALF_LOAD.pairs, HALF_LOAD.size, timing, rate);
      }
    }
    if (!skip.has('handshakes')) {
      progress(`handshakes/s with ${handshakeConcurrency} concurrent connections`);
      report.handshakes = await runHandshakes(main, workers, handshakeConcurrency, timing.durationMs);
    }
    await main.stop();

    if (!skip.has('idle')) {
      if (opts.url && externalPid === undefined) report.notes.push('idle memory skipped: --url without --pid');
      else {
        const external = opts.url !== undefined;
        const plainTransport = opts.url?.startsWith('https') ? 'tls' : 'tcp';
        const parts: { transport: 'tcp' | 'tls' | 'ws'; count: number; extra: string[] }[] = [{ transport: plainTransport, count: idleCounts.tcp, extra: [] }];
        if (!skip.has('ws')) parts.push({ transport: 'ws', count: idleCounts.ws, extra: [] });
        if (!skip.has('tls') && !external) parts.push({ transport: 'tls', count: idleCounts.tls, extra: ['--self-signed', '127.0.0.1'] });
        for (const p of parts) {
          if (p.count === 0) continue;
          // A fresh server per transport, so one measurement's leftovers do not hide in the next one's baseline.
          const s = await relay(`idle ${p.transport}`, p.extra);
          progress(`idle memory: ${p.count} ${p.transport} clients`);
          try {
            report.idle.push(await runIdle(s, workers, p.transport, p.count));
          } catch (err) {
            if (p.transport === 'tcp') throw err;
            // TLS/WS are secondary figures: report why they are missing rather than lose the whole run.
            report.notes.push(`idle ${p.transport} failed: ${describeError(err)}`);
            report.idle.push(failedIdle(p.transport, p.count));
          }
          await s.stop();
        }
      }
    }
  } finally {
    for (const w of workers) w.stop();
    for (const s of servers) await s.stop();
  }
  for (const r of [...report.throughput, ...report.baseline, ...(report.halfLoad ? [report.halfLoad] : [])]) {
    if (r.errors.length > 0) report.notes.push(`${r.server} ${r.pairs}×${r.size}: ${r.errors.join('; ')}`);
    if (r.stalls > 0) report.notes.push(`${r.server} ${r.pairs}×${r.size}: ${r.stalls} stalled window(s) reset`);
  }
  if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(render(report));
}

function failedIdle(transport: 'tcp' | 'tls' | 'ws', count: number): IdleResult {
  return { transport, requested: count, opened: 0, failed: count, rssBeforeKiB: NaN, rssAfterKiB: NaN, bytesPerConn: NaN };
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${describeError(err)}\n`);
    process.exit(1);
  },
);
