/**
 * One soak run: `derp serve --dev` (or a given server), the steady load (throughput pairs at a fixed
 * rate, src/lib/loadgen), connection churn (real handshakes in 1 s slots of the handshake scenario),
 * the hostile clients (hostile.ts), and a reading of the server every second (sampler.ts).
 */
import { describeError } from '../src/lib/errors.js';
import { runHandshakes, runThroughput, sleep, type ThroughputResult } from '../src/lib/loadgen/index.js';
import { benchWorker, relayArgs, startServer, type ServerHandle } from '../bench/procs.js';
import { HOSTILE_MAX_CONNS, Hostile, type HostileReport } from './hostile.js';
import type { SoakOptions } from './options.js';
import { readServer } from './sampler.js';
import type { Sample } from './series.js';
import { judge, warmupFor, type ChurnTotals, type SoakVerdict } from './verdict.js';

/** Concurrent connect + handshake + close loops of the churn. */
export const CHURN_LOOPS = 8;
/** The churn runs in slots this long, each with its share of the rate; a slot's count is its rate. */
const CHURN_SLOT_MS = 1000;
const SAMPLE_INTERVAL_MS = 1000;
/** A progress line every this many samples. */
const PROGRESS_EVERY = 10;

export interface SoakResult {
  date: string;
  command: string;
  settings: { durationS: number; warmupS: number; churnPerMin: number; pairs: number; rate: number; size: number; hostile: boolean; server: string };
  samples: Sample[];
  verdict: SoakVerdict;
  steady: Omit<ThroughputResult, 'errors'> | null;
  hostile: HostileReport | null;
  scrapeErrors: number;
  notes: string[];
}

function externalServer(o: SoakOptions): ServerHandle {
  return { url: o.url!, pid: o.pid, metricsUrl: o.metricsUrl, label: 'external server', tls: { insecure: true }, check: () => undefined, stop: async () => undefined };
}

export async function runSoak(o: SoakOptions, progress: (msg: string) => void): Promise<SoakResult> {
  const date = new Date().toISOString();
  const warmupS = o.warmupS ?? warmupFor(o.durationS);
  const notes: string[] = [];
  progress(o.url ? `soaking ${o.url}` : 'starting derp serve --dev');
  const server = o.url ? externalServer(o) : await startServer('derp serve --dev', relayArgs([]));
  const load = benchWorker(0);
  const churnWorker = benchWorker(1);
  const hostile = o.hostile ? new Hostile(server.url) : null;
  let serverError: string | undefined;
  const fatal = (err: unknown): void => {
    serverError ??= describeError(err);
  };

  const samples: Sample[] = [];
  let scrapeErrors = 0;
  const durationMs = o.durationS * 1000;
  try {
    // Steady load: its cumulative received count arrives twice a second through the progress callback.
    let recv = { n: 0, at: 0 };
    const t0 = performance.now();
    const end = t0 + durationMs;
    const steady = runThroughput(server, [load], o.pairs, o.size, { warmupMs: 0, durationMs }, o.rate, {
      onProgress: (p) => {
        recv = { n: p.received, at: performance.now() };
      },
    }).catch((err: unknown) => {
      fatal(err);
      return null;
    });

    const churn: ChurnTotals | null = o.churnPerMin > 0 ? { cycles: 0, failed: 0 } : null;
    let churnRate = NaN;
    const churnLoop = (async () => {
      if (!churn) return;
      const perSlot = Math.max(1, Math.round((o.churnPerMin / 60) * (CHURN_SLOT_MS / 1000)));
      while (performance.now() + CHURN_SLOT_MS <= end && serverError === undefined) {
        const s0 = performance.now();
        const r = await runHandshakes(server, [churnWorker], Math.min(CHURN_LOOPS, perSlot), CHURN_SLOT_MS, perSlot);
        churn.cycles += r.count;
        churn.failed += r.failed;
        churn.firstError ??= r.firstError;
        const left = CHURN_SLOT_MS - (performance.now() - s0);
        if (left > 0) await sleep(left);
        churnRate = r.count / (Math.max(CHURN_SLOT_MS, performance.now() - s0) / 1000);
      }
    })().catch(fatal);

    hostile?.start();

    let prev = { n: 0, at: t0 };
    for (let k = 1; performance.now() < end && serverError === undefined; k++) {
      const due = t0 + k * SAMPLE_INTERVAL_MS;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      let r;
      try {
        server.check();
        r = await readServer(server.pid, server.metricsUrl);
      } catch (err) {
        fatal(err);
        break;
      }
      if (r.scrapeError !== undefined) {
        scrapeErrors++;
        if (scrapeErrors === 1) notes.push(`first failed /metrics scrape: ${r.scrapeError}`);
      }
      const cur = recv;
      const pps = cur.at > prev.at ? (cur.n - prev.n) / ((cur.at - prev.at) / 1000) : NaN;
      if (cur.at > prev.at) prev = cur;
      const s: Sample = {
        t: (performance.now() - t0) / 1000,
        rssMiB: r.rssMiB,
        heapUsedMiB: r.heapUsedMiB,
        externalMiB: r.externalMiB,
        heapTotalMiB: r.heapTotalMiB,
        loopP99Ms: r.loopP99Ms,
        fds: r.fds,
        deliveredPps: pps,
        churnPerS: churn ? churnRate : NaN,
        connections: r.connections,
      };
      samples.push(s);
      if (k % PROGRESS_EVERY === 0) {
        progress(
          `${s.t.toFixed(0)}/${o.durationS} s  rss ${s.rssMiB.toFixed(1)} MiB  heap ${s.heapUsedMiB.toFixed(1)} MiB  fds ${s.fds}  ` +
            `${Math.round(pps)} pkt/s  churn ${Math.round(churnRate)}/s  loop p99 ${s.loopP99Ms.toFixed(1)} ms`,
        );
      }
    }
    const steadyResult = await steady;
    await churnLoop;
    const hostileReport = hostile ? await hostile.stop() : null;
    try {
      server.check();
    } catch (err) {
      fatal(err);
    }
    if (steadyResult && steadyResult.errors.length > 0) notes.push(`steady load: ${steadyResult.errors.join('; ')}`);
    if (hostileReport && hostileReport.errors.length > 0) notes.push(`hostile clients: ${hostileReport.errors.join('; ')}`);

    const verdict = judge({
      samples,
      durationS: o.durationS,
      warmupS,
      load: steadyResult
        ? { sent: steadyResult.sent, received: steadyResult.received, gaps: steadyResult.gaps, stalls: steadyResult.stalls, errors: steadyResult.errors }
        : { sent: 0, received: 0, gaps: 0, stalls: 0, errors: [] },
      churn,
      // Beyond the steady pairs: the churn's loops and the hostile clients, each one descriptor at most.
      fdInFlight: (churn ? CHURN_LOOPS : 0) + (hostile ? HOSTILE_MAX_CONNS : 0),
      serverError,
    });
    let steadyOut: SoakResult['steady'] = null;
    if (steadyResult) {
      const { errors: _e, ...rest } = steadyResult;
      steadyOut = rest;
    }
    return {
      date,
      command: o.command,
      settings: { durationS: o.durationS, warmupS, churnPerMin: o.churnPerMin, pairs: o.pairs, rate: o.rate, size: o.size, hostile: o.hostile, server: server.label },
      samples,
      verdict,
      steady: steadyOut,
      hostile: hostileReport,
      scrapeErrors,
      notes,
    };
  } finally {
    await hostile?.stop();
    await Promise.all([load.stop(), churnWorker.stop()]);
    await server.stop();
  }
}
