/**
 * STUN client: Tailscale-style Binding requests (so derper answers) with RFC 5389 retransmission, and a
 * transaction table that runs many probes over one UDP socket (netcheck compares the mapping seen by
 * different servers from the same socket).
 */
import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { ClosedError, ConnectError, ProtocolError, TimeoutError, describeError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { DEFAULT_STUN_PORT } from './server.js';
import {
  MessageType,
  TRANSACTION_ID_LENGTH,
  buildBindingRequest,
  decodeErrorCodeValue,
  getAttribute,
  AttrType,
  parseBindingResponse,
  parseMessage,
} from './message.js';

/** RFC 5389 §7.2.1 initial retransmission timeout. */
export const DEFAULT_RTO_MS = 500;
/** RFC 5389 §7.2.1 Rc: requests sent in total (1 + 6 retransmissions). */
export const DEFAULT_MAX_REQUESTS = 7;
/** RFC 5389 §7.2.1 Rm: after the last request, wait Rm × RTO (16 × 500 ms = 8 s; 39.5 s in all). */
export const DEFAULT_FINAL_WAIT_FACTOR = 16;
/** Single-shot wait when retransmission is off; net/netcheck stunProbeTimeout. */
export const DEFAULT_PROBE_TIMEOUT_MS = 3_000;

export interface StunProbeResult {
  /** Public (server-reflexive) address as the server saw it; IPv4-mapped results are unmapped. */
  address: string;
  port: number;
  family: 4 | 6;
  /** From the first transmission to the matching reply (Tailscale measures the same way). */
  rttMs: number;
  /** Where the request went. */
  server: { host: string; address: string; port: number };
  transactionId: Buffer;
  /** Requests sent, including the first. */
  attempts: number;
}

export interface StunTransactionOptions {
  /** Overall deadline. Default: the RFC schedule (39.5 s) with retransmission, DEFAULT_PROBE_TIMEOUT_MS without. */
  timeoutMs?: number;
  /** RFC 5389 retransmission (default true); false sends once and waits timeoutMs. */
  retransmit?: boolean;
  rtoMs?: number;
  maxRequests?: number;
  finalWaitFactor?: number;
  signal?: AbortSignal;
  /** Transaction ID to use (tests); default 12 random bytes. */
  transactionId?: Buffer;
}

interface Transaction {
  key: string;
  host: string;
  address: string;
  port: number;
  request: Buffer;
  firstSent: number;
  attempts: number;
  timer: NodeJS.Timeout | undefined;
  resolve: (r: StunProbeResult) => void;
  reject: (e: unknown) => void;
  cleanup: () => void;
}

/**
 * Matches Binding responses to in-flight requests by transaction ID on one dgram socket. Datagrams that
 * match nothing (other traffic, late replies, stray requests) are ignored.
 */
export class StunSocket {
  private readonly txns = new Map<string, Transaction>();
  private readonly onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    this.handleMessage(msg, rinfo);
  };
  private closed = false;
  /** Datagrams that were not a reply to any in-flight request. */
  unmatched = 0;

  constructor(
    readonly socket: dgram.Socket,
    private readonly options: { logger?: Logger; ownsSocket?: boolean; family?: 4 | 6 } = {},
  ) {
    socket.on('message', this.onMessage);
  }

  /** Binds a fresh socket (ephemeral port unless given) and owns it. */
  static async create(type: 'udp4' | 'udp6', bind: { address?: string; port?: number } = {}, logger?: Logger): Promise<StunSocket> {
    const socket = dgram.createSocket(type);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        socket.close();
        reject(new ConnectError(`cannot bind ${type} socket for STUN: ${describeError(err)}`, { cause: err, context: { type, ...bind } }));
      };
      socket.once('error', onError);
      socket.bind(bind.port ?? 0, bind.address, () => {
        socket.off('error', onError);
        resolve();
      });
    });
    socket.on('error', (err) => (logger ?? silentLogger).log('warn', 'stun: client socket error', { error: describeError(err) }));
    return new StunSocket(socket, { logger, ownsSocket: true });
  }

  /** Family used to resolve host names: the option, else the bound socket's, else 4 (unbound sockets auto-bind as given). */
  get family(): 4 | 6 {
    if (this.options.family) return this.options.family;
    try {
      return this.socket.address().family === 'IPv6' ? 6 : 4;
    } catch (err) {
      // Not bound yet: address() throws ERR_SOCKET_DGRAM_NOT_BOUND; fall back to IPv4.
      if ((err as NodeJS.ErrnoException).code !== 'ERR_SOCKET_DGRAM_NOT_BOUND') throw err;
      return 4;
    }
  }

  get inFlight(): number {
    return this.txns.size;
  }

  /** Sends a Tailscale-style Binding request to host:port and resolves with the mapped address. */
  async send(host: string, port: number = DEFAULT_STUN_PORT, options: StunTransactionOptions = {}): Promise<StunProbeResult> {
    if (this.closed) throw new ClosedError('STUN socket closed', { context: { host, port } });
    options.signal?.throwIfAborted();
    const address = isIP(host) ? host : (await lookup(host, { family: this.family })).address;
    options.signal?.throwIfAborted();
    const txid = options.transactionId ?? randomBytes(TRANSACTION_ID_LENGTH);
    const key = txid.toString('hex');
    if (this.txns.has(key)) throw new ProtocolError('transaction ID already in flight', { context: { transactionId: key } });
    const retransmit = options.retransmit ?? true;
    const rto = options.rtoMs ?? DEFAULT_RTO_MS;
    const maxRequests = retransmit ? Math.max(1, options.maxRequests ?? DEFAULT_MAX_REQUESTS) : 1;
    const finalWait = retransmit ? rto * (options.finalWaitFactor ?? DEFAULT_FINAL_WAIT_FACTOR) : (options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS);
    const log = this.options.logger ?? silentLogger;

    return new Promise<StunProbeResult>((resolve, reject) => {
      let deadline: NodeJS.Timeout | undefined;
      const onAbort = (): void => fail(options.signal!.reason);
      const t: Transaction = {
        key,
        host,
        address,
        port,
        request: buildBindingRequest(txid),
        firstSent: 0,
        attempts: 0,
        timer: undefined,
        resolve: (r) => {
          t.cleanup();
          resolve(r);
        },
        reject: (e) => {
          t.cleanup();
          reject(e);
        },
        cleanup: () => {
          clearTimeout(t.timer);
          clearTimeout(deadline);
          options.signal?.removeEventListener('abort', onAbort);
          this.txns.delete(key);
        },
      };
      const fail = (e: unknown): void => t.reject(e);
      const timeout = (): void =>
        fail(
          new TimeoutError(`no STUN response from ${host}:${port} after ${t.attempts} request(s)`, {
            context: { host, address, port, attempts: t.attempts },
          }),
        );
      const transmit = (): void => {
        t.attempts++;
        const interval = t.attempts < maxRequests ? rto * 2 ** (t.attempts - 1) : finalWait;
        t.timer = setTimeout(t.attempts < maxRequests ? transmit : timeout, interval);
        if (t.attempts === 1) t.firstSent = performance.now();
        this.socket.send(t.request, port, address, (err) => {
          if (!err) return;
          log.log('debug', 'stun: send failed', { host, address, port, error: describeError(err) });
          fail(new ConnectError(`cannot send STUN request to ${address}:${port}: ${describeError(err)}`, { cause: err, context: { host, address, port } }));
        });
      };
      this.txns.set(key, t);
      if (options.signal) options.signal.addEventListener('abort', onAbort, { once: true });
      if (options.timeoutMs !== undefined && retransmit) deadline = setTimeout(timeout, options.timeoutMs);
      transmit();
    });
  }

  /**
   * Offers one datagram to the table; true if it completed a transaction. Attached to the socket's
   * 'message' event already; public so a caller demultiplexing its own socket can route packets here.
   */
  handleMessage(msg: Buffer, _rinfo?: dgram.RemoteInfo): boolean {
    const m = parseMessage(msg, { strict: false });
    const t = typeof m === 'string' ? undefined : this.txns.get(m.transactionId.toString('hex'));
    if (typeof m === 'string' || !t) {
      this.unmatched++;
      return false;
    }
    if (m.type === MessageType.BindingError) {
      const ec = getAttribute(m, AttrType.ErrorCode);
      const err = ec ? decodeErrorCodeValue(ec.value) : undefined;
      t.reject(
        new ProtocolError(`STUN error response from ${t.address}:${t.port}: ${err ? `${err.code} ${err.reason}` : 'no ERROR-CODE'}`, {
          context: { host: t.host, port: t.port, code: err?.code, reason: err?.reason },
        }),
      );
      return true;
    }
    const r = parseBindingResponse(msg);
    if (typeof r === 'string') {
      // A request carrying our txid is our own probe reflected back (old hairpin probes); a bad
      // FINGERPRINT may be corruption or spoofing: keep waiting for a good reply in both cases.
      if (r === 'not_binding_success' || r === 'bad_fingerprint') {
        this.unmatched++;
        return false;
      }
      t.reject(new ProtocolError(`unusable STUN response from ${t.address}:${t.port}: ${r}`, { context: { host: t.host, port: t.port, reason: r } }));
      return true;
    }
    t.resolve({
      address: r.address,
      port: r.port,
      family: r.family,
      rttMs: performance.now() - t.firstSent,
      server: { host: t.host, address: t.address, port: t.port },
      transactionId: r.transactionId,
      attempts: t.attempts,
    });
    return true;
  }

  /** Fails in-flight transactions with ClosedError, detaches, and closes the socket if owned. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of [...this.txns.values()]) t.reject(new ClosedError('STUN socket closed', { context: { host: t.host, port: t.port } }));
    this.socket.off('message', this.onMessage);
    if (this.options.ownsSocket) await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }
}

export interface StunProbeOptions extends StunTransactionOptions {
  host: string;
  port?: number;
  /** Socket family when `socket` is not given; default from the host literal, else 4. */
  family?: 4 | 6;
  /** Reuse this socket (not closed afterwards). */
  socket?: dgram.Socket;
  logger?: Logger;
}

/** One STUN probe: binds a socket (unless given), sends, waits for the mapped address, cleans up. */
export async function stunProbe(options: StunProbeOptions): Promise<StunProbeResult> {
  const { host, port = DEFAULT_STUN_PORT, socket, logger, ...txn } = options;
  const family = options.family ?? (isIP(host) === 6 ? 6 : 4);
  const s = socket ? new StunSocket(socket, { logger, family }) : await StunSocket.create(family === 6 ? 'udp6' : 'udp4', {}, logger);
  try {
    return await s.send(host, port, txn);
  } finally {
    await s.close();
  }
}
