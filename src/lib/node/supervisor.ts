/**
 * `derp serve --workers N`: the parent process serves no DERP. It forks N worker processes
 * (child_process.fork: plain processes that bind the shared ports themselves with SO_REUSEPORT, which
 * node:cluster would intercept and route through the parent), tells each the others' loopback mesh
 * addresses, restarts one that dies (backoff; gives up after a crash loop), relays SIGHUP / SIGTERM,
 * serves the host's one `/metrics` (the workers' registries summed) and `/healthz`, and passes the
 * workers' log lines through to its own stdout/stderr, held back until the "listening" line is out.
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';
import { AggregatorRegistry, Counter, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { CertMaterial, CertMode } from '../certs/index.js';
import type { GivenFlags, ServeConfig } from '../config/index.js';
import { DerpError, describeError } from '../errors.js';
import { MetricsServer, RelayMetrics } from '../metrics/index.js';
import type { NodePrivateKey } from '../protocol/keys.js';
import { parseListenAddr, type RouteHandler, type WarmUpResult } from '../server/index.js';
import type { Logger } from '../util/logger.js';
import { EXIT_LISTEN, EXIT_OK, EXIT_RUNTIME } from './exit.js';
import type { FromWorker, ToWorker, WorkerReady } from './worker.js';
import { BanList, DEFAULT_MAX_BANS } from '../abuse/index.js';

/** A worker that dies this many times within CRASH_WINDOW_MS: the supervisor gives up (exit 1). */
export const CRASH_LOOP_LIMIT = 5;
export const CRASH_WINDOW_MS = 60_000;
/** Restart delay: RESTART_BASE_MS doubled per recent failure, capped. */
const RESTART_BASE_MS = 100;
const RESTART_MAX_MS = 5_000;
/** A worker that does not answer a scrape or health query in time is reported as such. */
const QUERY_TIMEOUT_MS = 2_000;
/** How long the listening line waits for the workers' links to each other (then it warns and serves). */
const SIBLING_MESH_WAIT_MS = 5_000;
/** Worker log lines held before the "listening" line (beyond it the oldest are dropped). */
const HELD_LINES_MAX = 10_000;

/** Gauges that must not be summed across workers (the rest are: counters, connections, queues…). */
const AGGREGATORS: Record<string, 'first' | 'min' | 'max'> = {
  derp_build_info: 'first',
  derp_certificate_expiry_timestamp_seconds: 'min',
  derp_certificate_expires_in_seconds: 'min',
  derp_config_last_reload_timestamp_seconds: 'max',
};

export interface SupervisorInit {
  config: ServeConfig;
  privateKey: NodePrivateKey;
  /** The configured mesh key (mesh.pskFile), or null: one is generated for this start. */
  meshKey: Buffer | null;
  configFile?: string;
  given?: GivenFlags;
  logger: Logger;
  colorize: boolean;
}

interface Slot {
  index: number;
  proc: ChildProcess | null;
  ready: WorkerReady | null;
  restarts: number;
  failures: number[];
  timer: NodeJS.Timeout | null;
  /** Its links to every sibling are up (reported once per start of the worker). */
  meshed: boolean;
  /** Told to bind the public port and waiting for the answer: settled by 'listening', 'failed' or its exit. */
  listenWaiter: ((err: WorkerStartError | null) => void) | null;
}

/** What the "listening" line reports (worker 0's view of the shared ports). */
export interface SupervisorReady {
  url: string;
  port: number;
  stunPort: number | null;
  httpPort: number | null;
  certName: string | null;
  metricsUrl: string | null;
  pids: number[];
  /** Each worker's warm-up, in worker order. */
  warmUps: (WarmUpResult | null)[];
}

/** The supervisor's failure to start: the exit code of the worker that failed, and why. */
export class WorkerStartError extends DerpError {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super('DERP_ERR_SERVER', message, { context: { exitCode } });
  }
}

export class Supervisor {
  private readonly slots: Slot[];
  private readonly meshKey: Buffer;
  private config: ServeConfig;
  private cert: { mode: CertMode; material: CertMaterial } | null = null;
  /** Bans the workers made, handed to each worker that starts later (bounded; ended ones dropped). */
  private readonly bans = new BanList(DEFAULT_MAX_BANS);
  private stopping = false;
  private released = false;
  private held: { fd: 1 | 2; line: string }[] = [];
  private reloads = 0;
  private queryId = 0;
  private readonly pending = new Map<number, (m: FromWorker | null) => void>();
  private metricsServer: MetricsServer | null = null;
  private readonly registry = new Registry();
  private readonly restartCounter: Counter<'worker'>;
  private exitCode = EXIT_OK;
  private resolveExit!: (code: number) => void;
  /** Resolves with the process exit code once every worker has exited after stop() or a give-up. */
  readonly exited = new Promise<number>((r) => (this.resolveExit = r));
  private readonly logger: Logger;
  private readonly entry = fileURLToPath(new URL('./worker-main.js', import.meta.url));

  constructor(private readonly init: SupervisorInit) {
    this.config = init.config;
    this.logger = init.logger;
    // Generated per start when none is configured; reaches the workers over IPC only, never a log.
    this.meshKey = init.meshKey ?? randomBytes(32);
    this.slots = Array.from({ length: init.config.workers }, (_, index) => ({ index, proc: null, ready: null, restarts: 0, failures: [], timer: null, meshed: false, listenWaiter: null }));
    this.restartCounter = new Counter({ name: 'derp_worker_restarts_total', help: 'Workers restarted after an exit nobody asked for.', labelNames: ['worker'], registers: [this.registry] });
    new Gauge({
      name: 'derp_workers',
      help: 'Worker processes of this host by state (ready: serving; down: exited or starting).',
      labelNames: ['state'],
      registers: [this.registry],
      collect: () => {
        const ready = this.slots.filter((s) => s.ready !== null).length;
        const g = this.registry.getSingleMetric('derp_workers') as Gauge<'state'>;
        g.set({ state: 'ready' }, ready);
        g.set({ state: 'down' }, this.slots.length - ready);
      },
    });
  }

  /**
   * Picks the shared ports (an ephemeral one is chosen here, once, for every worker), starts worker 0
   * (the certificate owner), then the others, then the metrics listener. Rejects with WorkerStartError
   * (and every worker stopped) when one cannot start.
   */
  async start(): Promise<SupervisorReady> {
    this.config = await pinPorts(this.config);
    try {
      // Worker 0 first when it owns the certificate the others are handed; otherwise all at once.
      const owner = this.config.tls.certMode === 'acme' || this.config.tls.certMode === 'self-signed';
      if (owner) await this.startSlot(this.slots[0]!);
      await Promise.all(this.slots.slice(owner ? 1 : 0).map((s) => this.startSlot(s)));
      this.broadcastPeers();
      // The public port waits for the workers' links to each other: before that, a packet between two
      // workers' clients would be dropped (unknown_dest). Bounded: a slow link is warned about, not fatal.
      await this.allMeshed();
      await Promise.all(this.slots.map((s) => this.listenSlot(s)));
      if (this.config.metrics.addr !== null) {
        const routes: Record<string, RouteHandler> = { '/metrics': this.serveMetrics, '/healthz': this.serveHealth, '/debug/workers': this.serveWorkers };
        this.metricsServer = new MetricsServer({ metrics: new RelayMetrics({ defaultMetrics: false }), addr: this.config.metrics.addr, logger: this.logger, routes });
        await this.metricsServer.start();
      }
    } catch (err) {
      this.stopping = true;
      for (const s of this.slots) if (s.proc !== null) s.proc.kill('SIGKILL');
      await Promise.all(this.slots.map((s) => (s.proc === null || s.proc.exitCode !== null ? undefined : new Promise((r) => s.proc!.once('exit', r)))));
      this.releaseLogs();
      if (err instanceof WorkerStartError) throw err;
      throw new WorkerStartError(describeError(err), err instanceof DerpError && err.code === 'DERP_ERR_SERVER' ? EXIT_LISTEN : EXIT_RUNTIME);
    }
    const r = this.slots[0]!.ready!;
    return { url: r.url, port: r.port, stunPort: r.stunPort, httpPort: r.httpPort, certName: r.certName, metricsUrl: this.metricsServer?.url ?? null, pids: this.slots.map((s) => s.ready!.pid), warmUps: this.slots.map((s) => s.ready!.warmUp) };
  }

  /** Forks a worker and resolves when it reports ready; rejects when it fails or exits first. */
  private startSlot(slot: Slot): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const proc = fork(this.entry, [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], serialization: 'advanced', execArgv: process.execArgv });
      slot.proc = proc;
      slot.ready = null;
      slot.meshed = false;
      let started = false;
      let failure: { code: number; message: string } | null = null;
      this.pipeLines(proc.stdout!, 1);
      this.pipeLines(proc.stderr!, 2);
      proc.on('message', (m: FromWorker) => {
        switch (m.t) {
          case 'ready':
            started = true;
            slot.ready = m;
            if (m.cert !== undefined) this.cert = m.cert;
            // A (re)started worker enforces the bans the others made before it could hear of them.
            for (const ban of this.bans.list(Date.now())) this.sendTo(slot, { t: 'ban', ban });
            resolve();
            return;
          case 'failed':
            failure = { code: m.code, message: m.message };
            slot.listenWaiter?.(new WorkerStartError(m.message, m.code));
            return;
          case 'listening':
            slot.listenWaiter?.(null);
            return;
          case 'ban':
            this.bans.adopt(m.ban, Date.now());
            this.toOthers(slot, { t: 'ban', ban: m.ban });
            return;
          case 'cert':
            if (this.cert !== null) this.cert = { mode: this.cert.mode, material: m.material };
            this.toOthers(slot, { t: 'cert', material: m.material });
            return;
          case 'meshed':
            slot.meshed = true;
            for (const w of this.meshWaiters) w();
            return;
          case 'scrape':
          case 'health': {
            const p = this.pending.get(m.id);
            this.pending.delete(m.id);
            p?.(m);
            return;
          }
        }
      });
      proc.on('exit', (code, signal) => {
        if (slot.proc === proc) {
          slot.proc = null;
          slot.ready = null;
        }
        if (!started) {
          const f = failure as { code: number; message: string } | null;
          reject(new WorkerStartError(f?.message ?? `worker ${slot.index} exited (${signal ?? code}) before it was ready`, f?.code ?? EXIT_RUNTIME));
          if (this.released && !this.stopping) this.onUnexpectedExit(slot, code, signal);
          return;
        }
        if (slot.listenWaiter !== null) {
          const f = failure as { code: number; message: string } | null;
          slot.listenWaiter(new WorkerStartError(f?.message ?? `worker ${slot.index} exited (${signal ?? code}) before it listened`, f?.code ?? EXIT_RUNTIME));
          // At start-up, start() stops everything with this worker's code; later it is restarted as usual.
          if (!this.released) return;
        }
        this.onExit(slot, code, signal);
      });
      const cert = slot.index === 0 ? undefined : this.cert;
      const msg: ToWorker = {
        t: 'init',
        index: slot.index,
        config: this.config,
        privateKey: this.init.privateKey.toText(),
        meshKey: this.meshKey.toString('hex'),
        colorize: this.init.colorize,
        ...(this.init.configFile === undefined ? {} : { configFile: this.init.configFile, given: this.init.given }),
        ...(cert === null || cert === undefined ? {} : { cert }),
      };
      proc.send(msg);
    }).then(async () => {
      if (!this.released) return;
      // A restarted worker catches up with the reloads it missed, and takes connections once its links
      // to the others are up (its clients' packets to theirs are not dropped as unknown_dest meanwhile).
      if (this.reloads > 0) this.sendTo(slot, { t: 'reload' });
      this.broadcastPeers();
      await this.meshedOrTimeout([slot]);
      if (this.stopping) return;
      try {
        await this.listenSlot(slot);
      } catch {
        // It exits, and its exit restarts it (or gives up): nothing more here.
        return;
      }
      this.logger.log('info', 'worker restarted', { worker: slot.index, pid: slot.ready?.pid });
    });
  }

  /** Tells a worker to bind the public port; resolves once it does, rejects when it cannot (or exits first). */
  private listenSlot(slot: Slot): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      slot.listenWaiter = (err) => {
        slot.listenWaiter = null;
        if (err === null) resolve();
        else reject(err);
      };
      if (slot.proc === null || !slot.proc.connected) slot.listenWaiter(new WorkerStartError(`worker ${slot.index} is gone`, EXIT_RUNTIME));
      else this.sendTo(slot, { t: 'listen' });
    });
  }

  private onExit(slot: Slot, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping) {
      if (code !== 0 && code !== null && this.exitCode === EXIT_OK) this.exitCode = EXIT_RUNTIME;
      this.checkAllExited();
      return;
    }
    this.onUnexpectedExit(slot, code, signal);
  }

  /** Any exit nobody asked for: siblings forget it, then it is restarted (or the supervisor gives up). */
  private onUnexpectedExit(slot: Slot, code: number | null, signal: NodeJS.Signals | null): void {
    this.broadcastPeers();
    const now = Date.now();
    slot.failures = slot.failures.filter((t) => now - t < CRASH_WINDOW_MS);
    slot.failures.push(now);
    if (slot.failures.length >= CRASH_LOOP_LIMIT) {
      this.logger.log('error', 'worker keeps dying; giving up and stopping every worker', { worker: slot.index, exits: slot.failures.length, windowSeconds: CRASH_WINDOW_MS / 1000, code, signal });
      this.exitCode = EXIT_RUNTIME;
      void this.stop(true);
      return;
    }
    const delay = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (slot.failures.length - 1));
    this.logger.log('warn', 'worker exited unexpectedly; restarting it', { worker: slot.index, code, signal, restartInMs: delay });
    slot.restarts++;
    this.restartCounter.inc({ worker: String(slot.index) });
    slot.timer = setTimeout(() => {
      slot.timer = null;
      if (this.stopping) return;
      this.startSlot(slot).catch((err: unknown) => this.logger.log('error', 'worker restart failed', { worker: slot.index, reason: describeError(err) }));
    }, delay);
  }

  private checkAllExited(): void {
    if (this.slots.every((s) => s.proc === null)) {
      if (this.metricsServer !== null) void this.metricsServer.stop().finally(() => this.resolveExit(this.exitCode));
      else this.resolveExit(this.exitCode);
    }
  }

  private readonly meshWaiters = new Set<() => void>();

  /** Until every worker's links are up, bounded by SIBLING_MESH_WAIT_MS (then warned about). */
  private allMeshed(): Promise<void> {
    return this.meshedOrTimeout(this.slots);
  }

  private meshedOrTimeout(slots: Slot[]): Promise<void> {
    if (slots.every((s) => s.meshed)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.meshWaiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.logger.log('warn', 'workers are not all meshed with each other yet; serving anyway', { meshed: slots.filter((s) => s.meshed).length, workers: slots.length, waitedMs: SIBLING_MESH_WAIT_MS });
        done();
      }, SIBLING_MESH_WAIT_MS);
      const check = (): void => {
        if (slots.every((s) => s.meshed)) done();
      };
      this.meshWaiters.add(check);
    });
  }

  /** Every ready worker hears every ready worker's mesh port (it skips its own). */
  private broadcastPeers(): void {
    if (this.stopping) return;
    const ports = this.slots.flatMap((s) => (s.ready === null ? [] : [s.ready.meshPort]));
    for (const s of this.slots) if (s.ready !== null) this.sendTo(s, { t: 'peers', ports });
  }

  /** To every ready worker but `from` (what one worker made that the others must have too). */
  private toOthers(from: Slot, m: ToWorker): void {
    for (const s of this.slots) if (s !== from && s.ready !== null) this.sendTo(s, m);
  }

  private sendTo(slot: Slot, m: ToWorker): void {
    const p = slot.proc;
    if (p === null || !p.connected) return;
    p.send(m, (err) => {
      if (err !== null && err !== undefined) this.logger.log('debug', 'IPC to a worker failed', { worker: slot.index, reason: describeError(err) });
    });
  }

  /** The workers' log lines, whole, on our own stdout/stderr; held until the "listening" line is out. */
  private pipeLines(stream: NodeJS.ReadableStream, fd: 1 | 2): void {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const text = rest + chunk;
      const lines = text.split('\n');
      rest = lines.pop()!;
      for (const line of lines) this.emitLine(fd, line);
    });
    stream.on('end', () => {
      if (rest !== '') this.emitLine(fd, rest);
      rest = '';
    });
  }

  private emitLine(fd: 1 | 2, line: string): void {
    if (!this.released) {
      if (this.held.length >= HELD_LINES_MAX) this.held.shift();
      this.held.push({ fd, line });
      return;
    }
    (fd === 1 ? process.stdout : process.stderr).write(`${line}\n`);
  }

  /** Called once the "listening" line is written: the held worker lines follow it. */
  releaseLogs(): void {
    if (this.released) return;
    this.released = true;
    for (const h of this.held) (h.fd === 1 ? process.stdout : process.stderr).write(`${h.line}\n`);
    this.held = [];
  }

  /** SIGHUP: every worker reloads (each logs its own outcome). */
  reload(): void {
    this.reloads++;
    for (const s of this.slots) this.sendTo(s, { t: 'reload' });
  }

  /** SIGTERM: every worker drains and stops; `hurry` (a second signal) cuts their drain short. */
  stop(hurry = false): Promise<number> {
    const first = !this.stopping;
    this.stopping = true;
    for (const s of this.slots) {
      if (s.timer !== null) clearTimeout(s.timer);
      s.timer = null;
      // One still starting has no clients and no handler for 'stop' yet.
      if (s.proc !== null && s.ready === null) s.proc.kill('SIGKILL');
      else if (first || hurry) this.sendTo(s, { t: hurry ? 'hurry' : 'stop' });
    }
    this.checkAllExited();
    return this.exited;
  }

  // ---------------------------------------------------------------- metrics and health

  private query(slot: Slot, t: 'scrape' | 'health'): Promise<FromWorker | null> {
    if (slot.ready === null || slot.proc === null || !slot.proc.connected) return Promise.resolve(null);
    const id = ++this.queryId;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(null);
      }, QUERY_TIMEOUT_MS);
      this.pending.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.sendTo(slot, { t, id });
    });
  }

  /** The workers' registries summed (AggregatorRegistry), plus the supervisor's own metrics. */
  async metricsText(): Promise<string> {
    const replies = await Promise.all(this.slots.map((s) => this.query(s, 'scrape')));
    const sets: MetricObjectWithValues<MetricValue<string>>[][] = [];
    for (const r of replies) {
      if (r === null || r.t !== 'scrape') continue;
      for (const m of r.metrics) {
        const a = AGGREGATORS[m.name];
        if (a !== undefined) m.aggregator = a;
      }
      sets.push(r.metrics);
    }
    const merged = Registry.merge([AggregatorRegistry.aggregate(sets), this.registry]);
    return merged.metrics();
  }

  private readonly serveMetrics: RouteHandler = (req, res) => {
    this.metricsText().then(
      (body) => {
        res.writeHead(200, { 'Content-Type': this.registry.contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        this.logger.log('error', 'metrics scrape failed', { reason: describeError(err) });
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('metrics collection failed\n');
      },
    );
  };

  /** Every worker: pid, ports, clients, health (also what /healthz and the tests read). */
  async workers(): Promise<{ index: number; pid: number | null; ready: boolean; restarts: number; clients: number | null; ok: boolean; problems: string[] }[]> {
    const replies = await Promise.all(this.slots.map((s) => this.query(s, 'health')));
    return this.slots.map((s, i) => {
      const r = replies[i];
      const h = r !== null && r !== undefined && r.t === 'health' ? r : null;
      const problems = s.ready === null ? ['not running (starting or restarting)'] : h === null ? ['did not answer'] : h.problems;
      return { index: s.index, pid: s.ready?.pid ?? null, ready: s.ready !== null, restarts: s.restarts, clients: h?.clients ?? null, ok: h !== null && h.ok, problems };
    });
  }

  /** 200 only when every worker is up, healthy and not draining; the body names each problem. */
  private readonly serveHealth: RouteHandler = (req, res) => {
    void this.workers().then((ws) => {
      const problems = ws.flatMap((w) => w.problems.map((p) => `worker ${w.index}: ${p}`));
      if (this.stopping) problems.unshift('draining: stopping after SIGTERM');
      const body = problems.length === 0 ? 'ok\n' : `unhealthy\n${problems.map((p) => `${p}\n`).join('')}`;
      res.writeHead(problems.length === 0 ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  };

  private readonly serveWorkers: RouteHandler = (_req, res) => {
    void this.workers().then((ws) => {
      const body = `${JSON.stringify({ workers: ws })}\n`;
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
      res.end(body);
    });
  };
}

/** Port 0 for the relay or STUN: chosen once here (bound with reusePort, read, closed) for every worker. */
async function pinPorts(c: ServeConfig): Promise<ServeConfig> {
  let out = c;
  const { host, port } = parseListenAddr(c.addr);
  if (port === 0) {
    const p = await freeTcpPort(host);
    out = { ...out, addr: `${host === undefined ? '' : host.includes(':') ? `[${host}]` : host}:${p}` };
  }
  if (c.stun.enabled && c.stun.port === 0) out = { ...out, stun: { ...out.stun, port: await freeUdpPort(host) } };
  return out;
}

function freeTcpPort(host: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', (err) => reject(new DerpError('DERP_ERR_SERVER', `cannot pick a port on ${host ?? 'all interfaces'}: ${describeError(err)}`, { cause: err })));
    s.listen({ host, port: 0, reusePort: true }, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function freeUdpPort(host: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type: host !== undefined && net.isIPv6(host) ? 'udp6' : 'udp4', reusePort: true });
    s.once('error', (err) => reject(new DerpError('DERP_ERR_SERVER', `cannot pick a STUN port: ${describeError(err)}`, { cause: err })));
    s.bind({ port: 0, address: host ?? '0.0.0.0' }, () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}
