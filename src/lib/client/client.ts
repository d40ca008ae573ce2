/**
 * DERPClient: the seed's DERPClient (connect / send / receive / connectedPeers / disconnect) over one
 * relay, with the reference client's behaviour (spec §7, §13): answers server pings, matches pongs,
 * surfaces PeerGone / Health / Restarting as events, detects a silent server and reconnects with
 * backoff, queueing a few packets meanwhile.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { DERPServer } from '../derpmap/types.js';
import { BadKeyError, ClosedError, ConfigError, DerpError, PacketTooLargeError, TimeoutError, describeError } from '../errors.js';
import { CLIENT_READ_TIMEOUT_MS, CONNECT_TIMEOUT_MS, FRAME_HEADER_LEN, FrameType, KEEPALIVE_JITTER_MS, KEY_LEN, MAX_PACKET_SIZE, PING_TIMEOUT_MS, PeerGoneReason } from '../protocol/constants.js';
import { encode, type Frame } from '../protocol/frames.js';
import type { ServerInfo } from '../protocol/handshake.js';
import { NodePrivateKey, formatNodePublic, parseNodePublic } from '../protocol/keys.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { backoffDelay, reconnectPolicy, type ReconnectPolicy } from './backoff.js';
import { DerpConnection } from './connection.js';
import { BoundedQueue } from './packet-queue.js';
import { resolveTarget, type ClientTlsOptions, type DialTarget } from './target.js';
import type { TransportKind } from './transport.js';

/** Read timeout: the reference 2× KeepAlive plus the server's keepalive jitter, so an on-time keepalive never races it. */
export const DEFAULT_READ_TIMEOUT_MS = CLIENT_READ_TIMEOUT_MS + KEEPALIVE_JITTER_MS;
/** Packets held while reconnecting (magicsock's per-region write queue is 32). */
export const DEFAULT_SEND_QUEUE_LIMIT = 32;
/** Received packets buffered for a slow receive() consumer before the oldest are dropped. */
export const DEFAULT_RECEIVE_QUEUE_LIMIT = 4096;

export interface DERPClientOptions {
  /** Default: a fresh key. */
  privateKey?: NodePrivateKey;
  /** 'derp' = HTTP `Upgrade: DERP` (default); 'websocket' = RFC 6455 with subprotocol `derp`. */
  transport?: TransportKind;
  tls?: ClientTlsOptions;
  /** HTTP CONNECT proxy URL, or false to ignore HTTPS_PROXY/HTTP_PROXY. Default: from the environment. */
  proxy?: string | false;
  /** NO_PROXY-style host list (default: no_proxy / NO_PROXY, which only applies to an env proxy). */
  noProxy?: string;
  /** Map nodes: IPv6 head start before IPv4 is dialed. Default IPV6_HEAD_START_MS. */
  ipv6HeadStartMs?: number;
  /** Map nodes: TCP budget per node. Default NODE_DIAL_TIMEOUT_MS. */
  nodeDialTimeoutMs?: number;
  /** Answer server pings (ClientInfo.CanAckPings). Default true. */
  canAckPings?: boolean;
  meshKey?: Buffer;
  isProber?: boolean;
  appName?: string;
  /** Backoff policy, or false to give up when the connection is lost. */
  reconnect?: Partial<ReconnectPolicy> | false;
  /** No frame for this long → the connection is dead. Default DEFAULT_READ_TIMEOUT_MS. */
  readTimeoutMs?: number;
  /** Whole connect budget (TCP + TLS + HTTP + handshake). Default CONNECT_TIMEOUT_MS. */
  connectTimeoutMs?: number;
  /** ping() budget. Default PING_TIMEOUT_MS. */
  pingTimeoutMs?: number;
  /** Packets held while reconnecting; oldest dropped beyond it. Default DEFAULT_SEND_QUEUE_LIMIT. */
  sendQueueLimit?: number;
  /** Received packets held for receive(); oldest dropped beyond it. Default DEFAULT_RECEIVE_QUEUE_LIMIT. */
  receiveQueueLimit?: number;
  logger?: Logger;
}

export interface ReceivedPacket {
  src: Buffer;
  srcText: string;
  data: Buffer;
}

export interface ConnectedEvent {
  serverKey: Buffer;
  serverKeyText: string;
  url: string;
  serverInfo: ServerInfo;
  /** True when this connection replaced a lost one. */
  reconnected: boolean;
}
export interface DisconnectedEvent {
  reason: string;
  error?: DerpError;
  willReconnect: boolean;
}
export interface ReconnectingEvent {
  attempt: number;
  delayMs: number;
  /** Why the previous attempt (or connection) failed. */
  error?: DerpError;
}
export interface PeerGoneEvent {
  peer: string;
  peerKey: Buffer;
  reason: number;
  reasonText: 'disconnected' | 'not-here' | 'unknown';
}
export interface PeerPresentEvent {
  peer: string;
  peerKey: Buffer;
  ip: string;
  port: number;
  flags: number;
}
export interface HealthEvent {
  /** Empty = healthy again. */
  problem: string;
}
export interface RestartingEvent {
  reconnectInMs: number;
  tryForMs: number;
}

export interface DERPClientEvents {
  connected: [ConnectedEvent];
  disconnected: [DisconnectedEvent];
  reconnecting: [ReconnectingEvent];
  peerGone: [PeerGoneEvent];
  peerPresent: [PeerPresentEvent];
  health: [HealthEvent];
  restarting: [RestartingEvent];
  error: [DerpError];
}

export interface DERPClientStats {
  packetsIn: number;
  packetsOut: number;
  /** Received packets dropped because receive() did not keep up. */
  receiveDrops: number;
  /** Packets dropped from the queue held while reconnecting. */
  sendQueueDrops: number;
  connects: number;
}

type State = 'idle' | 'connecting' | 'connected' | 'reconnecting';

interface PendingPing {
  start: number;
  resolve: (ms: number) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
}

function reasonText(r: number): PeerGoneEvent['reasonText'] {
  if (r === PeerGoneReason.Disconnected) return 'disconnected';
  if (r === PeerGoneReason.NotHere) return 'not-here';
  return 'unknown';
}

export class DERPClient extends EventEmitter<DERPClientEvents> {
  readonly publicKey: Buffer;
  private readonly key: NodePrivateKey;
  private readonly logger: Logger;
  private readonly policy: ReconnectPolicy | false;
  private readonly readTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly pingTimeoutMs: number;
  private readonly transportKind: TransportKind;
  private state: State = 'idle';
  /** The servers to use, in order (one, or the nodes of a region); `targetIndex` is the one in use. */
  private targets: DialTarget[] = [];
  private targetIndex = 0;
  private conn: DerpConnection | undefined;
  private session: AbortController | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private restartHint: (RestartingEvent & { deadline?: number }) | undefined;
  private preferred: boolean | undefined;
  private readonly sendQueue: BoundedQueue<Buffer>;
  private readonly recvQueue: BoundedQueue<ReceivedPacket>;
  private readonly pings = new Map<string, PendingPing>();
  private readonly peers = new Set<string>();
  private lastHealth = '';
  private counters = { packetsIn: 0, packetsOut: 0, connects: 0 };

  constructor(private readonly opts: DERPClientOptions = {}) {
    super();
    this.key = opts.privateKey ?? NodePrivateKey.generate();
    this.publicKey = this.key.publicKey;
    this.logger = opts.logger ?? silentLogger;
    this.policy = opts.reconnect === false ? false : reconnectPolicy(opts.reconnect);
    this.readTimeoutMs = opts.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? PING_TIMEOUT_MS;
    this.transportKind = opts.transport ?? 'derp';
    if (this.transportKind !== 'derp' && this.transportKind !== 'websocket') throw new ConfigError(`unknown transport ${JSON.stringify(this.transportKind)}`);
    this.sendQueue = new BoundedQueue(opts.sendQueueLimit ?? DEFAULT_SEND_QUEUE_LIMIT);
    this.recvQueue = new BoundedQueue(opts.receiveQueueLimit ?? DEFAULT_RECEIVE_QUEUE_LIMIT);
  }

  publicText(): string {
    return formatNodePublic(this.publicKey);
  }

  get serverKey(): Buffer | undefined {
    return this.conn?.serverKey;
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  /** Last Health text from the server ('' = healthy). */
  get health(): string {
    return this.lastHealth;
  }

  get receiveDrops(): number {
    return this.recvQueue.dropped;
  }

  get stats(): DERPClientStats {
    return { ...this.counters, receiveDrops: this.recvQueue.dropped, sendQueueDrops: this.sendQueue.dropped };
  }

  /**
   * Connects and completes the handshake; resolves after ServerInfo. Later losses reconnect by themselves.
   * Several servers (the nodes of one meshed region) are tried in order, as derphttp's dialRegion does;
   * a reconnect starts with the one last connected and moves on to the next while it does not answer.
   */
  async connect(server: string | URL | DERPServer | readonly (string | URL | DERPServer)[], signal?: AbortSignal): Promise<void> {
    if (this.state !== 'idle') throw new ConfigError(`connect() called while ${this.state}; call disconnect() first`);
    const { proxy, noProxy, ipv6HeadStartMs, nodeDialTimeoutMs } = this.opts;
    const servers = Array.isArray(server) ? (server as readonly (string | URL | DERPServer)[]) : [server as string | URL | DERPServer];
    if (servers.length === 0) throw new ConfigError('connect() needs at least one server');
    this.targets = servers.map((s) => resolveTarget(s, this.opts.tls, { proxy, noProxy, ipv6HeadStartMs, nodeDialTimeoutMs }));
    this.targetIndex = 0;
    this.session = new AbortController();
    this.recvQueue.reopen();
    this.state = 'connecting';
    try {
      await this.openAny(false, signal);
    } catch (err) {
      if (this.state === 'connecting') this.state = 'idle';
      throw err;
    }
  }

  /** One attempt: each server once, from the current one; the first that connects becomes current. */
  private async openAny(reconnected: boolean, signal?: AbortSignal): Promise<void> {
    const session = this.session!;
    const n = this.targets.length;
    for (let i = 0; ; i++) {
      const index = (this.targetIndex + i) % n;
      try {
        await this.openOnce(this.targets[index]!, reconnected, signal);
        this.targetIndex = index;
        return;
      } catch (err) {
        if (i === n - 1 || session.signal.aborted || session !== this.session || signal?.aborted === true) throw err;
        this.logger.log('info', 'server did not answer; trying the next one', { url: this.targets[index]!.url.href, reason: describeError(err) });
      }
    }
  }

  private async openOnce(target: DialTarget, reconnected: boolean, signal?: AbortSignal): Promise<void> {
    const session = this.session!;
    const timeout = new AbortController();
    const ms = this.connectTimeoutMs;
    const timer = setTimeout(() => timeout.abort(new TimeoutError(`connect to ${target.url.href} timed out after ${ms} ms`, { context: { url: target.url.href, timeoutMs: ms } })), ms);
    const signals = [timeout.signal, session.signal];
    if (signal) signals.push(signal);
    let conn: DerpConnection;
    try {
      conn = await DerpConnection.open({
        target,
        transport: this.transportKind,
        key: this.key,
        clientInfo: {
          canAckPings: this.opts.canAckPings ?? true,
          ...(this.opts.meshKey ? { meshKey: this.opts.meshKey } : {}),
          ...(this.opts.isProber ? { isProber: true } : {}),
          ...(this.opts.appName ? { appName: this.opts.appName } : {}),
        },
        signal: AbortSignal.any(signals),
        readTimeoutMs: this.readTimeoutMs,
        logger: this.logger,
        onFrame: (f, c) => this.onFrame(f, c),
        onClose: (c, err) => this.onConnClose(c, err),
      });
    } catch (err) {
      if (signal?.aborted && err === signal.reason) throw err;
      if (err instanceof DerpError) throw err;
      throw new ClosedError(`connect to ${target.url.href} failed: ${describeError(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    if (session.signal.aborted || session !== this.session) {
      conn.destroy();
      throw new ClosedError('client disconnected while connecting');
    }
    this.conn = conn;
    this.state = 'connected';
    this.attempt = 0;
    this.restartHint = undefined;
    this.counters.connects++;
    if (this.preferred !== undefined) conn.enqueue(encode.notePreferred(this.preferred));
    for (const frame of this.sendQueue.drain()) conn.enqueue(frame);
    const serverKeyText = formatNodePublic(conn.serverKey);
    this.logger.log('info', reconnected ? 'reconnected' : 'connected', { url: target.url.href, server: serverKeyText, transport: this.transportKind });
    this.emit('connected', { serverKey: conn.serverKey, serverKeyText, url: target.url.href, serverInfo: conn.serverInfo, reconnected });
  }

  private onConnClose(conn: DerpConnection, err: DerpError | undefined): void {
    if (conn !== this.conn) return;
    this.conn = undefined;
    for (const [id, p] of this.pings) {
      clearTimeout(p.timer);
      p.reject(new ClosedError('connection closed before the pong arrived'));
      this.pings.delete(id);
    }
    const reason = err ? describeError(err) : 'closed by client';
    if (this.state !== 'connected') {
      // disconnect() was called: it owns the rest of the teardown.
      this.emit('disconnected', { reason, willReconnect: false });
      return;
    }
    if (this.policy === false) {
      this.state = 'idle';
      this.logger.log('warn', 'connection lost', { reason });
      this.emit('disconnected', { reason, ...(err ? { error: err } : {}), willReconnect: false });
      this.recvQueue.end();
      this.sendQueue.drain();
      return;
    }
    this.state = 'reconnecting';
    this.logger.log('warn', 'connection lost; reconnecting', { reason });
    this.emit('disconnected', { reason, ...(err ? { error: err } : {}), willReconnect: true });
    this.scheduleReconnect(err);
  }

  private scheduleReconnect(lastErr: DerpError | undefined): void {
    if (this.state !== 'reconnecting' || this.policy === false) return;
    const now = performance.now();
    let delay: number;
    const hint = this.restartHint;
    if (hint && hint.deadline === undefined) {
      // Restarting frame: wait what the server asked, then retry with a fresh backoff for tryFor.
      hint.deadline = now + hint.reconnectInMs + hint.tryForMs;
      this.attempt = 0;
      delay = hint.reconnectInMs;
    } else {
      if (hint && hint.deadline !== undefined && now > hint.deadline) {
        this.logger.log('warn', 'server did not come back within its restart window; normal backoff', { tryForMs: hint.tryForMs });
        this.restartHint = undefined;
      }
      this.attempt++;
      delay = backoffDelay(this.policy, this.attempt);
    }
    this.emit('reconnecting', { attempt: this.attempt, delayMs: delay, ...(lastErr ? { error: lastErr } : {}) });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.state !== 'reconnecting') return;
      this.openAny(true).catch((err: unknown) => {
        if (this.state !== 'reconnecting') return;
        const e = err instanceof DerpError ? err : new ClosedError(describeError(err), { cause: err });
        this.logger.log('warn', 'reconnect attempt failed', { attempt: this.attempt, reason: describeError(e) });
        if (this.listenerCount('error') > 0) this.emit('error', e);
        this.scheduleReconnect(e);
      });
    }, delay);
  }

  /** Closes the connection, stops reconnecting, ends receive() iterators. */
  async disconnect(): Promise<void> {
    const conn = this.conn;
    this.state = 'idle';
    this.session?.abort(new ClosedError('client disconnected'));
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.sendQueue.drain();
    this.recvQueue.end();
    if (conn) await conn.close();
    this.conn = undefined;
  }

  private parseDst(dst: Buffer | Uint8Array | string): { key: Buffer; text: string } {
    if (typeof dst === 'string') {
      const key = parseNodePublic(dst);
      return { key, text: formatNodePublic(key) };
    }
    if (dst.length !== KEY_LEN) throw new BadKeyError(`destination key must be ${KEY_LEN} bytes, got ${dst.length}`);
    return { key: Buffer.from(dst.buffer, dst.byteOffset, dst.byteLength), text: formatNodePublic(dst) };
  }

  /**
   * Sends one packet. Resolves once it is queued for the socket (waiting while the socket is
   * backlogged); DERP is best-effort, so resolution is not delivery. While reconnecting, packets
   * are held (oldest dropped beyond sendQueueLimit).
   */
  async send(dstKey: Buffer | Uint8Array | string, data: Uint8Array, signal?: AbortSignal): Promise<void> {
    const { key, text } = this.parseDst(dstKey);
    if (data.length > MAX_PACKET_SIZE) throw new PacketTooLargeError(data.length, MAX_PACKET_SIZE);
    signal?.throwIfAborted();
    const frame = encode.sendPacket(key, data);
    this.peers.add(text);
    const conn = this.conn;
    if (this.state === 'connected' && conn) {
      this.counters.packetsOut++;
      conn.enqueue(frame);
      if (conn.backlogged) await conn.waitWritable(signal);
      return;
    }
    if (this.state === 'connecting' || this.state === 'reconnecting') {
      this.counters.packetsOut++;
      this.sendQueue.push(frame);
      return;
    }
    throw new ClosedError('not connected: call connect() first');
  }

  /** Received packets, in order. Ends when disconnect() is called (or the connection is lost without reconnect). */
  receive(signal?: AbortSignal): AsyncIterableIterator<ReceivedPacket> {
    return this.recvQueue.iterate(signal);
  }

  /** nodekey texts of peers we exchanged packets with and have not seen PeerGone for. */
  connectedPeers(): string[] {
    return [...this.peers];
  }

  /** Round trip to the server in ms (Ping with 8 random bytes, matched Pong). */
  ping(signal?: AbortSignal): Promise<number> {
    const conn = this.conn;
    if (!conn || this.state !== 'connected') return Promise.reject(new ClosedError('not connected'));
    signal?.throwIfAborted();
    const data = randomBytes(8);
    const id = data.toString('hex');
    return new Promise<number>((resolve, reject) => {
      const onAbort = () => {
        const p = this.pings.get(id);
        if (p) clearTimeout(p.timer);
        this.pings.delete(id);
        reject(signal!.reason);
      };
      const timer = setTimeout(() => {
        this.pings.delete(id);
        signal?.removeEventListener('abort', onAbort);
        reject(new TimeoutError(`no pong within ${this.pingTimeoutMs} ms`, { context: { timeoutMs: this.pingTimeoutMs } }));
      }, this.pingTimeoutMs);
      this.pings.set(id, {
        start: performance.now(),
        resolve: (ms) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(ms);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
        timer,
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      conn.enqueue(encode.ping(data));
    });
  }

  // ------------------------------------------------------------ mesh (spec §10): need the mesh key

  /** Asks the server to report its local clients (PeerPresent, then PeerPresent / PeerGone events). */
  watchConnectionChanges(): void {
    const conn = this.conn;
    if (this.state !== 'connected' || conn === undefined) throw new ClosedError('not connected');
    conn.enqueue(encode.watchConns());
  }

  /**
   * Writes ForwardPacket(src, dst, data), where `buf[dstOff, +32)` is dst and the `len` bytes after it
   * the data. Never queued while reconnecting: false when not connected or when more than `maxBuffered`
   * bytes already wait for the socket (the caller counts the drop).
   */
  forwardPacket(src: Buffer, buf: Buffer, dstOff: number, len: number, maxBuffered: number): boolean {
    const conn = this.conn;
    if (this.state !== 'connected' || conn === undefined || conn.closed || conn.bufferedBytes > maxBuffered) return false;
    // Written in place into the connection's batch: one copy per packet, no buffer per packet.
    const { buf: b, off } = conn.reserve(FRAME_HEADER_LEN + 2 * KEY_LEN + len);
    b[off] = FrameType.ForwardPacket;
    b.writeUInt32BE(2 * KEY_LEN + len, off + 1);
    src.copy(b, off + FRAME_HEADER_LEN, 0, KEY_LEN);
    buf.copy(b, off + FRAME_HEADER_LEN + KEY_LEN, dstOff, dstOff + KEY_LEN + len);
    return true;
  }

  /** Asks the server to close every connection of `peer` (spec §10.4). */
  closePeer(peer: Buffer | Uint8Array | string): void {
    const conn = this.conn;
    if (this.state !== 'connected' || conn === undefined) throw new ClosedError('not connected');
    conn.enqueue(encode.closePeer(this.parseDst(peer).key));
  }

  /** Tells the server whether this is our home relay (stats only); re-sent after each reconnect. */
  notePreferred(preferred: boolean): void {
    this.preferred = preferred;
    if (this.conn && this.state === 'connected') this.conn.enqueue(encode.notePreferred(preferred));
  }

  private onFrame(f: Frame, conn: DerpConnection): void {
    switch (f.type) {
      case 'RecvPacket': {
        const srcText = formatNodePublic(f.src);
        this.counters.packetsIn++;
        this.peers.add(srcText);
        this.recvQueue.push({ src: f.src, srcText, data: f.data });
        return;
      }
      case 'KeepAlive':
        return;
      case 'PeerGone': {
        const peer = formatNodePublic(f.peer);
        this.peers.delete(peer);
        this.emit('peerGone', { peer, peerKey: Buffer.from(f.peer), reason: f.reason, reasonText: reasonText(f.reason) });
        return;
      }
      case 'PeerPresent':
        this.emit('peerPresent', { peer: formatNodePublic(f.peer), peerKey: Buffer.from(f.peer), ip: f.ip, port: f.port, flags: f.flags });
        return;
      case 'Ping':
        if (this.opts.canAckPings ?? true) conn.enqueue(encode.pong(f.data));
        return;
      case 'Pong': {
        const id = f.data.toString('hex');
        const p = this.pings.get(id);
        if (!p) {
          this.logger.log('debug', 'unmatched pong', { data: id });
          return;
        }
        this.pings.delete(id);
        clearTimeout(p.timer);
        p.resolve(performance.now() - p.start);
        return;
      }
      case 'Health':
        this.lastHealth = f.problem;
        this.emit('health', { problem: f.problem });
        return;
      case 'Restarting':
        this.restartHint = { reconnectInMs: f.reconnectInMs, tryForMs: f.tryForMs };
        this.logger.log('info', 'server is restarting', { reconnectInMs: f.reconnectInMs, tryForMs: f.tryForMs });
        this.emit('restarting', { reconnectInMs: f.reconnectInMs, tryForMs: f.tryForMs });
        return;
      default:
        // Stray ServerKey (fast start), unknown and wrong-direction frames are skipped (derp_client.go: recvTimeout).
        this.logger.log('debug', 'skipping frame', { type: f.type });
    }
  }
}
