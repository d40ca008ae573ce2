/**
 * One relay node as `derp serve` runs it, built from a ServeConfig: the relay and its certificate
 * source, STUN, the port-80 listener, metrics, `/healthz` and `/derpmap`; SIGHUP reloads that keep
 * every connection; a graceful stop that reports draining first.
 */
import { readFile } from 'node:fs/promises';
import { AbuseMonitor, abuseDebugRoutes, ipIdentity, keyIdentity, registerAbuseMetrics, type Ban } from '../abuse/index.js';
import { createAdmission, type Admission } from '../admission/index.js';
import { createCertSource, type CertEvent, type CertSource } from '../certs/index.js';
import { ConfigFileError, DerpError, describeError, formatConfigIssue, type ConfigIssue } from '../errors.js';
import { regionMapJson, relayLimits, workerShare, type ServeConfig, type ServeLimits } from '../config/index.js';
import { loadOrCreateKeyFile } from '../keys/keyfile.js';
import { MeshDiscovery, MeshLinks, parseMeshWith, readMeshKeyFile, type MeshLookup, type MeshTarget } from '../mesh/index.js';
import { MetricsServer, RelayMetrics, debugRoutes } from '../metrics/index.js';
import { NodePrivateKey } from '../protocol/keys.js';
import { Port80Server, RelayServer, parseListenAddr, type RouteHandler } from '../server/index.js';
import { StunServer } from '../stun/index.js';
import type { LogLevel, Logger } from '../util/logger.js';
import { assessHealth, healthHandler, type HealthStatus } from './health.js';

export interface RelayNodeInit {
  config: ServeConfig;
  logger: Logger;
  /** Applies `log.level` (at start and on reload). */
  setLogLevel?: (level: LogLevel) => void;
  /** Re-reads the configuration for a reload; absent = no file (certificates are still re-read). */
  loadConfig?: () => Promise<ServeConfig>;
  /** The node's key; default: from `config.keyFile`, or an ephemeral one (dev). */
  privateKey?: NodePrivateKey;
  /** Shared with callers that want to read or extend the registry (default: a fresh one). */
  metrics?: RelayMetrics;
  /** The mesh key when the config names no mesh.pskFile (workers of one host share a generated one). */
  meshKey?: Buffer;
  /** How mesh.with names are resolved (default: the system resolver); tests answer with their own. */
  meshLookup?: MeshLookup;
  now?: () => number;
  /** Set when this node is one worker of `--workers N` (worker.ts). */
  worker?: WorkerRole;
}

/**
 * What changes for one worker of a host: shared ports, a private mesh listener, the parent's metrics;
 * its relay binds the public port only when the parent says so (relay.listenPublic).
 */
export interface WorkerRole {
  /** The private loopback listener for sibling mesh links ("127.0.0.1:0"). */
  meshListen: string;
  /** Only worker 0 runs the port-80 listener (it holds the ACME HTTP-01 tokens). */
  port80: boolean;
  /** Replaces the configured certificate source (worker 0's certificate, pushed over IPC). */
  certSource?: CertSource;
  /** This worker's index among `count`: it enforces its share of the host's connection limits. */
  share?: { index: number; count: number };
  /** A ban this worker's detectors made, for the parent to hand to the others (adoptBan there). */
  onBan?: (ban: Ban) => void;
}

export interface ReloadOutcome {
  ok: boolean;
  /** What was wrong with the new file, or the refused certificate. */
  problems: string[];
  /** Fields that changed but only take effect on a restart. */
  restartNeeded: string[];
}

/** Fields a reload applies at once; every other changed field waits for a restart (and says so). */
const LIVE_FIELDS = new Set([
  'log', 'trustedProxies', 'derpMap', 'drainSeconds', 'tls.marginDays', 'configFile', 'admission', 'abuse',
  'limits.clientRate', 'limits.clientBurst', 'limits.perKey', 'limits.acceptRate', 'limits.acceptBurst', 'limits.maxConnsPerIp', 'limits.maxConns', 'limits.maxPendingHandshakes',
  'limits.handshakeShare',
]);

function flatten(v: unknown, prefix: string, out: Map<string, string>): void {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix === '' ? k : `${prefix}.${k}`, out);
  } else out.set(prefix, JSON.stringify(v));
}

/** Dotted names of fields whose value differs, live ones left out. */
function restartOnlyChanges(a: ServeConfig, b: ServeConfig): string[] {
  const fa = new Map<string, string>();
  const fb = new Map<string, string>();
  flatten({ ...a, derpMap: null }, '', fa);
  flatten({ ...b, derpMap: null }, '', fb);
  const changed: string[] = [];
  for (const k of new Set([...fa.keys(), ...fb.keys()])) {
    if (fa.get(k) === fb.get(k)) continue;
    const live = [...LIVE_FIELDS].some((f) => k === f || k.startsWith(`${f}.`));
    if (!live) changed.push(k);
  }
  return changed.sort();
}

/** Where mesh.with came from, for its error and log messages: the flag, or the config file's field. */
function meshSource(c: ServeConfig): string {
  return c.configFile === null ? '--mesh-with' : `${c.configFile} mesh.with`;
}

/** STUN binds where the relay listens: the same host, or every interface (IPv4 and, if present, IPv6). */
function stunBinding(addr: string): { host?: string; ipv6?: boolean | 'auto' } {
  const { host } = parseListenAddr(addr);
  if (host === undefined || host === '') return { host: '0.0.0.0', ipv6: 'auto' };
  return { host };
}

export class RelayNode {
  readonly relay: RelayServer;
  readonly metrics: RelayMetrics;
  readonly certs: CertSource | null;
  readonly privateKey: NodePrivateKey;
  readonly admission: Admission;
  readonly abuse: AbuseMonitor;
  stun: StunServer | null = null;
  metricsServer: MetricsServer | null = null;
  port80: Port80Server | null = null;
  /** Links to the region's other nodes (mesh.with); null without a mesh. */
  mesh: MeshLinks | null = null;
  meshDiscovery: MeshDiscovery | null = null;
  /** Settles once the mesh links were started (the first resolution done); never rejects. */
  meshReady: Promise<void> = Promise.resolve();
  private cfg: ServeConfig;
  private derpMapText: string | null;
  private draining = false;
  private stopped: Promise<void> | null = null;
  private reloading: Promise<ReloadOutcome> | null = null;
  private readonly logger: Logger;
  private readonly now: () => number;

  private constructor(
    private readonly init: RelayNodeInit,
    privateKey: NodePrivateKey,
    certs: CertSource | null,
    admission: Admission,
    private readonly meshKey: Buffer | null,
    private readonly meshTargets: MeshTarget[],
  ) {
    this.admission = admission;
    this.cfg = init.config;
    this.logger = init.logger;
    this.now = init.now ?? Date.now;
    this.privateKey = privateKey;
    this.certs = certs;
    this.metrics = init.metrics ?? new RelayMetrics();
    this.derpMapText = regionMapJson(this.cfg);
    this.abuse = new AbuseMonitor({
      settings: this.cfg.abuse,
      logger: this.logger,
      trustedProxies: this.cfg.trustedProxies,
      isAllowListed: (key) => admission.staticLists.isAllowed(keyIdentity(key)),
      onBan: (ban) => {
        this.disconnectBanned(ban);
        init.worker?.onBan?.(ban);
      },
    });
    const routes: Record<string, RouteHandler> = { ...debugRoutes(this.metrics, abuseDebugRoutes(this.abuse)), '/healthz': this.healthz, '/derpmap': this.serveDerpMap };
    const l = this.cfg.limits;
    this.relay = new RelayServer({
      privateKey, addr: this.cfg.addr, certSource: certs ?? undefined, reusePort: init.worker !== undefined, deferListen: init.worker !== undefined, meshListen: init.worker?.meshListen, logger: this.logger, trustedProxies: this.cfg.trustedProxies, routes,
      handshakeTimeoutMs: l.handshakeTimeoutSeconds * 1000, writeTimeoutMs: l.writeTimeoutSeconds * 1000, ...this.relayLimits(l),
      cryptoThread: this.cfg.handshakeThread,
      warmUpHandshakes: this.cfg.warmUpHandshakes,
      admit: (req) => admission.check(req),
      onAbuse: this.abuse.onAbuse,
      isBanned: this.abuse.isBanned,
      ...(meshKey === null ? {} : { meshKey }),
    });
    // /debug/varz reads the counters either way; durations and RTT pings only when /metrics is served.
    this.metrics.attachRelay(this.relay, { observe: this.cfg.metrics.addr !== null });
    this.metrics.attachAdmission(() => admission.stats().decisions);
    registerAbuseMetrics(this.metrics.registry, this.abuse);
  }

  /** Another worker's ban (`--workers`): enforced here too, the identity's connections here closed. */
  adoptBan(ban: Ban): void {
    if (this.abuse.adopt(ban)) this.disconnectBanned(ban);
  }

  /** A new ban also ends the identity's open connections (an IPv6 ban covers its /64). */
  private disconnectBanned(ban: Ban): void {
    const n = this.relay.closeConnections((c) => (ban.type === 'key' ? c.key !== null && keyIdentity(c.key) === ban.identity : ipIdentity(c.remoteAddress) === ban.identity), `banned: ${ban.kind}`);
    if (n > 0) this.logger.log('warn', 'closed connections of a banned identity', { identity: ban.type === 'key' ? ban.identity.slice(0, 16) : ban.identity, connections: n });
  }

  get config(): ServeConfig {
    return this.cfg;
  }

  /**
   * Loads the key and the first certificate, then binds every listener. Fails with ConfigError /
   * KeyFileError / CertificateError (bad input: nothing started) or DERP_ERR_SERVER (cannot listen:
   * whatever had started is stopped again).
   */
  static async start(init: RelayNodeInit): Promise<RelayNode> {
    const c = init.config;
    init.setLogLevel?.(c.log.level);
    const privateKey = init.privateKey ?? (c.keyFile !== null ? (await loadOrCreateKeyFile(c.keyFile)).key : NodePrivateKey.generate());
    let certs: CertSource | null = init.worker?.certSource ?? null;
    if (c.tls.certMode !== 'none' && certs === null) {
      const acme = c.tls.certMode === 'acme';
      const acmeDirectoryCa = acme && c.tls.acme.caFile !== undefined ? await readCaFile(c.tls.acme.caFile) : undefined;
      certs = createCertSource(
        {
          certMode: c.tls.certMode,
          tlsCert: c.tls.certFile,
          tlsKey: c.tls.keyFile,
          selfSigned: c.tls.selfSigned,
          hostname: c.tls.hostname,
          ...(acme ? { acmeEmail: c.tls.acme.email, acmeDirectory: c.tls.acme.directory, certDir: c.tls.certDir, httpPort: c.httpPort, acmeDirectoryCa } : {}),
        },
        init.logger,
      );
    }
    // Mesh settings are checked before anything listens: a bad key file or entry stops the start.
    let meshKey = init.meshKey ?? null;
    if (c.mesh.pskFile !== null) {
      const f = await readMeshKeyFile(c.mesh.pskFile);
      if (f.warning !== undefined) init.logger.log('warn', f.warning, { file: c.mesh.pskFile });
      meshKey = f.key;
    }
    const meshTargets = c.mesh.with.length === 0 ? [] : parseMeshWith(c.mesh.with, { source: meshSource(c) });
    // Before any listener: a bad key list fails the start, and a tailnet list is fetched once first.
    const admission = await createAdmission(c.admission, { logger: init.logger });
    const node = new RelayNode(init, privateKey, certs, admission, meshKey, meshTargets);
    try {
      await node.listen();
    } catch (err) {
      await node.stopListeners();
      throw err;
    }
    // After the caller's "listening" line (the first line tools read); meshReady says when it is up.
    node.meshReady = new Promise<void>((resolve) => setImmediate(resolve)).then(() => node.startMesh());
    return node;
  }

  private async listen(): Promise<void> {
    const c = this.cfg;
    const certs = this.certs;
    // Before the certificate source starts: an ACME order begins at once and needs the listeners.
    await this.relay.warmUp();
    if (certs !== null) {
      certs.on('event', this.onCertEvent);
      certs.on('change', (m) => this.metrics.setCertificate(m.notAfter, certs.mode));
      await certs.start();
      this.metrics.setCertificate(certs.current().notAfter, certs.mode);
    }
    await this.relay.start();
    if (certs !== null && c.httpPort !== -1 && this.init.worker?.port80 !== false) {
      const { host } = parseListenAddr(c.addr);
      this.port80 = new Port80Server({ host, port: c.httpPort, hostname: c.tls.hostname, httpsPort: this.relay.port, challenges: certs.challenges, logger: this.logger });
      await this.port80.start();
    }
    if (c.stun.enabled) {
      this.stun = new StunServer({ ...stunBinding(c.addr), port: c.stun.port, reusePort: this.init.worker !== undefined, rateLimitPerSecond: c.stun.rateLimit, logger: this.logger });
      await this.stun.start();
      this.metrics.attachStun(this.stun);
    }
    // A worker's metrics are scraped by the parent over IPC (supervisor.ts).
    if (c.metrics.addr !== null && this.init.worker === undefined) {
      this.metricsServer = new MetricsServer({ metrics: this.metrics, addr: c.metrics.addr, logger: this.logger, routes: { '/healthz': this.healthz } });
      await this.metricsServer.start();
    }
  }

  /** Links to every node mesh.with names (re-resolved), once the relay listens (a peer may dial back at once). */
  private async startMesh(): Promise<void> {
    const c = this.cfg;
    if (this.meshTargets.length === 0 || this.meshKey === null || this.stopped !== null) return;
    const links = new MeshLinks({
      relay: this.relay,
      privateKey: this.privateKey,
      serverPublicKey: this.privateKey.publicKey,
      meshKey: this.meshKey,
      secure: c.tls.certMode !== 'none',
      ...(c.mesh.caFile === null ? {} : { tls: { caFile: c.mesh.caFile } }),
      logger: this.logger,
    });
    this.mesh = links;
    this.metrics.attachMesh(() => links.status());
    const discovery = new MeshDiscovery({
      targets: this.meshTargets,
      // A peer without a port listens where this node does (derper: the same -a everywhere).
      defaultPort: parseListenAddr(c.addr).port || this.relay.port,
      intervalMs: c.mesh.resolveSeconds * 1000,
      logger: this.logger,
      ...(this.init.meshLookup === undefined ? {} : { lookup: this.init.meshLookup }),
      source: meshSource(c),
    });
    this.meshDiscovery = discovery;
    this.metrics.attachMeshDiscovery(() => discovery.stats());
    discovery.on('change', (endpoints) => links.setEndpoints(endpoints));
    try {
      links.setEndpoints(await discovery.start());
    } catch (err) {
      // Not strict: unresolvable names are retried by discovery itself; anything else is logged here.
      this.logger.log('error', 'mesh discovery failed to start', { reason: describeError(err) });
    }
  }

  /** The relay's limits from `l`; a worker enforces its share of the connection limits (workerShare). */
  private relayLimits(l: ServeLimits): ReturnType<typeof relayLimits> {
    const r = relayLimits(l);
    const share = this.init.worker?.share;
    return share === undefined ? r : { ...r, connectionLimits: workerShare(r.connectionLimits, share.index, share.count) };
  }

  health(): HealthStatus {
    const listeners: Record<string, boolean> = { relay: this.relay.healthCheck().listening };
    if (this.stun !== null) listeners.STUN = this.stun.listening;
    if (this.port80 !== null) listeners['port-80'] = this.port80.listening;
    if (this.metricsServer !== null) listeners.metrics = this.metricsServer.listening;
    return assessHealth({
      draining: this.draining,
      listeners: this.draining ? {} : listeners,
      certificate: this.certs?.current() ?? null,
      marginDays: this.cfg.tls.marginDays,
      now: this.now(),
    });
  }

  /**
   * SIGHUP: re-reads the file (if any) and the certificates. An invalid file changes nothing and
   * logs every problem; a valid one applies the log level, trusted proxies, /derpmap, the drain time
   * and the certificate margin at once, and names any other changed field as needing a restart.
   */
  reload(): Promise<ReloadOutcome> {
    // Signals can arrive faster than a reload finishes: run them one after another.
    const run = async (): Promise<ReloadOutcome> => {
      // A reload also re-resolves the mesh's names now rather than at the next interval.
      void this.meshDiscovery?.refresh();
      const problems: string[] = [];
      let restartNeeded: string[] = [];
      let next = this.cfg;
      if (this.init.loadConfig !== undefined) {
        try {
          next = await this.init.loadConfig();
        } catch (err) {
          const issues: readonly ConfigIssue[] = err instanceof ConfigFileError ? err.issues : [];
          if (issues.length > 0) for (const i of issues) problems.push(formatConfigIssue(i));
          else problems.push(describeError(err));
          for (const p of problems) this.logger.log('error', 'reload refused: invalid configuration, keeping the running one', { problem: p });
          this.metrics.noteReload('failed');
          return { ok: false, problems, restartNeeded };
        }
      }
      try {
        // Refuses a bad new list (KeyListError) and keeps the running one.
        await this.admission.reload(next.admission);
        this.relay.setTrustedProxies(next.trustedProxies);
        // Bans survive; thresholds change; `abuse.lift` lifts; allow-list changes refresh the exemptions.
        this.abuse.reload(next.abuse);
        this.abuse.setTrustedProxies(next.trustedProxies);
        this.abuse.refreshExemptions();
        const limits = this.relayLimits(next.limits);
        this.relay.setClientLimits(limits.clientLimits);
        this.relay.setConnectionLimits(limits.connectionLimits);
      } catch (err) {
        problems.push(describeError(err));
      }
      if (problems.length === 0) {
        restartNeeded = restartOnlyChanges(this.cfg, next);
        this.init.setLogLevel?.(next.log.level);
        this.derpMapText = regionMapJson(next);
        // Restart-only fields keep their running values, so health and later reloads compare with what runs.
        this.cfg = { ...this.cfg, log: next.log, trustedProxies: next.trustedProxies, admission: next.admission, abuse: next.abuse, derpMap: next.derpMap, drainSeconds: next.drainSeconds, tls: { ...this.cfg.tls, marginDays: next.tls.marginDays },
          limits: { ...next.limits, handshakeTimeoutSeconds: this.cfg.limits.handshakeTimeoutSeconds, writeTimeoutSeconds: this.cfg.limits.writeTimeoutSeconds } };
        for (const f of restartNeeded) this.logger.log('warn', 'changed field takes effect on restart', { field: f });
      }
      if (this.certs !== null) {
        const r = await this.certs.reload();
        if (r.error !== undefined) problems.push(`certificate: ${describeError(r.error)}`);
      }
      const ok = problems.length === 0;
      this.metrics.noteReload(ok ? 'ok' : 'failed');
      if (ok) this.logger.log('info', 'reloaded', { file: this.cfg.configFile ?? undefined, restartNeeded: restartNeeded.length > 0 ? restartNeeded.join(',') : undefined });
      else for (const p of problems) this.logger.log('error', 'reload failed, keeping the running settings', { problem: p });
      return { ok, problems, restartNeeded };
    };
    const prev = this.reloading ?? Promise.resolve(null);
    const p = prev.then(run, run);
    this.reloading = p;
    return p;
  }

  /**
   * SIGTERM: /healthz reports draining for `drainSeconds` (load balancers take the node out), then
   * every client gets Restarting and the listeners close. `signal` cuts the drain short.
   */
  stop(signal?: AbortSignal): Promise<void> {
    this.stopped ??= (async () => {
      this.draining = true;
      const ms = this.cfg.drainSeconds * 1000;
      if (ms > 0 && signal?.aborted !== true) {
        this.logger.log('info', 'draining', { seconds: this.cfg.drainSeconds });
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, ms);
          signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
        });
      }
      await this.stopListeners();
    })();
    return this.stopped;
  }

  private async stopListeners(): Promise<void> {
    this.meshDiscovery?.stop();
    const results = await Promise.allSettled([
      this.mesh?.stop(),
      this.relay.healthCheck().listening ? this.relay.stop() : Promise.resolve(),
      this.stun?.stop(),
      this.port80?.stop(),
      this.metricsServer?.stop(),
      this.certs?.close(),
      this.admission.close(),
    ]);
    this.metrics.detach();
    for (const r of results) if (r.status === 'rejected') this.logger.log('error', 'error while stopping', { reason: describeError(r.reason) });
  }

  private readonly onCertEvent = (e: CertEvent): void => {
    if (e.type !== 'scheduled') this.metrics.noteCertificateEvent(e.type);
    switch (e.type) {
      case 'loaded':
        // Debug: at start-up the "listening" line stays the first line a tool reads.
        this.logger.log('debug', 'certificate loaded', { origin: e.origin, notAfter: e.notAfter.toISOString(), sha256: e.sha256 });
        return;
      case 'issued':
      case 'renewed':
        this.logger.log('info', `certificate ${e.type}`, { origin: e.origin, notAfter: e.notAfter.toISOString(), sha256: e.sha256 });
        return;
      case 'refused':
        this.logger.log('error', 'certificate refused, keeping the one in use', { origin: e.origin, reason: e.reason });
        return;
      case 'failed':
        this.logger.log('error', 'certificate issuance failed', { origin: e.origin, reason: e.reason, attempt: e.attempt, nextAttempt: e.nextAttempt.toISOString() });
        return;
      case 'scheduled':
        this.logger.log('debug', 'certificate renewal scheduled', { origin: e.origin, at: e.nextAttempt.toISOString() });
    }
  };

  /** /healthz, on the relay port and the metrics listener. */
  private readonly healthz: RouteHandler = healthHandler(() => this.health());

  private readonly serveDerpMap: RouteHandler = (req, res) => {
    const text = this.derpMapText;
    if (text === null) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('no region configured (derp.servers)\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : text);
  };
}

async function readCaFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new DerpError('DERP_ERR_CONFIG', `cannot read tls.acme.caFile ${file}: ${describeError(err)}`, { cause: err, context: { file } });
  }
}
