/**
 * UDP STUN server (RFC 5389 Binding). Answers Tailscale clients (SOFTWARE "tailnode" + FINGERPRINT) and
 * any other RFC 5389 client; stays silent for anything that is not a valid request. Compared with
 * derper's net/stunserver it adds 420 Unknown Attribute, MAPPED-ADDRESS for old clients, FINGERPRINT when
 * asked, per-source rate limiting, an amplification bound and a short retransmission cache.
 */
import * as dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import { isIPv4, isIPv6 } from 'node:net';
import { DerpError, describeError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { RateLimiter, ResponseCache, type Clock } from './limits.js';
import {
  AttrType,
  FINGERPRINT_ATTR_LENGTH,
  HEADER_LENGTH,
  MessageType,
  bindingSuccessLength,
  encodeErrorCodeValue,
  encodeMessage,
  encodeUnknownAttributesValue,
  ipToBytes,
  isComprehensionRequired,
  parseMessage,
  unmapIPv4,
  verifyFingerprint,
  writeBindingSuccess,
} from './message.js';

/** IANA "stun" port (RFC 5389 §18.4); derper's --stun-port default. */
export const DEFAULT_STUN_PORT = 3478;
/**
 * Responses are at most this many times the request's size. Same factor as QUIC's anti-amplification
 * limit (RFC 9000 §8.1). A bare 20-byte request gets 60 bytes: enough for XOR-MAPPED + MAPPED over IPv4
 * (44) but not over IPv6 (68), where MAPPED-ADDRESS is left out (44). Tailscale's 40-byte request always
 * gets the full answer (≤ 76 bytes).
 */
export const MAX_AMPLIFICATION_FACTOR = 3;
/** Default responses per source IP per second (bucket capacity = one second's worth). Generous because many clients may share one NAT address. */
export const DEFAULT_RATE_LIMIT_PER_SECOND = 100;
/** Source IPs tracked by the rate limiter before the oldest is forgotten. */
export const DEFAULT_RATE_LIMIT_TABLE_MAX = 65_536;
/**
 * How long a response is kept for retransmissions of the same request. RFC 5389's 39.5 s transaction
 * timeout is far longer than needed: clients retransmit at 0.5, 1.5, 3.5, 7.5 s, and recomputing a
 * Binding response is always allowed (§7.3.1), so the cache only has to cover the first few.
 */
export const DEFAULT_CACHE_TTL_MS = 10_000;
/** Cached responses kept at most (≈ 100 bytes each). */
export const DEFAULT_CACHE_MAX = 10_000;
/** UNKNOWN-ATTRIBUTES lists at most this many types (RFC 5389 does not bound it; keeps 420s small). */
export const MAX_UNKNOWN_ATTRIBUTES_LISTED = 16;
/** RFC 5389 §15.6 reason phrase for 420. */
const REASON_420 = 'Unknown Attribute';

/** Comprehension-required attributes this server understands (address/error attributes are known but ignored in a request). */
const KNOWN_REQUIRED = new Set<number>([AttrType.MappedAddress, AttrType.XorMappedAddress, AttrType.ErrorCode, AttrType.UnknownAttributes]);

export type StunDisposition =
  | 'success'
  | 'unknown_attribute'
  | 'cached'
  | 'not_stun'
  | 'bad_fingerprint'
  | 'rate_limited'
  | 'amplification'
  | 'write_error';

export interface StunServerStats {
  /** derper's stun_requests{disposition}. */
  requests: { success: number; not_stun: number; read_error: number; write_error: number };
  /** derper's stun_addrfamily{family}, counted per answered request. */
  addrFamily: { ipv4: number; ipv6: number };
  /** 420 responses sent. */
  unknownAttribute: number;
  /** Retransmissions answered from the cache. */
  cachedReplies: number;
  /** Requests dropped by the per-source rate limit. */
  rateLimited: number;
  /** Requests dropped because FINGERPRINT was wrong (also counted as not_stun). */
  badFingerprint: number;
  /** Requests whose answer was shortened (MAPPED-ADDRESS left out) by the amplification bound. */
  amplificationReduced: number;
  /** Requests dropped because even the minimal answer exceeded the amplification bound. */
  amplificationDropped: number;
}

export interface StunServerOptions {
  /** UDP port; default 3478, 0 = ephemeral (then the IPv4 and IPv6 sockets get different ports). */
  port?: number;
  /** IPv4 bind address (default 0.0.0.0). An IPv6 literal here binds only a udp6 socket on it. */
  host?: string;
  /** Also bind an IPv6 socket: true = must succeed, 'auto' = log and continue without it. Default false. */
  ipv6?: boolean | 'auto';
  /** IPv6 bind address when ipv6 is set (default ::, v6-only so it can share the IPv4 port). */
  host6?: string;
  /** SO_REUSEPORT: several sockets (e.g. one per process) share the port and the kernel spreads sources over them. Default false. */
  reusePort?: boolean;
  logger?: Logger;
  /** Responses per source IP per second; ≤ 0 disables. Default DEFAULT_RATE_LIMIT_PER_SECOND. */
  rateLimitPerSecond?: number;
  rateLimitTableMax?: number;
  /** Retransmission cache lifetime; 0 disables the cache. Default DEFAULT_CACHE_TTL_MS. */
  cacheTtlMs?: number;
  cacheMax?: number;
  /** Millisecond clock for the rate limiter and cache (tests inject one). */
  clock?: Clock;
}

export interface StunHandledEvent {
  disposition: StunDisposition;
  address: string;
  port: number;
  /** Bytes sent back (0 when silent). */
  responseBytes: number;
}

interface Bound {
  socket: dgram.Socket;
  family: 4 | 6;
}

/** Emits 'handled' (StunHandledEvent) after each datagram, so tests can wait for silent drops. */
export class StunServer extends EventEmitter<{ handled: [StunHandledEvent] }> {
  private readonly opts: Required<Omit<StunServerOptions, 'clock' | 'logger'>>;
  private readonly log: Logger;
  private readonly limiter: RateLimiter;
  private readonly cache: ResponseCache;
  private readonly bound: Bound[] = [];
  private readonly counters: StunServerStats = {
    requests: { success: 0, not_stun: 0, read_error: 0, write_error: 0 },
    addrFamily: { ipv4: 0, ipv6: 0 },
    unknownAttribute: 0,
    cachedReplies: 0,
    rateLimited: 0,
    badFingerprint: 0,
    amplificationReduced: 0,
    amplificationDropped: 0,
  };
  private onAbort: (() => void) | undefined;
  private abortSignal: AbortSignal | undefined;

  constructor(options: StunServerOptions = {}) {
    super();
    this.opts = {
      port: options.port ?? DEFAULT_STUN_PORT,
      host: options.host ?? '0.0.0.0',
      ipv6: options.ipv6 ?? false,
      host6: options.host6 ?? '::',
      reusePort: options.reusePort ?? false,
      rateLimitPerSecond: options.rateLimitPerSecond ?? DEFAULT_RATE_LIMIT_PER_SECOND,
      rateLimitTableMax: options.rateLimitTableMax ?? DEFAULT_RATE_LIMIT_TABLE_MAX,
      cacheTtlMs: options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS,
      cacheMax: options.cacheMax ?? DEFAULT_CACHE_MAX,
    };
    this.log = options.logger ?? silentLogger;
    const clock = options.clock ?? (() => performance.now());
    this.limiter = new RateLimiter(this.opts.rateLimitPerSecond, this.opts.rateLimitTableMax, clock);
    this.cache = new ResponseCache(this.opts.cacheTtlMs, this.opts.cacheMax, clock);
  }

  /** Binds the sockets. An aborted `signal` stops the server. */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.bound.length > 0) throw new DerpError('DERP_ERR_SERVER', 'STUN server already started');
    const { host, port, ipv6, host6 } = this.opts;
    try {
      if (isIPv6(host)) {
        await this.bind('udp6', host, port, false);
      } else {
        await this.bind('udp4', host, port, false);
        if (ipv6 !== false) {
          try {
            await this.bind('udp6', host6, port, true);
          } catch (err) {
            if (ipv6 === true) throw err;
            this.log.log('warn', 'stun: no IPv6 socket', { host: host6, port, error: describeError(err) });
          }
        }
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    if (signal) {
      this.abortSignal = signal;
      this.onAbort = () => void this.stop();
      if (signal.aborted) await this.stop();
      else signal.addEventListener('abort', this.onAbort, { once: true });
    }
    for (const b of this.bound) this.log.log('debug', 'stun: listening', { family: b.family, address: b.socket.address().address, port: b.socket.address().port });
  }

  private bind(type: 'udp4' | 'udp6', host: string, port: number, ipv6Only: boolean): Promise<void> {
    const socket = dgram.createSocket({ type, ipv6Only, reusePort: this.opts.reusePort });
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        socket.close();
        reject(new DerpError('DERP_ERR_SERVER', `cannot listen for STUN on ${type} ${host}:${port}: ${describeError(err)}`, { cause: err, context: { host, port, type } }));
      };
      socket.once('error', onError);
      socket.bind(port, host, () => {
        socket.off('error', onError);
        socket.on('error', (err: NodeJS.ErrnoException) => {
          if (err.syscall === 'send') this.counters.requests.write_error++;
          else this.counters.requests.read_error++;
          this.log.log('warn', 'stun: socket error', { type, error: describeError(err) });
        });
        socket.on('message', (msg, rinfo) => {
          try {
            this.handle(socket, msg, rinfo);
          } catch (err) {
            // A bug on one datagram must not take the server down; count it and keep serving.
            this.counters.requests.read_error++;
            this.log.log('error', 'stun: failed to handle datagram', { address: rinfo.address, port: rinfo.port, size: msg.length, error: describeError(err) });
          }
        });
        this.bound.push({ socket, family: type === 'udp4' ? 4 : 6 });
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    if (this.abortSignal && this.onAbort) this.abortSignal.removeEventListener('abort', this.onAbort);
    this.abortSignal = undefined;
    this.onAbort = undefined;
    const sockets = this.bound.splice(0);
    await Promise.all(sockets.map((b) => new Promise<void>((resolve) => b.socket.close(() => resolve()))));
  }

  /** True while at least one socket is bound (a socket error closes it). */
  get listening(): boolean {
    return this.bound.length > 0;
  }

  /** The first bound socket's port (the IPv4 one unless only IPv6 is bound); 0 before start. */
  get port(): number {
    const b = this.bound[0];
    return b ? b.socket.address().port : 0;
  }

  /** Bound ports per family. */
  get ports(): { ipv4?: number; ipv6?: number } {
    const out: { ipv4?: number; ipv6?: number } = {};
    for (const b of this.bound) out[b.family === 4 ? 'ipv4' : 'ipv6'] = b.socket.address().port;
    return out;
  }

  stats(): StunServerStats {
    const c = this.counters;
    return { ...c, requests: { ...c.requests }, addrFamily: { ...c.addrFamily } };
  }

  private done(disposition: StunDisposition, rinfo: dgram.RemoteInfo, responseBytes = 0): void {
    if (this.listenerCount('handled') > 0) this.emit('handled', { disposition, address: rinfo.address, port: rinfo.port, responseBytes });
  }

  private handle(socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const c = this.counters;
    const m = parseMessage(msg);
    if (typeof m === 'string' || m.type !== MessageType.BindingRequest) {
      c.requests.not_stun++;
      return this.done('not_stun', rinfo);
    }
    const hasFingerprint = m.fingerprintOffset >= 0;
    if (hasFingerprint && !verifyFingerprint(m)) {
      c.requests.not_stun++;
      c.badFingerprint++;
      return this.done('bad_fingerprint', rinfo);
    }
    // Sources on a dual-stack socket arrive as ::ffff:a.b.c.d; answer them as the IPv4 clients they are.
    const ip = unmapIPv4(rinfo.address);
    if (!this.limiter.allow(ip)) {
      c.rateLimited++;
      return this.done('rate_limited', rinfo);
    }
    const budget = msg.length * MAX_AMPLIFICATION_FACTOR;
    const cacheKey = `${ip}|${rinfo.port}|${m.transactionId.toString('hex')}`;
    const cached = this.cache.get(cacheKey);
    // A shorter "retransmission" (spoofable) must not get a reply sized for the original request.
    if (cached && cached.length <= budget) {
      c.cachedReplies++;
      return this.send(socket, cached, rinfo, 'cached', isIPv4(ip));
    }

    const unknown: number[] = [];
    for (const a of m.attributes) {
      if (isComprehensionRequired(a.type) && !KNOWN_REQUIRED.has(a.type) && !unknown.includes(a.type)) unknown.push(a.type);
    }
    if (unknown.length > 0) {
      const res = this.build420(m.transactionId, unknown.slice(0, MAX_UNKNOWN_ATTRIBUTES_LISTED), hasFingerprint, budget);
      if (!res) {
        c.amplificationDropped++;
        return this.done('amplification', rinfo);
      }
      c.unknownAttribute++;
      this.cache.set(cacheKey, res);
      return this.send(socket, res, rinfo, 'unknown_attribute', isIPv4(ip));
    }

    const addr = ipToBytes(ip);
    const v6 = addr.length === 16;
    let withMapped = true;
    if (bindingSuccessLength(v6, true, hasFingerprint) > budget) {
      withMapped = false;
      if (bindingSuccessLength(v6, false, hasFingerprint) > budget) {
        c.amplificationDropped++;
        return this.done('amplification', rinfo);
      }
      c.amplificationReduced++;
    }
    const res = writeBindingSuccess(m.transactionId, addr, rinfo.port, withMapped, hasFingerprint);
    this.cache.set(cacheKey, res);
    this.send(socket, res, rinfo, 'success', !v6);
  }

  /** 420 with the full reason, or an empty reason if that does not fit the budget; undefined if nothing fits. */
  private build420(txid: Buffer, unknown: number[], fingerprint: boolean, budget: number): Buffer | undefined {
    for (const reason of [REASON_420, '']) {
      const attributes = [
        { type: AttrType.ErrorCode, value: encodeErrorCodeValue(420, reason) },
        { type: AttrType.UnknownAttributes, value: encodeUnknownAttributesValue(unknown) },
      ];
      let size = HEADER_LENGTH + (fingerprint ? FINGERPRINT_ATTR_LENGTH : 0);
      for (const a of attributes) size += 4 + ((a.value.length + 3) & ~3);
      if (size <= budget) return encodeMessage({ type: MessageType.BindingError, transactionId: txid, attributes, fingerprint });
    }
    return undefined;
  }

  private send(socket: dgram.Socket, res: Buffer, rinfo: dgram.RemoteInfo, disposition: StunDisposition, v4: boolean): void {
    // No completion callback: with one, every reply takes libuv's asynchronous completion path (a
    // callback object and an extra trip through the event loop per datagram); without, libuv sends at
    // once and a failure surfaces as the socket's 'error' event (syscall "send"), counted there.
    socket.send(res, rinfo.port, rinfo.address);
    if (disposition !== 'unknown_attribute') this.counters.requests.success++;
    this.counters.addrFamily[v4 ? 'ipv4' : 'ipv6']++;
    this.done(disposition, rinfo, res.length);
  }

}
