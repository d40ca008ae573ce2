/**
 * The relay's defences that are plain bookkeeping: the per-client byte rate (spec §9) as settings, the
 * accept-rate token bucket, and the concurrent-connection accounting per source (IPv4 address or IPv6
 * /64) and in total. The reading side of the client rate lives in conn.ts (it pauses the transport).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { ConfigError } from '../errors.js';
import { FRAME_HEADER_LEN, KEY_LEN, MAX_PACKET_SIZE, PROTOCOL_VERSION } from '../protocol/constants.js';
import { serverInfoJson } from '../protocol/handshake.js';
import { parseNodePublic } from '../protocol/keys.js';

/**
 * The smallest client burst: one maximal SendPacket with its framing (5 + 32 + 64 KiB). A Go client
 * that is told a smaller burst drops every maximal packet (spec §6.2), and the relay's own bucket would
 * never let one through without going into debt.
 */
export const MIN_CLIENT_BURST_BYTES = FRAME_HEADER_LEN + KEY_LEN + MAX_PACKET_SIZE;

/** A token bucket in bytes: `bytesPerSecond` 0 = unlimited. */
export interface ByteRate {
  bytesPerSecond: number;
  burstBytes: number;
}

/** What RelayServerInit.clientLimits / setClientLimits take. Keys of `perKey` are "nodekey:<hex>". */
export interface ClientLimitsInit {
  /** Bytes per second a client may send (frames with their headers); 0 or absent = unlimited. */
  rate?: number;
  /** Burst in bytes; absent = one second of `rate`; never below MIN_CLIENT_BURST_BYTES. */
  burst?: number;
  /** Per-key overrides (a rate of 0 exempts that key). */
  perKey?: Readonly<Record<string, { rate: number; burst?: number }>>;
}

const UNLIMITED: ByteRate = { bytesPerSecond: 0, burstBytes: 0 };

function byteRate(rate: number | undefined, burst: number | undefined, what: string): ByteRate {
  const r = rate ?? 0;
  if (!(Number.isFinite(r) && r >= 0)) throw new ConfigError(`${what}: rate must be a number ≥ 0, got ${String(rate)}`, { context: { rate } });
  if (burst !== undefined && !(Number.isFinite(burst) && burst >= 0)) throw new ConfigError(`${what}: burst must be a number ≥ 0, got ${String(burst)}`, { context: { burst } });
  if (r === 0) return UNLIMITED;
  return { bytesPerSecond: r, burstBytes: Math.max(MIN_CLIENT_BURST_BYTES, Math.floor(burst ?? r)) };
}

/** The per-client limits, resolved: a default and the per-key overrides (latin1 key strings). */
export class ClientLimits {
  readonly defaults: ByteRate;
  private readonly perKey: Map<string, ByteRate>;
  /** ServerInfo plaintexts by (rate, burst): a handful of distinct values at most. */
  private readonly serverInfo = new Map<string, Buffer>();

  /** Throws ConfigError naming a bad key or value; nothing is applied then. */
  constructor(init: ClientLimitsInit = {}) {
    this.defaults = byteRate(init.rate, init.burst, 'client rate limit');
    this.perKey = new Map();
    for (const [k, v] of Object.entries(init.perKey ?? {})) {
      let key: Buffer;
      try {
        key = parseNodePublic(k);
      } catch (cause) {
        throw new ConfigError(`per-key rate limit: ${JSON.stringify(k)} is not a nodekey:<64 hex digits> key`, { cause, context: { key: k } });
      }
      this.perKey.set(key.toString('latin1'), byteRate(v.rate, v.burst, `rate limit for ${k}`));
    }
  }

  get unlimited(): boolean {
    return this.defaults.bytesPerSecond === 0 && this.perKey.size === 0;
  }

  /** The bucket for a key (latin1 string of its 32 bytes); mesh peers are exempt (spec §10.1). */
  forKey(keyStr: string, mesh: boolean): ByteRate {
    if (mesh) return UNLIMITED;
    return this.perKey.get(keyStr) ?? this.defaults;
  }

  /** ServerInfo JSON advertising `r` (spec §6.2): exactly derper's `{"version":2}` when unlimited. */
  serverInfoPlaintext(r: ByteRate): Buffer {
    const id = `${r.bytesPerSecond}/${r.burstBytes}`;
    let b = this.serverInfo.get(id);
    if (b === undefined) {
      const info = r.bytesPerSecond === 0 ? { version: PROTOCOL_VERSION } : { version: PROTOCOL_VERSION, tokenBucketBytesPerSecond: Math.floor(r.bytesPerSecond), tokenBucketBytesBurst: r.burstBytes };
      b = Buffer.from(serverInfoJson(info), 'utf8');
      this.serverInfo.set(id, b);
    }
    return b;
  }
}

/** A token bucket counting events (accepted connections): `rate` per second, `burst` at most. */
export class EventBucket {
  private tokens: number;
  private at = 0;

  constructor(
    readonly rate: number,
    readonly burst: number,
  ) {
    this.tokens = burst;
  }

  /** Takes one token; false when none is left (the event is refused). */
  take(now: number): boolean {
    if (this.at !== 0) this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds from `now` until a token is there (0 if one is now). */
  msUntilToken(now: number): number {
    const t = this.at === 0 ? this.tokens : Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate);
    return t >= 1 ? 0 : ((1 - t) / this.rate) * 1000;
  }
}

/** "1.2.3.4" → itself; an IPv6 address → its /64 ("2001:db8:0:1::/64"); IPv4-mapped IPv6 → the IPv4 address. */
export function sourceKey(address: string): string {
  if (isIPv4(address)) return address;
  const a = address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
  if (a !== address) return a;
  if (!isIPv6(address)) return address;
  const zone = address.indexOf('%');
  const ip = zone < 0 ? address : address.slice(0, zone);
  const dbl = ip.indexOf('::');
  let groups: string[];
  if (dbl < 0) groups = ip.split(':');
  else {
    const head = ip.slice(0, dbl) === '' ? [] : ip.slice(0, dbl).split(':');
    const tail = ip.slice(dbl + 2) === '' ? [] : ip.slice(dbl + 2).split(':');
    // An embedded IPv4 tail ("::1.2.3.4") takes two groups; only the first four matter here.
    const tailGroups = tail.length > 0 && tail[tail.length - 1]!.includes('.') ? tail.length + 1 : tail.length;
    groups = [...head, ...new Array<string>(Math.max(0, 8 - head.length - tailGroups)).fill('0'), ...tail];
  }
  return `${groups
    .slice(0, 4)
    .map((g) => (g.includes('.') ? g : (parseInt(g, 16) || 0).toString(16)))
    .join(':')}::/64`;
}

/** Limits on concurrent connections; 0 = no limit. */
export interface ConnectionCaps {
  perSource: number;
  total: number;
}

/** Open connections per source (sourceKey) and in total. */
export class ConnectionCounter {
  private readonly bySource = new Map<string, number>();
  total = 0;

  /** Counts one more for `source` unless that would pass a cap: then null and nothing is counted. */
  add(source: string, caps: ConnectionCaps): 'per_ip' | 'total' | null {
    if (caps.total > 0 && this.total >= caps.total) return 'total';
    const n = this.bySource.get(source) ?? 0;
    if (caps.perSource > 0 && n >= caps.perSource) return 'per_ip';
    this.bySource.set(source, n + 1);
    this.total++;
    return null;
  }

  remove(source: string): void {
    const n = this.bySource.get(source);
    if (n === undefined) return;
    if (n <= 1) this.bySource.delete(source);
    else this.bySource.set(source, n - 1);
    this.total--;
  }

  count(source: string): number {
    return this.bySource.get(source) ?? 0;
  }

  /** Sources with at least one connection (bounded by the open connections). */
  get sources(): number {
    return this.bySource.size;
  }
}
