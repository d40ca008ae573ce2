/**
 * The DERP relay server: one HTTP/1.1 (or HTTPS) listener that serves derper's endpoints and upgrades
 * `/derp` to the DERP byte stream (raw, fast start, or WebSocket), plus the seed's RelayServer API.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket, type Server as TlsServer } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { installTlsAlpnChallenges } from '../certs/alpn.js';
import type { CertMaterial, CertSource } from '../certs/source.js';
import { ConfigError, DerpError, PacketTooLargeError, describeError } from '../errors.js';
import {
  HANDSHAKE_TIMEOUT_MS,
  Headers,
  KEY_LEN,
  MAX_PACKET_SIZE,
  PER_CLIENT_SEND_QUEUE_DEPTH,
  WRITE_TIMEOUT_MS,
  WS_SUBPROTOCOL,
} from '../protocol/constants.js';
import { encode } from '../protocol/frames.js';
import { buildUpgradeResponse } from '../protocol/http.js';
import { formatNodePublic, parseNodePublic, type NodePrivateKey } from '../protocol/keys.js';
import { silentLogger, type LogFields, type Logger } from '../util/logger.js';
import { ClientConn, type ClientConnInfo, type Forwarded } from './conn.js';
import { parseDerpUpgradeHead } from './fasthead.js';
import { TrustedProxies, normalizeIp } from './forwarded.js';
import type { AbuseHook, AdmitFn, BanCheck, PacketForwarder } from './hooks.js';
import { ClientLimits, ConnectionCounter, EventBucket, sourceKey, type ClientLimitsInit } from './limits.js';
import { serveNoContent } from './nocontent.js';
import {
  DEFAULT_ADDR,
  DEFAULT_RESTART_RECONNECT_IN_MS,
  DEFAULT_RESTART_TRY_FOR_MS,
  ACCEPT_PAUSE_LOG_MS, ACCEPT_BACKLOG_RESTORE_MS,
  ACCEPT_PAUSE_MIN_MS,
  ACCEPT_PAUSED_BACKLOG_MIN,
  ACCEPT_QUEUE_MAX,
  ACCEPT_REOPEN_RETRY_MS,
  FIRST_READS_PER_TURN,
  TLS_HANDSHAKES_PER_TURN,
  HEAD_EXPIRIES_PER_TURN,
  LISTEN_BACKLOG,
  SNIFF_HEAD_MAX_BYTES,
  STOP_GRACE_MS,
  TCP_KEEPALIVE_MS,
  WS_CLOSE_POLICY,
  WS_MAX_PAYLOAD,
} from './constants.js';
import { CryptoThread, type CryptoThreadOptions } from './crypto-thread.js';
import { Hub } from './hub.js';
import type { RelayObserver } from './observer.js';
import { DROP_REASONS, snapshotStats, type RelayStats } from './stats.js';
import { TurnRunner } from './turns.js';
import { warmUpAgainst, type WarmUpResult } from './warmup.js';

export type { ClientConnInfo, Transport } from './conn.js';
export type { HandshakeResult, RelayObserver } from './observer.js';
export type { RelayStats, DropReason, RefuseReason } from './stats.js';
export type { AbuseEvent, AbuseHook, AbuseWho, AdmitDecision, AdmitFn, AdmitRequest, BanCheck, PacketForwarder } from './hooks.js';
export type { ByteRate, ClientLimitsInit } from './limits.js';
export type { WarmUpResult } from './warmup.js';

/** DDoS limits on connections (each 0 or absent = off); RelayServer.setConnectionLimits changes them live. */
export interface ConnectionLimits {
  /** Accepted TCP connections per second (derper --accept-connection-limit); excess closed at once. */
  acceptRate?: number;
  /** Accept-rate burst (derper --accept-connection-burst); default one second of acceptRate, at least 1. */
  acceptBurst?: number;
  /** Concurrent connections per client IPv4 address or IPv6 /64 (the real client behind a trusted proxy). */
  maxConnsPerIp?: number;
  /** Concurrent TCP connections in total. */
  maxConns?: number;
  /** Connections between the upgrade and ServerInfo (ClientInfo wait and admission). */
  maxPendingHandshakes?: number;
  /** Share (0–1) of the event loop ClientInfo work may take while clients relay (Hub.setHandshakeShare); 0 = off. */
  handshakeShare?: number;
}

export interface RelayServerInit {
  privateKey: NodePrivateKey;
  /** "host:port"; default "127.0.0.1:3340"; port 0 = ephemeral; "[::1]:0" ok; ":443" = all interfaces. */
  addr?: string;
  /** PEM certificate chain and key; absent (and no certSource) = plain HTTP. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /**
   * Where the certificate comes from instead of `tls` (certs/): read at start, swapped live on its
   * 'change' events, and its TLS-ALPN-01 challenges answered on this port. Started and closed by the caller.
   */
  certSource?: CertSource;
  logger?: Logger;
  /** Deadline for ClientInfo after the upgrade (default 10 s, spec §3.7). */
  handshakeTimeoutMs?: number;
  /**
   * Open ClientInfo frames (X25519, both boxes) on a worker thread, off the event loop (crypto-thread.ts);
   * options choose another thread entry (tests). Default false: inline.
   */
  cryptoThread?: boolean | CryptoThreadOptions;
  /** Exact keepalive interval; default 60 s plus a fixed per-connection jitter in [0, 5 s). */
  keepAliveMs?: number;
  /** Per-kind send queue depth for slow receivers (default 32). */
  sendQueueDepth?: number;
  /** Close a receiver whose writes stay blocked this long (default 2 s; 0 disables). */
  writeTimeoutMs?: number;
  /**
   * Start everything but the public listener, which listenPublic() binds later: a --workers worker
   * takes connections only once its sibling links are up (before, a packet to a sibling's client
   * would be dropped as unknown_dest). The port must then be a real one, not 0.
   */
  deferListen?: boolean;
  /** After an accept-rate pause, how long without another before the full listen backlog is back (tests shorten it). */
  acceptBacklogRestoreMs?: number;
  /** Idle time before TCP keepalive probes start (default TCP_KEEPALIVE_MS; 0 disables): frees half-open peers. */
  tcpKeepAliveMs?: number;
  /**
   * How often the relay pings each client that can answer (ClientInfo.CanAckPings) to time its Pong,
   * while an observer is attached (setObserver). Default: each connection's keepalive interval; 0 = never.
   */
  pingIntervalMs?: number;
  /** Extra HTTP endpoints by exact path (e.g. /healthz, /metrics' derper names), served before the 404. */
  routes?: Record<string, RouteHandler>;
  /**
   * Reverse proxies (CIDRs or addresses, IPv4/IPv6) whose X-Forwarded-For names the real client.
   * Default none: the header is ignored from everyone. A bad entry makes start() throw ConfigError.
   */
  trustedProxies?: readonly string[];
  /**
   * Admission (spec §11): called after ClientInfo is opened, before the client is registered or sent
   * ServerInfo; refused = closed without ServerInfo. Absent = everyone is admitted. See setAdmit().
   */
  admit?: AdmitFn;
  /** Per-client byte rate limits (spec §9); see setClientLimits(). A bad value makes the constructor throw ConfigError. */
  clientLimits?: ClientLimitsInit;
  /** Connection limits (accept rate, per IP, total, pending handshakes); see setConnectionLimits(). */
  connectionLimits?: ConnectionLimits;
  /** Abuse events for the detectors (fan-out, absent peers, handshake failures, violations, refusals). */
  onAbuse?: AbuseHook;
  /** Bans: checked with the IP at accept (and after the head for proxied clients) and with the key at admission. */
  isBanned?: BanCheck;
  /** The region's 32-byte mesh key (spec §10.1): clients that present it are mesh peers. Absent = none. */
  meshKey?: Buffer;
  /** SO_REUSEPORT on the listener: several processes (the workers of one host) share the port. Default false. */
  reusePort?: boolean;
  /**
   * A second, private listener ("host:port", e.g. "127.0.0.1:0"): plain HTTP, the same endpoints and DERP
   * upgrade, no TCP accept limits. For mesh links between the workers of one host; see meshPort.
   */
  meshListen?: string;
  /**
   * Before it listens, this many handshakes with a private loopback instance of this relay, so the
   * first clients meet compiled code (warmup.ts; see warmUp()). Default 0.
   */
  warmUpHandshakes?: number;
}

/** What the accept gate hangs on a TCP socket it counted. */
const COUNTED = Symbol('derp.counted');
type CountedSocket = Socket & { [COUNTED]?: { counter: ConnectionCounter; source: string; stats: RelayStats } };

function onCountedClose(this: CountedSocket): void {
  const c = this[COUNTED];
  if (c === undefined) return;
  this[COUNTED] = undefined;
  c.counter.remove(c.source);
  c.stats.openConnections = c.counter.total;
}

/** An extra endpoint on the relay's HTTP listener. */
export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface StopOptions {
  /** Restarting frame for every client (default 500 ms / 5 s); false sends none. */
  restarting?: { reconnectInMs: number; tryForMs: number } | false;
  /** Abort to skip the flush grace period and destroy connections at once. */
  signal?: AbortSignal;
}

/** Registered connections by transport and TLS, and what slow receivers have queued (computed on call). */
export interface ConnectionBreakdown {
  connections: { transport: 'derp' | 'websocket'; tls: boolean; count: number }[];
  /** Connections whose writes are blocked (packets go to their queues). */
  blockedConnections: number;
  /** Packets waiting in those queues. */
  queuedPackets: number;
}

export interface HealthReport {
  ok: boolean;
  listening: boolean;
  clients: number;
  problems: string[];
}

const PROBE_PATHS = new Set(['/derp/probe', '/derp/latency-check']);
const UPGRADE_REQUIRED_BODY = 'DERP requires connection upgrade\n';
const ROBOTS_TXT = 'User-agent: *\nDisallow: /\n';

/** Splits "host:port", "[v6]:port" or ":port" (all interfaces). */
export function parseListenAddr(addr: string): { host: string | undefined; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(addr) ?? /^([^:[\]]*):(\d+)$/.exec(addr);
  if (!m) throw new ConfigError(`listen address ${JSON.stringify(addr)} must be host:port, [ipv6]:port or :port`, { context: { addr } });
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port > 65535) throw new ConfigError(`listen address ${JSON.stringify(addr)} has an invalid port`, { context: { addr } });
  return { host: m[1] === '' ? undefined : m[1], port };
}

interface Sniff {
  deadline: number;
  /** Removes the sniffer's listeners (and the map entry). */
  detach(): void;
  /** At the deadline, once detached: closes the connection, counted. */
  expire(): void;
}

/** A new connection's first read, waiting for its turn (FIRST_READS_PER_TURN). */
interface WaitingRead {
  sock: Socket;
  chunk: Buffer;
  detach(): void;
}

function pathOf(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}

/** Like Go's http.Error: plain text with an explicit length (no chunked encoding). */
function sendText(res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'X-Content-Type-Options': 'nosniff' }).end(body);
}

function rawResponse(status: string, body: string, extra = ''): string {
  return `HTTP/1.1 ${status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}Connection: close\r\n\r\n${body}`;
}

/** TLS settings every certificate is served with. */
const TLS_SERVER_OPTIONS = { minVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] } as const;

export class RelayServer {
  private readonly key: NodePrivateKey;
  private readonly logger: Logger;
  private readonly hub: Hub;
  private tlsOpts: { cert: string | Buffer; key: string | Buffer } | undefined;
  private readonly certSource: CertSource | undefined;
  private uninstallAlpn: (() => void) | null = null;
  private readonly addr: string;
  private readonly handshakeTimeoutMs: number;
  private readonly tcpKeepAliveMs: number;
  /** 101 response + ServerKey: one write (spec §3.4). */
  private readonly greeting101: Buffer;
  private readonly serverKeyFrame: Buffer;
  private readonly wss: WebSocketServer;
  private server: http.Server | https.Server | null = null;
  private meshServer: http.Server | null = null;
  private readonly reusePort: boolean;
  private readonly meshListen: string | undefined;
  private boundPort = 0;
  private urlHost = '127.0.0.1';
  private listening = false;
  private stopping: Promise<void> | null = null;
  private readonly stopWaiters = new Set<() => void>();
  /** Node's own HTTP connection handler, called for every connection the fast path does not take. */
  private httpConnection: ((sock: Socket) => void) | null = null;
  /** Accepted connections whose first bytes have not arrived yet. */
  private readonly sniffing = new Map<Socket, Sniff>();
  private readonly routes: Map<string, RouteHandler>;
  private trustedProxies: readonly string[];
  /** Parsed in start(), like the listen address, so a bad entry surfaces as a start-up ConfigError. */
  private trusted = new TrustedProxies([]);
  private connLimits: Required<ConnectionLimits> = { acceptRate: 0, acceptBurst: 0, maxConnsPerIp: 0, maxConns: 0, maxPendingHandshakes: 0, handshakeShare: 0 };
  private acceptBucket: EventBucket | null = null;
  /**
   * While the accept bucket is empty the listening socket is closed, so the kernel refuses new
   * connections (RST) without waking us: a connection flood then costs the relay one close and one
   * listen per pause instead of an accept, a socket and a close per connection (derper accepts and
   * closes each). The timer reopens it when tokens are due.
   */
  private acceptPause: { timer: NodeJS.Timeout; since: number } | null = null;
  /** When the last accept-rate pause began; a reopened listener keeps the short backlog until scheduleBacklogRestore. */
  private lastAcceptPauseAt = 0;
  private shortBacklog = false;
  private backlogTimer: NodeJS.Timeout | null = null;
  private readonly backlogRestoreMs: number;
  private readonly deferListen: boolean;
  /** The public listener's host as parsed from addr (the accept-rate reopen listens on it again). */
  private listenHost: string | undefined;
  /** Open TCP connections by source (direct peers) and in total. */
  private readonly tcpConns = new ConnectionCounter();
  /** Clients behind trusted proxies, by their forwarded source (per-IP cap only). */
  private readonly forwardedConns = new ConnectionCounter();
  private readonly warmUpHandshakes: number;
  private warmUpDone: WarmUpResult | null = null;
  /** The warm-up, once begun (stop() waits for it: it shares the crypto thread). */
  private warmingUp: Promise<WarmUpResult | null> | null = null;
  private starting = false;

  constructor(init: RelayServerInit) {
    this.routes = new Map(Object.entries(init.routes ?? {}));
    this.trustedProxies = init.trustedProxies ?? [];
    this.key = init.privateKey;
    this.logger = init.logger ?? silentLogger;
    this.addr = init.addr ?? DEFAULT_ADDR;
    this.reusePort = init.reusePort ?? false;
    this.backlogRestoreMs = init.acceptBacklogRestoreMs ?? ACCEPT_BACKLOG_RESTORE_MS;
    this.deferListen = init.deferListen ?? false;
    this.meshListen = init.meshListen;
    this.warmUpHandshakes = init.warmUpHandshakes ?? 0;
    if (!Number.isInteger(this.warmUpHandshakes) || this.warmUpHandshakes < 0) throw new ConfigError(`warmUpHandshakes must be a whole number ≥ 0, not ${this.warmUpHandshakes}`, { context: { warmUpHandshakes: this.warmUpHandshakes } });
    if (init.tls !== undefined && init.certSource !== undefined) throw new ConfigError('give either tls or certSource, not both');
    this.tlsOpts = init.tls;
    this.certSource = init.certSource;
    this.handshakeTimeoutMs = init.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    this.tcpKeepAliveMs = init.tcpKeepAliveMs ?? TCP_KEEPALIVE_MS;
    this.hub = new Hub({
      privateKey: init.privateKey.keyObject,
      publicKey: init.privateKey.publicKey,
      logger: this.logger,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      keepAliveMs: init.keepAliveMs,
      sendQueueDepth: init.sendQueueDepth ?? PER_CLIENT_SEND_QUEUE_DEPTH,
      writeTimeoutMs: init.writeTimeoutMs ?? WRITE_TIMEOUT_MS,
      pingIntervalMs: init.pingIntervalMs,
    });
    const ct = init.cryptoThread ?? false;
    if (ct !== false) {
      const st = this.hub.stats;
      this.hub.cryptoThread = new CryptoThread(init.privateKey.keyObject, this.logger, { ...(ct === true ? {} : ct), onLost: () => st.handshakeThreadFailures++ });
    }
    this.hub.admit = init.admit ?? null;
    this.hub.onAbuse = init.onAbuse ?? null;
    this.hub.isBanned = init.isBanned ?? null;
    if (init.meshKey !== undefined) this.setMeshKey(init.meshKey);
    if (init.clientLimits !== undefined) this.hub.limits = new ClientLimits(init.clientLimits);
    this.setConnectionLimits(init.connectionLimits ?? {});
    this.serverKeyFrame = encode.serverKey(init.privateKey.publicKey);
    this.greeting101 = Buffer.concat([Buffer.from(buildUpgradeResponse(init.privateKey.publicKey), 'latin1'), this.serverKeyFrame]);
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: WS_MAX_PAYLOAD,
      handleProtocols: (protocols: Set<string>) => (protocols.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
    });
    // A WebSocket upgrade ws refuses (bad key, version, method): a bad HTTP request, counted like one.
    this.wss.on('wsClientError', (err: Error & { code?: string }, sock: Duplex) => {
      this.hub.stats.httpErrors++;
      const s = sock as Socket;
      this.logger.log('warn', 'closing connection', { remote: `${s.remoteAddress}:${s.remotePort}`, reason: `bad WebSocket upgrade: ${err.message}` });
      if (s.writable) s.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else s.destroy();
    });
  }

  get publicKey(): Buffer {
    return this.key.publicKey;
  }

  get port(): number {
    return this.boundPort;
  }

  /** The private mesh listener's port (meshListen), or null without one. */
  get meshPort(): number | null {
    const a = this.meshServer?.address();
    return a !== null && typeof a === 'object' ? a.port : null;
  }

  /** `http(s)://host:port/derp`; an all-interfaces listener is reported as 127.0.0.1. */
  get url(): string {
    const h = this.urlHost.includes(':') ? `[${this.urlHost}]` : this.urlHost;
    return `${this.tlsOpts || this.certSource ? 'https' : 'http'}://${h}:${this.boundPort}/derp`;
  }

  /** Listens; resolves once bound. Aborting `signal` later stops the server. */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.server !== null || this.starting) throw new DerpError('DERP_ERR_SERVER', 'relay server already started');
    this.starting = true;
    try {
      await this.startListening(signal);
    } finally {
      this.starting = false;
    }
  }

  private async startListening(signal: AbortSignal | undefined): Promise<void> {
    const { host, port } = parseListenAddr(this.addr);
    this.trusted = new TrustedProxies(this.trustedProxies);
    const common: http.ServerOptions = {
      noDelay: true,
      // TCP keepalive is set once a DERP connection starts (startDerp), not on every accept: a
      // connection that never gets that far is bounded by the handshake deadline, and a flood's
      // connect+close would pay its four setsockopt calls each.
      keepAlive: false,
      // Pre-upgrade slowloris protection on the same budget as the DERP handshake.
      headersTimeout: this.handshakeTimeoutMs,
      requestTimeout: this.handshakeTimeoutMs,
      connectionsCheckingInterval: Math.max(50, Math.min(30_000, Math.floor(this.handshakeTimeoutMs / 2))),
    };
    let srv: http.Server | https.Server;
    if (this.certSource) {
      const m = this.certSource.current();
      this.tlsOpts = { cert: m.cert, key: m.key };
    }
    if (this.warmUpHandshakes > 0) {
      await this.warmUp();
      if (this.stopping !== null) throw new DerpError('DERP_ERR_SERVER', 'relay stopped while it warmed up');
    }
    if (this.tlsOpts) {
      try {
        // The TLS handshake on the same budget too (Node's default is 120 s).
        srv = https.createServer({ ...common, handshakeTimeout: this.handshakeTimeoutMs, cert: this.tlsOpts.cert, key: this.tlsOpts.key, ...TLS_SERVER_OPTIONS }, this.onRequest);
      } catch (cause) {
        throw new ConfigError(`TLS certificate/key rejected: ${describeError(cause)}`, { cause });
      }
      // First: Node's https server passes every TLS failure on as a 'clientError' too, whose HTTP 400
      // a TLS socket never sends (its handshake did not finish), so it stayed open (a handshake timeout).
      srv.prependListener('tlsClientError', (err: Error, sock: TLSSocket) => {
        this.tlsFailed.add(sock);
        const raw = tlsParent(sock);
        // Closed by stop() (below): not the client's failure.
        if (raw === undefined || !this.closedAtStop.has(raw)) {
          this.hub.stats.httpErrors++;
          this.logger.log('warn', 'TLS handshake failed', { remote: `${sock.remoteAddress}:${sock.remotePort}`, reason: describeError(err) });
        }
        if (raw !== undefined) this.inTlsHandshake.delete(raw);
        sock.destroy();
      });
    } else srv = http.createServer(common, this.onRequest);
    srv.on('upgrade', this.onUpgrade);
    srv.on('clientError', this.onClientError);
    this.installFastUpgrade(srv, this.tlsOpts ? 'secureConnection' : 'connection');
    // After installFastUpgrade, which takes over only a lone 'secureConnection' handler (Node's).
    if (this.tlsOpts) {
      srv.prependListener('secureConnection', (sock: TLSSocket) => {
        const raw = tlsParent(sock);
        if (raw !== undefined) this.inTlsHandshake.delete(raw);
        else {
          // A Node without `_parent`: finished handshakes could not leave the set, and stop() must not
          // cut established clients off, so the tracking stops (stalled handshakes are waited for).
          this.tlsHandshakeTracking = false;
          this.inTlsHandshake.clear();
        }
      });
    }
    // Before listening: the first connection may already be a TLS-ALPN-01 validation.
    const responder = this.certSource?.challenges;
    if (responder !== undefined) this.uninstallAlpn = installTlsAlpnChallenges(srv as TlsServer, responder, this.logger);
    // Outermost, so limits apply at the TCP accept: before TLS, HTTP or ALPN challenges cost anything.
    this.installAcceptGate(srv);
    this.server = srv;
    this.listenHost = host;
    if (this.deferListen) {
      this.boundPort = port;
      this.urlHost = urlHostOf(host ?? '0.0.0.0');
    } else await this.bindPublic(srv);
    if (this.meshListen !== undefined) await this.startMeshListener(this.meshListen, common);
    if (this.certSource) {
      this.certSource.on('change', this.onCertChange);
      // A change while we were binding would otherwise be missed.
      const m = this.certSource.current();
      if (m.cert !== this.tlsOpts?.cert) this.onCertChange(m);
    }
    this.listening = !this.deferListen;
    this.hub.startTicker();
    if (signal) {
      if (signal.aborted) await this.stop();
      else signal.addEventListener('abort', () => void this.stop(), { once: true });
    }
  }

  /** What the warm-up did (warmUpHandshakes), or null before it or without one. */
  get warmUpResult(): WarmUpResult | null {
    return this.warmUpDone;
  }

  /**
   * The warm-up (warmUpHandshakes), once: start() runs it unless it has run. RelayNode runs it before
   * its certificate source starts, so an ACME order's validations never wait on it. Null without one.
   */
  warmUp(): Promise<WarmUpResult | null> {
    if (this.warmUpHandshakes === 0) return Promise.resolve(null);
    this.warmingUp ??= this.runWarmUp(this.warmUpHandshakes).then((r) => (this.warmUpDone = r));
    return this.warmingUp;
  }

  /**
   * Handshakes with a private instance of this relay on loopback (warmup.ts): the same code, key and
   * crypto thread, nothing of this one's clients, counters or admission. Plain TCP even for a TLS
   * relay: the TLS handshake is OpenSSL's (compiled already), the DERP code after it is the same,
   * and no certificate is needed yet. A warm-up that fails is logged; the relay starts anyway, colder.
   */
  private async runWarmUp(count: number): Promise<WarmUpResult> {
    const t0 = performance.now();
    const stopped = new AbortController();
    const onStop = (): void => stopped.abort();
    this.stopWaiters.add(onStop);
    let r: WarmUpResult;
    let w: RelayServer | null = null;
    try {
      w = new RelayServer({ privateKey: this.key, addr: '127.0.0.1:0', handshakeTimeoutMs: this.handshakeTimeoutMs });
      w.hub.cryptoThread = this.hub.cryptoThread;
      await w.start();
      r = await warmUpAgainst({ port: w.port, serverKey: this.key.publicKey, count, timeoutMs: this.handshakeTimeoutMs, signal: stopped.signal });
    } catch (err) {
      r = { handshakes: 0, ms: performance.now() - t0, error: `its private instance did not start: ${describeError(err)}` };
    } finally {
      this.stopWaiters.delete(onStop);
      if (w !== null) {
        w.hub.cryptoThread = null;
        await w.stop({ restarting: false });
      }
    }
    // Debug: `derp serve` reports it on its listening line, which stays the first.
    if (r.error === undefined) this.logger.log('debug', 'warmed up', { handshakes: r.handshakes, ms: Math.round(r.ms) });
    else this.logger.log('warn', 'warm-up stopped early; the relay starts colder', { handshakes: r.handshakes, ms: Math.round(r.ms), reason: r.error });
    return r;
  }

  /** Binds the public listener of a relay started with deferListen; resolves once bound (a DERP_ERR_SERVER when it cannot). */
  async listenPublic(): Promise<void> {
    const srv = this.server;
    if (srv === null) throw new DerpError('DERP_ERR_SERVER', 'relay server not started');
    if (this.listening || this.stopping !== null || srv.listening) return;
    await this.bindPublic(srv);
    this.listening = this.stopping === null;
  }

  private async bindPublic(srv: http.Server | https.Server): Promise<void> {
    const { host, port } = parseListenAddr(this.addr);
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: Error) => {
        srv.off('listening', onOk);
        reject(new DerpError('DERP_ERR_SERVER', `cannot listen on ${this.addr}: ${describeError(err)}`, { cause: err, context: { addr: this.addr } }));
      };
      const onOk = () => {
        srv.off('error', onErr);
        resolve();
      };
      srv.once('error', onErr);
      srv.once('listening', onOk);
      srv.listen({ host, port, reusePort: this.reusePort, backlog: LISTEN_BACKLOG });
    });
    const a = srv.address();
    if (a !== null && typeof a === 'object') {
      this.boundPort = a.port;
      this.urlHost = urlHostOf(host ?? a.address);
    }
    // From now on (a failure to bind is the caller's error, not a log line).
    srv.on('error', (err: Error) => this.logger.log('error', 'listener error', { reason: describeError(err) }));
  }

  /** Plain HTTP on a private address, served by the same handlers (the slow upgrade path; no accept gate). */
  private async startMeshListener(addr: string, common: http.ServerOptions): Promise<void> {
    const { host, port } = parseListenAddr(addr);
    const ms = http.createServer(common, this.onRequest);
    ms.on('upgrade', this.onMeshUpgrade);
    ms.on('clientError', this.onClientError);
    await new Promise<void>((resolve, reject) => {
      ms.once('error', (err: Error) => reject(new DerpError('DERP_ERR_SERVER', `cannot listen on the mesh address ${addr}: ${describeError(err)}`, { cause: err, context: { addr } })));
      ms.listen({ host: host ?? '127.0.0.1', port }, () => resolve());
    });
    ms.on('error', (err: Error) => this.logger.log('error', 'mesh listener error', { reason: describeError(err) }));
    this.meshServer = ms;
  }

  /** Sends Restarting to every client, flushes, closes them and the listener. Idempotent. */
  stop(opts: StopOptions = {}): Promise<void> {
    this.stopping ??= this.doStop(opts);
    return this.stopping;
  }

  private async doStop(opts: StopOptions): Promise<void> {
    const srv = this.server;
    this.listening = false;
    if (this.acceptPause !== null) {
      clearTimeout(this.acceptPause.timer);
      this.hub.stats.acceptPausedMs += Date.now() - this.acceptPause.since;
      this.acceptPause = null;
    }
    if (this.backlogTimer !== null) clearTimeout(this.backlogTimer);
    this.backlogTimer = null;
    this.hub.stopping = true;
    this.certSource?.off('change', this.onCertChange);
    this.uninstallAlpn?.();
    for (const w of this.stopWaiters) w();
    if (srv === null) {
      // The stop waiters above cut a running warm-up short.
      await this.warmingUp;
      await this.hub.cryptoThread?.close();
      return;
    }
    const r = opts.restarting === undefined ? { reconnectInMs: DEFAULT_RESTART_RECONNECT_IN_MS, tryForMs: DEFAULT_RESTART_TRY_FOR_MS } : opts.restarting;
    const frame = r === false ? null : encode.restarting(r.reconnectInMs, r.tryForMs);
    const ms = this.meshServer;
    const closed = Promise.all([new Promise<void>((resolve) => srv.close(() => resolve())), ms === null ? undefined : new Promise<void>((resolve) => ms.close(() => resolve()))]).then(() => undefined);
    const conns = [...this.hub.all];
    for (const c of conns) c.shutdown(frame);
    // Connections that have not sent a request yet are idle too.
    for (const [sock, sniff] of this.sniffing) {
      sniff.detach();
      sock.destroy();
    }
    // And so are those still in their TLS handshake: Node's server waits for them, and its
    // closeAllConnections does not see them (only sockets past the handshake), so without this a stalled
    // handshake held the stop until its deadline. The TLS layer sees the close as a failed handshake.
    const tlsHandshakesClosed = this.inTlsHandshake.size;
    for (const raw of this.inTlsHandshake) {
      this.closedAtStop.add(raw);
      raw.destroy();
    }
    this.inTlsHandshake.clear();
    srv.closeIdleConnections();
    ms?.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    let forcedCloses = 0;
    const forced = new Promise<void>((resolve) => {
      const force = () => {
        for (const c of conns) if (c.destroy()) forcedCloses++;
        srv.closeAllConnections();
        ms?.closeAllConnections();
        resolve();
      };
      timer = setTimeout(force, STOP_GRACE_MS);
      if (opts.signal?.aborted) force();
      else opts.signal?.addEventListener('abort', force, { once: true });
    });
    await Promise.race([closed, forced]);
    clearTimeout(timer);
    await closed;
    this.hub.stopTicker();
    await this.hub.cryptoThread?.close();
    this.wss.close();
    // The final packet counters (a scrape just before the stop misses what moved during it).
    const st = this.hub.stats;
    const fields: LogFields = { url: this.url, packetsReceived: st.packetsReceived, packetsSent: st.packetsSent, packetsForwardedOut: st.packetsForwardedOut, packetsForwardedIn: st.packetsForwardedIn, forcedCloses, tlsHandshakesClosed };
    for (const r of DROP_REASONS) fields[`packetsDropped_${r}`] = st.packetsDropped[r];
    this.logger.log('info', 'relay stopped', fields);
  }

  /** Yields every connection that completes the handshake from now on, until `signal` aborts or the server stops. */
  acceptClient(signal?: AbortSignal): AsyncIterableIterator<ClientConnInfo> {
    const queue: ClientConnInfo[] = [];
    let wake: (() => void) | null = null;
    const logger = this.logger;
    const listener = (c: ClientConn) => {
      // An iterator nobody reads must not grow without bound under a connection flood.
      if (queue.length >= ACCEPT_QUEUE_MAX) {
        queue.shift();
        logger.log('warn', 'acceptClient consumer is behind; dropped the oldest unread connection', { limit: ACCEPT_QUEUE_MAX });
      }
      queue.push(c.connInfo());
      wake?.();
    };
    const onEnd = () => wake?.();
    // Subscribe now, not at the first next(), so no connection slips through.
    this.hub.registeredListeners.add(listener);
    this.stopWaiters.add(onEnd);
    signal?.addEventListener('abort', onEnd, { once: true });
    const done = () => signal?.aborted === true || this.stopping !== null;
    const hub = this.hub;
    const waiters = this.stopWaiters;
    return (async function* iterate(): AsyncGenerator<ClientConnInfo> {
      try {
        for (;;) {
          while (queue.length > 0) yield queue.shift()!;
          if (done()) return;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = null;
        }
      } finally {
        hub.registeredListeners.delete(listener);
        waiters.delete(onEnd);
        signal?.removeEventListener('abort', onEnd);
      }
    })();
  }

  /** Delivers `data` to `to` as if `from` had sent it; false when `to` has no active connection. */
  relayPacket(from: Buffer | string, to: Buffer | string, data: Uint8Array): boolean {
    if (data.length > MAX_PACKET_SIZE) throw new PacketTooLargeError(data.length, MAX_PACKET_SIZE);
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return this.hub.inject(toKey(from, 'from'), toKey(to, 'to'), buf);
  }

  /**
   * Serves this certificate chain and key to new TLS connections from now on; established ones keep
   * theirs (nothing is dropped). Throws a ConfigError when Node refuses the pair; the old one stays.
   */
  setTls(pair: { cert: string | Buffer; key: string | Buffer }): void {
    const srv = this.server;
    if (srv === null || !(srv instanceof https.Server)) throw new ConfigError('setTls needs a relay that was started with TLS');
    try {
      srv.setSecureContext({ cert: pair.cert, key: pair.key, ...TLS_SERVER_OPTIONS });
    } catch (cause) {
      throw new ConfigError(`TLS certificate/key rejected: ${describeError(cause)}`, { cause });
    }
    this.tlsOpts = pair;
  }

  private readonly onCertChange = (m: CertMaterial): void => {
    try {
      this.setTls({ cert: m.cert, key: m.key });
      this.logger.log('info', 'serving a new TLS certificate', { origin: m.origin, notAfter: m.notAfter.toISOString(), sha256: m.sha256 });
    } catch (err) {
      this.logger.log('error', 'new TLS certificate not installed; still serving the previous one', { origin: m.origin, reason: describeError(err) });
    }
  };

  healthCheck(): HealthReport {
    const problems: string[] = [];
    if (!this.listening) problems.push(this.stopping ? 'server stopped' : 'server not started');
    return { ok: problems.length === 0, listening: this.listening, clients: this.hub.stats.currentConnections, problems };
  }

  stats(): RelayStats {
    const s = snapshotStats(this.hub.stats);
    s.clientsRemote = this.hub.remoteOnlyKeys();
    return s;
  }

  /** Replaces the trusted proxies (a reload); a bad entry throws ConfigError and changes nothing. */
  setTrustedProxies(cidrs: readonly string[]): void {
    const t = new TrustedProxies(cidrs);
    this.trustedProxies = [...cidrs];
    this.trusted = t;
  }

  /**
   * Replaces the admission check (a reload); null admits everyone. Decisions already pending finish
   * with the function they started with; clients already admitted stay.
   */
  setAdmit(admit: AdmitFn | null): void {
    this.hub.admit = admit;
  }

  /** Replaces the abuse hook and the ban check (null = none). */
  setAbuseHooks(hooks: { onAbuse?: AbuseHook | null; isBanned?: BanCheck | null }): void {
    if (hooks.onAbuse !== undefined) this.hub.onAbuse = hooks.onAbuse;
    if (hooks.isBanned !== undefined) this.hub.isBanned = hooks.isBanned;
  }

  /**
   * New per-client rates, applied to every live connection at once and advertised to new ones in
   * ServerInfo. Throws ConfigError (a bad key or value) and changes nothing then.
   */
  setClientLimits(limits: ClientLimitsInit): void {
    this.hub.setClientLimits(new ClientLimits(limits));
  }

  /** The bucket a connected key is held to ({0, 0} = unlimited), or null when the key is not connected. */
  clientRateOf(key: Buffer | string): { bytesPerSecond: number; burstBytes: number } | null {
    const c = this.hub.lookup(toKey(key, 'client').toString('latin1'));
    return c === null ? null : c.rateLimit;
  }

  /** New connection limits for new connections (open ones stay). Throws ConfigError on a negative value. */
  setConnectionLimits(limits: ConnectionLimits): void {
    const l: Required<ConnectionLimits> = { acceptRate: 0, acceptBurst: 0, maxConnsPerIp: 0, maxConns: 0, maxPendingHandshakes: 0, handshakeShare: 0, ...limits };
    for (const [k, v] of Object.entries(l)) {
      if (!(Number.isFinite(v) && v >= 0)) throw new ConfigError(`connection limit ${k} must be a number ≥ 0, got ${String(v)}`, { context: { [k]: v } });
    }
    if (l.handshakeShare > 1) throw new ConfigError(`connection limit handshakeShare must be at most 1 (the whole event loop), got ${l.handshakeShare}`, { context: { handshakeShare: l.handshakeShare } });
    const bucketChanged = l.acceptRate !== this.connLimits.acceptRate || l.acceptBurst !== this.connLimits.acceptBurst || this.acceptBucket === null;
    this.connLimits = l;
    this.hub.maxPendingHandshakes = Math.floor(l.maxPendingHandshakes);
    this.hub.setHandshakeShare(l.handshakeShare);
    if (bucketChanged) {
      this.acceptBucket = l.acceptRate > 0 ? new EventBucket(l.acceptRate, Math.max(1, l.acceptBurst > 0 ? l.acceptBurst : Math.ceil(l.acceptRate))) : null;
      // The new rate decides from now on: a listener closed under the old one opens again.
      if (this.acceptPause !== null && this.server !== null) this.reopenAccepts(this.server);
    }
  }

  // ---------------------------------------------------------------- mesh (spec §10)

  /** Sets (or, with null, clears) the mesh key; connections already up keep what they were. */
  setMeshKey(key: Buffer | null): void {
    if (key !== null && key.length !== KEY_LEN) throw new ConfigError(`mesh key must be ${KEY_LEN} bytes, got ${key.length}`);
    this.hub.setMeshKey(key);
  }

  /** A mesh link learned that `key` is connected to its node (PeerPresent). */
  addForwarder(key: Buffer, f: PacketForwarder): void {
    this.hub.addForwarder(key.toString('latin1'), f);
  }

  /** The link forgot `key` (PeerGone, NotHere, or the link went down). */
  removeForwarder(key: Buffer, f: PacketForwarder): void {
    this.hub.removeForwarder(key.toString('latin1'), f);
  }

  /** Keys reachable only through mesh links, and mesh watchers (for tests and /debug). */
  meshView(): { remoteKeys: number; watchers: number } {
    return this.hub.meshView();
  }

  /** Closes every connection (handshaking or registered) that `match` picks; returns how many. */
  closeConnections(match: (c: { key: Buffer | null; remoteAddress: string }) => boolean, reason: string): number {
    let n = 0;
    for (const c of this.hub.all) {
      if (c.closed || !match(c)) continue;
      c.close(reason, 'info');
      n++;
    }
    return n;
  }

  /** (source, destination) pairs remembered for PeerGone; bounded by the live connections' pairs. */
  peerGoneEntries(): number {
    return this.hub.sentToEntries();
  }

  /** Connections the hub's keepalive wheel holds: the active ones, none that closed (memory bound). */
  keepAliveEntries(): number {
    return this.hub.keepAliveEntries;
  }

  /** Attaches the duration hook (handshakes, server-ping RTT, queue wait) and turns server pings on; null detaches. */
  setObserver(observer: RelayObserver | null): void {
    this.hub.observer = observer;
  }

  /** Walks the live connections: meant for a metrics scrape, not for a hot loop. */
  connectionBreakdown(): ConnectionBreakdown {
    const counts = [0, 0, 0, 0];
    for (const c of this.hub.all) if (c.active) counts[(c.transport === 'websocket' ? 2 : 0) + (c.tls ? 1 : 0)]!++;
    let queuedPackets = 0;
    for (const c of this.hub.blocked) queuedPackets += c.queuedPackets();
    return {
      connections: [
        { transport: 'derp', tls: false, count: counts[0]! },
        { transport: 'derp', tls: true, count: counts[1]! },
        { transport: 'websocket', tls: false, count: counts[2]! },
        { transport: 'websocket', tls: true, count: counts[3]! },
      ],
      blockedConnections: this.hub.blocked.size,
      queuedPackets,
    };
  }

  // ------------------------------------------------------------ fast DERP upgrade

  /**
   * Puts a sniffer in front of Node's HTTP connection handler: a connection whose first read is a
   * plain DERP upgrade (fasthead.ts) becomes a ClientConn at once, without Node's parser,
   * IncomingMessage and 'upgrade' machinery (most of a handshake's non-crypto CPU). Everything else
   * is handed to Node's handler with its bytes put back, so it is served exactly as before.
   */
  private installFastUpgrade(srv: http.Server, event: 'connection' | 'secureConnection'): void {
    const listeners = srv.listeners(event);
    // Not the single handler Node installs: leave Node's path alone rather than guess.
    if (listeners.length !== 1) return;
    const httpListener = listeners[0] as (this: http.Server, sock: Socket) => void;
    srv.removeListener(event, httpListener);
    this.httpConnection = (sock) => httpListener.call(srv, sock);
    srv.on(event, this.onConnection);
    this.hub.onTick = this.expireSniffing;
  }

  // ------------------------------------------------------------ limits at accept

  /** Wraps the listener's connection handlers in acceptTcp (Node's HTTP/TLS handler, the sniffer, ALPN). */
  private installAcceptGate(srv: http.Server | https.Server): void {
    const handlers = srv.listeners('connection') as ((this: http.Server, sock: Socket) => void)[];
    srv.removeAllListeners('connection');
    const handOver = (sock: Socket): void => {
      for (const h of handlers) h.call(srv, sock);
    };
    const tls = srv instanceof https.Server;
    srv.on('connection', (sock: Socket) => {
      if (this.acceptTcp(sock)) {
        if (tls) this.awaitClientHello(sock, handOver);
        else handOver(sock);
      } else if (this.acceptBucket !== null && this.acceptBucket.msUntilToken(Date.now()) > 0) {
        this.pauseAccepts(srv);
      }
    });
  }

  /** Closes the listening socket until the accept bucket has tokens again (connections already open stay). */
  private pauseAccepts(srv: http.Server | https.Server): void {
    if (this.acceptPause !== null || this.stopping !== null || !srv.listening) return;
    const now = Date.now();
    const ms = Math.max(ACCEPT_PAUSE_MIN_MS, Math.ceil(this.acceptBucket!.msUntilToken(now)));
    const st = this.hub.stats;
    st.acceptPauses++;
    this.lastAcceptPauseAt = now;
    // net.Server's close, not http's: that one also closes idle keep-alive connections.
    net.Server.prototype.close.call(srv);
    this.acceptPause = { timer: setTimeout(() => this.reopenAccepts(srv), ms), since: now };
    if (this.acceptPauseLogged + ACCEPT_PAUSE_LOG_MS <= now) {
      this.acceptPauseLogged = now;
      this.logger.log('warn', 'accept rate exceeded: the listener is closed until tokens are due (new connections are refused meanwhile; logged at most once a minute)', { pauseMs: ms, pauses: st.acceptPauses, refusedAtAccept: st.connectionsRefused.accept_rate });
    }
  }

  /** When an accept-rate pause was last logged (0: never). */
  private acceptPauseLogged = 0;

  /**
   * The accept queue after a pause: about what one pause's tokens admit. Whatever waits in the queue
   * beyond them is reset when the listener closes again, in one batch on the relay's event loop.
   */
  private pausedBacklog(): number {
    const rate = this.acceptBucket?.rate ?? 0;
    if (rate <= 0) return LISTEN_BACKLOG;
    return Math.min(LISTEN_BACKLOG, Math.max(ACCEPT_PAUSED_BACKLOG_MIN, 2 * Math.ceil((rate * ACCEPT_PAUSE_MIN_MS) / 1000)));
  }

  /** Ends a pause: the listener opens again with the short backlog (pausedBacklog). */
  private reopenAccepts(srv: http.Server | https.Server): void {
    const p = this.acceptPause;
    if (p === null) return;
    clearTimeout(p.timer);
    this.acceptPause = null;
    this.hub.stats.acceptPausedMs += Date.now() - p.since;
    if (this.stopping !== null || srv.listening) return;
    const backlog = this.pausedBacklog();
    this.relisten(srv, backlog, 'after an accept-rate pause', () => {
      this.shortBacklog = backlog < LISTEN_BACKLOG;
      if (this.shortBacklog) this.scheduleBacklogRestore(srv);
    });
  }

  /** Listens again on the same address and port; a failure (the port taken meanwhile) is logged and retried as a pause. */
  private relisten(srv: http.Server | https.Server, backlog: number, when: string, onListening: () => void): void {
    const onErr = (err: Error): void => {
      srv.off('listening', onOk);
      this.logger.log('error', `cannot reopen the listener ${when}; retrying`, { addr: this.addr, port: this.boundPort, reason: describeError(err), retryMs: ACCEPT_REOPEN_RETRY_MS });
      if (this.stopping === null) this.acceptPause = { timer: setTimeout(() => this.reopenAccepts(srv), ACCEPT_REOPEN_RETRY_MS), since: Date.now() };
    };
    const onOk = (): void => {
      srv.off('error', onErr);
      onListening();
    };
    srv.once('error', onErr);
    srv.once('listening', onOk);
    srv.listen({ host: this.listenHost, port: this.boundPort, reusePort: this.reusePort, backlog });
  }

  /**
   * The short backlog is for an ongoing flood: once nothing has paused the listener for
   * backlogRestoreMs, it is reopened with the full one, so a reconnect storm queues instead of being
   * refused. Closing and listening again refuses only what arrives in that instant.
   */
  private scheduleBacklogRestore(srv: http.Server | https.Server): void {
    if (this.backlogTimer !== null) return;
    this.backlogTimer = setTimeout(() => {
      this.backlogTimer = null;
      // Paused again meanwhile (the reopen after it schedules the next check), stopping, or closed.
      if (!this.shortBacklog || this.stopping !== null || this.acceptPause !== null || !srv.listening) return;
      if (Date.now() - this.lastAcceptPauseAt < this.backlogRestoreMs) {
        this.scheduleBacklogRestore(srv);
        return;
      }
      net.Server.prototype.close.call(srv);
      this.relisten(srv, LISTEN_BACKLOG, 'with its full backlog', () => {
        this.shortBacklog = false;
        this.hub.stats.acceptBacklogRestores++;
      });
    }, Math.max(0, this.lastAcceptPauseAt + this.backlogRestoreMs - Date.now()));
    this.backlogTimer.unref();
  }

  /** Accept rate, bans, per-IP and total caps, in that order; false = closed and counted. */
  private acceptTcp(sock: Socket): boolean {
    const st = this.hub.stats;
    const refuse = (reason: 'accept_rate' | 'banned' | 'per_ip' | 'total'): false => {
      st.connectionsRefused[reason]++;
      sock.destroy();
      return false;
    };
    if (this.acceptBucket !== null && !this.acceptBucket.take(Date.now())) return refuse('accept_rate');
    const peer = sock.remoteAddress ?? '';
    const ip = normalizeIp(peer) ?? peer;
    // A trusted proxy speaks for many clients: its own connections count only toward the total, its
    // clients are counted by their forwarded address after the head (admitForwarded).
    const proxied = !this.trusted.empty && this.trusted.isTrusted(peer);
    if (!proxied && this.hub.isBanned !== null && this.hub.banned(ip, null)) return refuse('banned');
    const source = proxied ? `proxy ${ip}` : sourceKey(ip);
    const over = this.tcpConns.add(source, { perSource: proxied ? 0 : this.connLimits.maxConnsPerIp, total: this.connLimits.maxConns });
    if (over !== null) return refuse(over);
    const s = sock as CountedSocket;
    s[COUNTED] = { counter: this.tcpConns, source, stats: st };
    st.openConnections = this.tcpConns.total;
    sock.once('close', onCountedClose);
    return true;
  }

  /** A proxied client's real address is known (after the head): its ban and per-IP cap. */
  private admitForwarded(sock: Socket, address: string): boolean {
    const st = this.hub.stats;
    if (this.hub.isBanned !== null && this.hub.banned(address, null)) {
      st.connectionsRefused.banned++;
      sock.destroy();
      return false;
    }
    const source = sourceKey(address);
    if (this.forwardedConns.add(source, { perSource: this.connLimits.maxConnsPerIp, total: 0 }) !== null) {
      st.connectionsRefused.per_ip++;
      sock.destroy();
      return false;
    }
    const counter = this.forwardedConns;
    sock.once('close', () => counter.remove(source));
    return true;
  }

  /**
   * Where every DERP connection starts (upgrade, fast start, WebSocket, mesh link): the pending-handshake
   * cap (false = closed; the hub counts it), then TCP keepalive, kernel-side liveness as derper has it
   * from Go's net package (a vanished peer ends in ETIMEDOUT).
   */
  private startDerp(sock: Socket): boolean {
    if (!this.hub.hasPendingRoom()) {
      sock.destroy();
      return false;
    }
    if (this.tcpKeepAliveMs > 0) sock.setKeepAlive(true, this.tcpKeepAliveMs);
    return true;
  }

  private readonly onConnection = (sock: Socket): void => {
    const detach = (): void => {
      this.sniffing.delete(sock);
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.removeListener('error', onError);
    };
    let partial: Buffer | null = null;
    let waiting: WaitingRead | null = null;
    const onData = (chunk: Buffer): void => {
      if (waiting !== null) {
        // More while it waits (a client normally waits for our answer first): it follows the first bytes.
        waiting.chunk = Buffer.concat([waiting.chunk, chunk]);
        return;
      }
      const bytes = partial === null ? chunk : Buffer.concat([partial, chunk]);
      // An unfinished head stays here, under the deadline, not in Node's parser: that one expires its
      // heads all at once (checkConnections), a slowloris batch in one turn.
      if (!headComplete(bytes) && bytes.length < SNIFF_HEAD_MAX_BYTES && looksLikeRequestLine(bytes)) {
        partial = bytes;
        return;
      }
      partial = null;
      const w: WaitingRead = { sock, chunk: bytes, detach };
      // Past FIRST_READS_PER_TURN it waits for a later turn, still sniffed (deadline, end, error, stop).
      if (!this.firstReads.offer(w)) {
        waiting = w;
        this.hub.stats.firstReadsDeferred++;
      }
    };
    // As Node's HTTP server does for a connection that ends or fails before its request.
    const onEnd = (): void => {
      detach();
      // EOF inside a head (Node's parser reports that), or before a whole one got its turn: counted.
      if (partial !== null) this.onClientError(Object.assign(new Error('EOF inside the HTTP head'), { code: 'HPE_INVALID_EOF_STATE' }), sock);
      else if (waiting !== null) this.onClientError(Object.assign(new Error('EOF before the request was read'), { code: 'EOF_BEFORE_READ' }), sock);
      // Nothing read, nothing written: closed at once (a FIN all the same), without a half-close's extra round.
      else sock.destroy();
    };
    const onError = (err: Error): void => {
      detach();
      this.onClientError(err, sock);
    };
    const expire = (): void => this.onClientError(Object.assign(new Error(`no HTTP request within ${this.handshakeTimeoutMs} ms`), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), sock);
    this.sniffing.set(sock, { deadline: Date.now() + this.handshakeTimeoutMs, detach, expire });
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', onError);
  };

  /**
   * A TLS connection is the relay's until its first bytes (the ClientHello) arrive, under the handshake
   * deadline; then it goes to the TLS layer, at most TLS_HANDSHAKES_PER_TURN per turn. The server's
   * whole first flight (key share, certificate, signature) is computed as the hello is read, so a burst
   * of hellos in one poll (a reconnect storm, a flood) would otherwise all be signed in one turn.
   */
  private awaitClientHello(sock: Socket, handOver: (sock: Socket) => void): void {
    const detach = (): void => {
      this.sniffing.delete(sock);
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.removeListener('error', onError);
    };
    let arrived = false;
    const onData = (chunk: Buffer): void => {
      arrived = true;
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      // Held, bytes put back, until its turn; the TLS layer reads what the socket has buffered.
      sock.pause();
      sock.unshift(chunk);
      if (!this.clientHellos.offer({ sock, handOver })) this.hub.stats.tlsHandshakesDeferred++;
    };
    // An end before any byte, or an error (also while it waits for its turn: paused, it reads nothing,
    // but a destroy can still fail it): nothing to answer (no TLS yet, no HTTP), so simply closed.
    const onEnd = (): void => {
      detach();
      sock.destroy();
    };
    const onError = onEnd;
    const expire = (): void => {
      // Its hello can also have waited that long for a turn, behind a backlog of others.
      if (!arrived) this.hub.stats.tlsHelloTimeouts++;
      this.hub.stats.httpErrors++;
      const reason = arrived ? `ClientHello not handled within ${this.handshakeTimeoutMs} ms (waiting for its turn)` : `no ClientHello within ${this.handshakeTimeoutMs} ms`;
      this.logger.log('warn', 'TLS handshake failed', { remote: `${sock.remoteAddress}:${sock.remotePort}`, reason });
      sock.destroy();
    };
    this.sniffing.set(sock, { deadline: Date.now() + this.handshakeTimeoutMs, detach, expire });
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', onError);
  }

  /** ClientHellos handed to the TLS layer (awaitClientHello); one closed, expired or stopped meanwhile is skipped. */
  private readonly clientHellos = new TurnRunner<{ sock: Socket; handOver: (sock: Socket) => void }>(
    TLS_HANDSHAKES_PER_TURN,
    ({ sock, handOver }) => {
      this.sniffing.get(sock)?.detach();
      if (this.tlsHandshakeTracking) {
        this.inTlsHandshake.add(sock);
        sock.once('close', () => this.inTlsHandshake.delete(sock));
      }
      handOver(sock);
    },
    ({ sock }) => sock.destroyed || !this.sniffing.has(sock),
  );

  /** New connections' first reads (onConnection); one closed, expired or stopped meanwhile (no longer sniffed) is skipped. */
  private readonly firstReads = new TurnRunner<WaitingRead>(
    FIRST_READS_PER_TURN,
    (w) => {
      w.detach();
      this.onFirstChunk(w.sock, w.chunk);
    },
    (w) => w.sock.destroyed || !this.sniffing.has(w.sock),
  );

  private onFirstChunk(sock: Socket, chunk: Buffer): void {
    const head = this.stopping === null ? parseDerpUpgradeHead(chunk, chunk.length, !this.trusted.empty) : null;
    if (head === null) {
      sock.unshift(chunk);
      this.httpConnection!(sock);
      return;
    }
    const fwd = head.forwardedFor === undefined ? undefined : this.forwarded(sock, head.forwardedFor);
    if (fwd !== undefined && !this.admitForwarded(sock, fwd.address)) return;
    if (!this.startDerp(sock)) return;
    ClientConn.fromSocket(this.hub, sock, sock instanceof TLSSocket, head.fastStart ? this.serverKeyFrame : this.greeting101, chunk.subarray(head.end), fwd);
  }

  /** The client behind a trusted proxy (counted), or undefined to use the TCP peer. */
  private forwarded(sock: Socket, xff: string): Forwarded | undefined {
    const peer = sock.remoteAddress ?? '';
    const r = this.trusted.resolve(peer, xff);
    if (r === null) return undefined;
    if (r.malformed) {
      // A proxy misconfiguration repeats on every connection: say so once, count the rest.
      if (this.hub.stats.forwardedForMalformed++ === 0) {
        this.logger.log('warn', 'ignoring malformed X-Forwarded-For from a trusted proxy (logged once; counted in stats)', { remote: `${peer}:${sock.remotePort}`, using: r.address });
      }
    }
    this.hub.stats.forwardedConnections++;
    return { address: r.address, proxyAddress: peer, proxyPort: sock.remotePort ?? 0 };
  }

  /**
   * Hub ticker: a connection that has not finished its HTTP head in time gets what Node's headersTimeout
   * gave it, HEAD_EXPIRIES_PER_TURN per turn (a slowloris batch all expires at once).
   */
  private readonly expireSniffing = (now: number): void => {
    for (const [sock, sniff] of this.sniffing) {
      if (now < sniff.deadline) continue;
      sniff.detach();
      this.headExpiries.offer({ sock, expire: sniff.expire });
    }
  };

  private readonly headExpiries = new TurnRunner<{ sock: Socket; expire: () => void }>(
    HEAD_EXPIRIES_PER_TURN,
    ({ expire }) => expire(),
    ({ sock }) => sock.destroyed,
  );

  // ------------------------------------------------------------ HTTP

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.hub.stats.httpRequests++;
    const path = pathOf(req.url);
    if (path === '/derp') {
      // Reached only without a usable Upgrade (spec §3.4 step 2).
      sendText(res, 426, UPGRADE_REQUIRED_BODY);
      return;
    }
    if (PROBE_PATHS.has(path)) {
      if (req.method === 'GET' || req.method === 'HEAD') res.writeHead(200, { 'Access-Control-Allow-Origin': '*' }).end();
      else sendText(res, 405, 'bogus probe method\n');
      return;
    }
    if (path === '/generate_204') {
      serveNoContent(req, res);
      return;
    }
    if (path === '/robots.txt') {
      sendText(res, 200, ROBOTS_TXT);
      return;
    }
    if (path === '/') {
      sendText(res, 200, this.homePage(), 'text/html; charset=utf-8');
      return;
    }
    const route = this.routes.get(path);
    if (route !== undefined) {
      route(req, res);
      return;
    }
    sendText(res, 404, '404 page not found\n');
  };

  private homePage(): string {
    return (
      '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>DERP relay</title></head><body>\n' +
      '<h1>DERP</h1>\n<p>This is a <a href="https://tailscale.com/kb/1232/derp-servers">DERP</a> relay server (derp, TypeScript).</p>\n' +
      `<p>Server public key: <code>${formatNodePublic(this.key.publicKey)}</code></p>\n</body></html>\n`
    );
  }

  private readonly onUpgrade = (req: http.IncomingMessage, duplex: Duplex, head: Buffer): void => {
    const sock = duplex as Socket;
    const path = pathOf(req.url);
    if (this.stopping !== null) {
      sock.destroy();
      return;
    }
    // Answered here rather than by onRequest, but HTTP requests all the same: counted as they are.
    if (PROBE_PATHS.has(path)) {
      this.hub.stats.httpRequests++;
      sock.end(req.method === 'GET' || req.method === 'HEAD' ? 'HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' : rawResponse('405 Method Not Allowed', 'bogus probe method\n'));
      return;
    }
    if (path !== '/derp') {
      this.hub.stats.httpRequests++;
      sock.end(rawResponse('404 Not Found', '404 page not found\n'));
      return;
    }
    const upgrade = (req.headers.upgrade ?? '').toLowerCase();
    const tls = sock instanceof TLSSocket;
    // Node joins repeated X-Forwarded-For headers with ", "; the type allows an array all the same.
    const xffHeader = this.trusted.empty ? undefined : req.headers['x-forwarded-for'];
    const xff = Array.isArray(xffHeader) ? xffHeader.join(', ') : xffHeader;
    if (upgrade === 'websocket' && (req.headers['sec-websocket-protocol'] ?? '').includes(WS_SUBPROTOCOL)) {
      const remoteAddress = sock.remoteAddress ?? '';
      const remotePort = sock.remotePort ?? 0;
      const fwd = xff === undefined ? undefined : this.forwarded(sock, xff);
      if (fwd !== undefined && !this.admitForwarded(sock, fwd.address)) return;
      if (!this.startDerp(sock)) return;
      this.wss.handleUpgrade(req, sock, head, (ws: WebSocket) => {
        this.hub.stats.websocketAccepts++;
        if (ws.protocol !== WS_SUBPROTOCOL) {
          ws.close(WS_CLOSE_POLICY, 'derp subprotocol required');
          return;
        }
        ClientConn.fromWebSocket(this.hub, ws, remoteAddress, remotePort, tls, this.serverKeyFrame, fwd);
      });
      return;
    }
    // `Upgrade: websocket` without the derp subprotocol is the legacy raw DERP upgrade (spec §3.6).
    if (upgrade !== 'derp' && upgrade !== 'websocket') {
      this.hub.stats.httpRequests++;
      sock.end(rawResponse('426 Upgrade Required', UPGRADE_REQUIRED_BODY));
      return;
    }
    const fastStart = req.headers[Headers.FastStart] === '1';
    const fwd = xff === undefined ? undefined : this.forwarded(sock, xff);
    if (fwd !== undefined && !this.admitForwarded(sock, fwd.address)) return;
    if (!this.startDerp(sock)) return;
    ClientConn.fromSocket(this.hub, sock, tls, fastStart ? this.serverKeyFrame : this.greeting101, head, fwd);
  };

  /** The private listener: a raw DERP upgrade is a sibling worker's link (everything else as on the main port). */
  private readonly onMeshUpgrade = (req: http.IncomingMessage, duplex: Duplex, head: Buffer): void => {
    if (this.stopping !== null || pathOf(req.url) !== '/derp' || (req.headers.upgrade ?? '').toLowerCase() !== 'derp') {
      this.onUpgrade(req, duplex, head);
      return;
    }
    const sock = duplex as Socket;
    if (!this.startDerp(sock)) return;
    const c = ClientConn.fromSocket(this.hub, sock, false, req.headers[Headers.FastStart] === '1' ? this.serverKeyFrame : this.greeting101, head);
    c.sibling = true;
  };

  /** TLS sockets whose handshake failed (counted, logged and closed in 'tlsClientError'). */
  private readonly tlsFailed = new WeakSet<Duplex>();
  /** Raw sockets handed to the TLS layer (awaitClientHello) whose handshake has not finished. */
  private readonly inTlsHandshake = new Set<Socket>();
  /** False once a finished handshake's raw socket could not be found (tlsParent). */
  private tlsHandshakeTracking = true;
  /** Raw sockets stop() closed mid-handshake: their TLS failure is not logged or counted as the client's. */
  private readonly closedAtStop = new WeakSet<Socket>();

  private readonly onClientError = (err: Error & { code?: string }, sock: Duplex): void => {
    if (this.tlsFailed.has(sock)) return;
    this.hub.stats.httpErrors++;
    const s = sock as Socket;
    this.logger.log('warn', 'closing connection', { remote: `${s.remoteAddress}:${s.remotePort}`, reason: `bad HTTP request: ${err.code ?? describeError(err)}` });
    if (err.code !== 'ECONNRESET' && s.writable) s.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else s.destroy();
  };
}

/** Whether `b` starts like a request line (an upper-case method, so far): anything else goes to Node's parser at once, for its 400. */
function looksLikeRequestLine(b: Buffer): boolean {
  const n = Math.min(b.length, 17);
  for (let i = 0; i < n; i++) {
    const c = b[i]!;
    if (c === 0x20) return i > 0;
    if (c < 0x41 || c > 0x5a) return false;
  }
  return n < 17;
}

/** Whether `b` holds a whole HTTP head (a blank line; bare LF as Node's parser tolerates it). */
function headComplete(b: Buffer): boolean {
  return b.indexOf('\r\n\r\n') >= 0 || b.indexOf('\n\n') >= 0;
}

/** The host the relay's URL names: an all-interfaces listener is reached on 127.0.0.1. */
function urlHostOf(host: string): string {
  return host === '::' || host === '0.0.0.0' ? '127.0.0.1' : host;
}

function toKey(k: Buffer | string, what: string): Buffer {
  if (typeof k === 'string') return parseNodePublic(k);
  if (k.length !== KEY_LEN) throw new ConfigError(`${what} key must be ${KEY_LEN} bytes, got ${k.length}`);
  return k;
}

/**
 * The raw TCP socket under a server-side TLSSocket (Node keeps it as `_parent`; no public API gives it),
 * or undefined on a Node that does not.
 */
function tlsParent(sock: TLSSocket): Socket | undefined {
  const p = (sock as { _parent?: unknown })._parent;
  return p instanceof net.Socket ? p : undefined;
}
