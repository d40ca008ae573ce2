/**
 * `derp probe --every 60s --listen 127.0.0.1:9101`: probe again and again, keep the last report, and serve
 * it on a listener of its own: Prometheus metrics (/metrics), a status page (/) and the report (/json).
 *
 * Runs never overlap: the next starts `everyMs` after the previous one started, or at once when the
 * previous one took longer than that (no catching up on missed runs). A run that rejects is counted and
 * logged; the last good report stays.
 */
import { EventEmitter } from 'node:events';
import * as http from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import { ConfigError, ListenError, describeError } from '../errors.js';
import { parseListenAddr } from '../server/relay.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { isLoopbackAddress } from '../util/net.js';
import { renderStatusPage } from './status-page.js';
import { CHECK_STATUSES, type CheckResult, type CheckUnit, type NodeReport, type ProbeReport } from './types.js';

/** `--listen` default: loopback, since the page names every node and what is wrong with it. */
export const DEFAULT_PROBE_LISTEN = { host: '127.0.0.1', port: 9101 } as const;

/** How long stop() waits for an aborted run to settle before it closes the listener anyway. */
export const STOP_GRACE_MS = 5_000;

export interface ProbeListen {
  /** Undefined = every interface. */
  host?: string;
  /** 0 = an ephemeral port (see `ProbeMonitor.port`). */
  port: number;
}

export interface ProbeMonitorInit {
  /** One probe run; must give up when `signal` aborts (stop()). */
  run: (signal: AbortSignal) => Promise<ProbeReport>;
  /** Interval between run starts, in milliseconds. */
  everyMs: number;
  listen?: ProbeListen;
  logger?: Logger;
}

export type ProbeRunOutcome =
  | { ok: true; report: ProbeReport; durationMs: number }
  | { ok: false; error: unknown; durationMs: number };

export interface ProbeMonitorEvents {
  /** After every run, counted first (so `runs` already includes it). */
  run: [ProbeRunOutcome];
}

export interface ProbeMonitorState {
  /** Runs finished (successful or not). */
  runs: number;
  /** Runs whose `run` rejected. */
  failures: number;
  /** Unix ms of the end of the last successful / failed run. */
  lastSuccessAt?: number;
  lastFailureAt?: number;
  lastError?: string;
  lastDurationMs?: number;
  /** Whether the most recent run succeeded (undefined before the first). */
  lastRunOk?: boolean;
}

/** "host:port", "[v6]:port" or ":port" (every interface) → ProbeListen; ConfigError otherwise. */
export function parseProbeListen(addr: string): ProbeListen {
  const { host, port } = parseListenAddr(addr);
  return host === undefined ? { port } : { host, port };
}

function formatAddr(l: ProbeListen): string {
  if (l.host === undefined) return `:${l.port}`;
  return l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}

/** Metric name and factor from a CheckResult's unit to the metric's base unit. */
const UNIT_METRICS: Record<CheckUnit, { name: string; help: string; factor: number }> = {
  ms: { name: 'derp_probe_latency_seconds', help: 'The latency a check measured (STUN, HTTP, DERP handshake, packet and mesh RTT).', factor: 1 / 1000 },
  days: { name: 'derp_probe_certificate_expires_in_seconds', help: 'Time until the certificate a node served expires (tls check; days = / 86400).', factor: 86_400 },
  'Mbit/s': { name: 'derp_probe_throughput_bits_per_second', help: 'Throughput the bandwidth check measured.', factor: 1_000_000 },
};

const CHECK_LABELS = ['region', 'node', 'check', 'peer'] as const;
type CheckLabel = (typeof CHECK_LABELS)[number];

function checkLabels(n: NodeReport, c: CheckResult): Record<CheckLabel, string> {
  return { region: n.regionCode || String(n.regionId), node: n.node, check: c.check, peer: c.peer ?? '' };
}

/** The monitor's own registry (never prom-client's global one), filled from the last report on scrape. */
class ProbeMetrics {
  readonly registry = new Registry();
  readonly runs: Counter;
  readonly failures: Counter;
  readonly lastRun: Gauge<'result'>;
  readonly lastDuration: Gauge;

  constructor(report: () => ProbeReport | undefined) {
    const r = [this.registry];
    // Per-check series are rebuilt from the report at every scrape, so a node gone from the map loses its series.
    const perCheck = (fill: (g: Gauge<string>, n: NodeReport, c: CheckResult) => void) =>
      function (this: Gauge<string>): void {
        this.reset();
        for (const n of report()?.nodes ?? []) for (const c of n.checks) fill(this, n, c);
      };
    new Gauge({
      name: 'derp_probe_check_status',
      help: 'The last result of each check, one-hot: 1 for its status, 0 for the others.',
      labelNames: [...CHECK_LABELS, 'status'],
      registers: r,
      collect: perCheck((g, n, c) => {
        for (const s of CHECK_STATUSES) g.set({ ...checkLabels(n, c), status: s }, c.status === s ? 1 : 0);
      }),
    });
    new Gauge({
      name: 'derp_probe_check_duration_seconds',
      help: 'Wall time of the last run of each check.',
      labelNames: CHECK_LABELS,
      registers: r,
      collect: perCheck((g, n, c) => g.set(checkLabels(n, c), c.durationMs / 1000)),
    });
    for (const [unit, m] of Object.entries(UNIT_METRICS) as Array<[CheckUnit, (typeof UNIT_METRICS)[CheckUnit]]>) {
      new Gauge({
        name: m.name,
        help: m.help,
        labelNames: CHECK_LABELS,
        registers: r,
        collect: perCheck((g, n, c) => {
          if (c.unit === unit && c.value !== undefined) g.set(checkLabels(n, c), c.value * m.factor);
        }),
      });
    }
    this.runs = new Counter({ name: 'derp_probe_runs_total', help: 'Probe runs finished, successful or not.', registers: r });
    this.failures = new Counter({ name: 'derp_probe_run_failures_total', help: 'Probe runs that failed as a whole (no report), e.g. the map could not be fetched.', registers: r });
    this.lastRun = new Gauge({ name: 'derp_probe_last_run_timestamp_seconds', help: 'Unix time the last successful (result="ok") or failed (result="failed") run ended.', labelNames: ['result'], registers: r });
    this.lastDuration = new Gauge({ name: 'derp_probe_last_run_duration_seconds', help: 'Wall time of the last run.', registers: r });
  }
}

function sendText(res: http.ServerResponse, status: number, body: string, type: string, head: boolean, extra: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...extra,
  });
  res.end(head ? undefined : body);
}

export class ProbeMonitor extends EventEmitter<ProbeMonitorEvents> {
  private readonly runFn: ProbeMonitorInit['run'];
  readonly everyMs: number;
  private readonly listenAt: ProbeListen;
  private readonly logger: Logger;
  private readonly metrics: ProbeMetrics;
  private readonly st: ProbeMonitorState = { runs: 0, failures: 0 };
  private report: ProbeReport | undefined;
  private server: http.Server | null = null;
  private timer: NodeJS.Timeout | undefined;
  private inflight: { abort: AbortController; done: Promise<void> } | undefined;
  private stopped = true;
  private boundPort = 0;

  constructor(init: ProbeMonitorInit) {
    super();
    if (!Number.isFinite(init.everyMs) || init.everyMs < 1) throw new ConfigError(`probe interval must be at least 1 ms, got ${init.everyMs}`, { context: { everyMs: init.everyMs } });
    const listen = init.listen ?? DEFAULT_PROBE_LISTEN;
    if (!Number.isInteger(listen.port) || listen.port < 0 || listen.port > 65535) throw new ConfigError(`listen port must be 0–65535, got ${listen.port}`, { context: { port: listen.port } });
    this.runFn = init.run;
    this.everyMs = init.everyMs;
    this.listenAt = listen;
    this.logger = init.logger ?? silentLogger;
    this.metrics = new ProbeMetrics(() => this.report);
  }

  /** The last successful run's report. */
  get lastReport(): ProbeReport | undefined {
    return this.report;
  }

  get state(): Readonly<ProbeMonitorState> {
    return { ...this.st };
  }

  get port(): number {
    return this.boundPort;
  }

  /** `http://host:port` of the listener (every-interface listeners as 127.0.0.1). */
  get url(): string {
    const h = this.listenAt.host === undefined || this.listenAt.host === '0.0.0.0' || this.listenAt.host === '::' ? '127.0.0.1' : this.listenAt.host;
    return `http://${h.includes(':') ? `[${h}]` : h}:${this.boundPort}`;
  }

  /** Binds the listener (ListenError when it cannot), then starts the first run at once. */
  async start(): Promise<void> {
    if (this.server !== null) throw new ConfigError('probe monitor already started');
    const addr = formatAddr(this.listenAt);
    const srv = http.createServer(this.onRequest);
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: Error): void => reject(new ListenError(addr, describeError(err), { cause: err }));
      srv.once('error', onErr);
      srv.listen({ host: this.listenAt.host, port: this.listenAt.port }, () => {
        srv.off('error', onErr);
        resolve();
      });
    });
    srv.on('error', (err: Error) => this.logger.log('error', 'probe listener error', { reason: describeError(err) }));
    const a = srv.address();
    this.boundPort = a !== null && typeof a === 'object' ? a.port : this.listenAt.port;
    this.server = srv;
    if (this.listenAt.host === undefined || (!isLoopbackAddress(this.listenAt.host) && this.listenAt.host !== 'localhost')) {
      this.logger.log('warn', 'probe status listener is reachable beyond this host; it names every node and its problems', { addr });
    }
    this.logger.log('info', 'probe monitor listening', { url: this.url, everyMs: this.everyMs });
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops the timer, aborts a run in progress (waiting up to STOP_GRACE_MS for it), closes the listener. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const run = this.inflight;
    if (run !== undefined) {
      run.abort.abort(new ConfigError('probe monitor stopped'));
      let grace: NodeJS.Timeout | undefined;
      const late = await Promise.race([
        run.done.then(() => false),
        new Promise<boolean>((resolve) => (grace = setTimeout(() => resolve(true), STOP_GRACE_MS))),
      ]);
      clearTimeout(grace);
      if (late) this.logger.log('warn', 'probe run did not end after abort; closing anyway', { graceMs: STOP_GRACE_MS });
    }
    const srv = this.server;
    this.server = null;
    if (srv !== null) {
      await new Promise<void>((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections();
      });
    }
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runOnce();
    }, delayMs);
  }

  private runOnce(): void {
    if (this.stopped) return;
    const abort = new AbortController();
    const t0 = performance.now();
    const done = Promise.resolve()
      .then(() => this.runFn(abort.signal))
      .then(
        (report) => this.finish(t0, report, undefined),
        (err: unknown) => this.finish(t0, undefined, err),
      )
      // Only a throwing 'run' listener or logger lands here; the loop is already rescheduled.
      .catch((err: unknown) => this.logger.log('error', 'probe run bookkeeping failed', { reason: describeError(err) }));
    this.inflight = { abort, done };
  }

  private finish(t0: number, report: ProbeReport | undefined, error: unknown): void {
    this.inflight = undefined;
    // A run aborted by stop() is neither a result nor a failure.
    if (this.stopped) return;
    const durationMs = performance.now() - t0;
    if (report !== undefined && (report === null || typeof report !== 'object' || !Array.isArray(report.nodes))) {
      error = new ConfigError('probe run resolved without a report');
      report = undefined;
    }
    const now = Date.now();
    this.st.runs++;
    this.st.lastDurationMs = durationMs;
    this.metrics.runs.inc();
    this.metrics.lastDuration.set(durationMs / 1000);
    let outcome: ProbeRunOutcome;
    if (report !== undefined) {
      this.report = report;
      this.st.lastSuccessAt = now;
      this.st.lastRunOk = true;
      this.metrics.lastRun.set({ result: 'ok' }, now / 1000);
      this.logger.log('info', 'probe run finished', { status: report.status, bad: report.summary.bad, warn: report.summary.warn, durationMs: Math.round(durationMs) });
      outcome = { ok: true, report, durationMs };
    } else {
      this.st.failures++;
      this.st.lastFailureAt = now;
      this.st.lastRunOk = false;
      this.st.lastError = describeError(error);
      this.metrics.failures.inc();
      this.metrics.lastRun.set({ result: 'failed' }, now / 1000);
      this.logger.log('error', 'probe run failed', { reason: this.st.lastError, durationMs: Math.round(durationMs) });
      outcome = { ok: false, error, durationMs };
    }
    // Next start: everyMs after this one started, or now if it overran.
    this.schedule(Math.max(0, this.everyMs - durationMs));
    this.emit('run', outcome);
  }

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const raw = req.url ?? '/';
    const q = raw.indexOf('?');
    const path = q < 0 ? raw : raw.slice(0, q);
    if (path !== '/' && path !== '/json' && path !== '/metrics') {
      sendText(res, 404, '404 page not found\n', 'text/plain; charset=utf-8', false);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendText(res, 405, 'method not allowed\n', 'text/plain; charset=utf-8', false, { Allow: 'GET, HEAD' });
      return;
    }
    const head = req.method === 'HEAD';
    if (path === '/metrics') {
      this.metrics.registry.metrics().then(
        (body) => sendText(res, 200, body, this.metrics.registry.contentType, head),
        (err: unknown) => {
          this.logger.log('error', 'probe metrics collection failed', { reason: describeError(err) });
          sendText(res, 500, 'metrics collection failed\n', 'text/plain; charset=utf-8', head);
        },
      );
      return;
    }
    const report = this.report;
    const page = { report, state: this.state, everyMs: this.everyMs };
    if (path === '/json') {
      if (report === undefined) sendText(res, 503, `${JSON.stringify({ error: waitingMessage(this.st) })}\n`, 'application/json; charset=utf-8', head);
      else sendText(res, 200, `${JSON.stringify(report, null, 2)}\n`, 'application/json; charset=utf-8', head);
      return;
    }
    sendText(res, report === undefined ? 503 : 200, renderStatusPage({ ...page, waiting: waitingMessage(this.st) }), 'text/html; charset=utf-8', head, {
      'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'",
    });
  };
}

/** Why there is no report yet. */
function waitingMessage(st: ProbeMonitorState): string {
  return st.lastError === undefined ? 'no probe run has finished yet' : `no probe run has succeeded yet; the last one failed: ${st.lastError}`;
}
