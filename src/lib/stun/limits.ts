/**
 * Bounded per-source state for the STUN server: a token-bucket rate limiter and a short-lived response
 * cache. Both evict oldest-first so a flood of spoofed sources cannot grow memory.
 */

/** Milliseconds clock; injectable so tests control time without sleeping. */
export type Clock = () => number;

/**
 * A Map bounded to `max` keys that evicts in insertion order through a ring of keys. Evicting with
 * `map.keys().next()` instead walks over every deleted slot V8 keeps at the front of the table: with the
 * cache full and one eviction per request, that walk took a fifth of the STUN server's CPU.
 */
class FifoMap<V> {
  private readonly map = new Map<string, { value: V; slot: number }>();
  private readonly ring: (string | undefined)[];
  private next = 0;

  constructor(private readonly max: number) {
    this.ring = new Array<string | undefined>(Math.max(0, max));
  }

  get(key: string): V | undefined {
    return this.map.get(key)?.value;
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  /** Inserts (or re-inserts as newest) `key`, evicting the oldest key when full. */
  set(key: string, value: V): void {
    if (this.max <= 0) return;
    const slot = this.next;
    const old = this.ring[slot];
    // The slot's key may have been re-inserted since (it then lives in a newer slot): keep that one.
    if (old !== undefined && this.map.get(old)?.slot === slot) this.map.delete(old);
    this.ring[slot] = key;
    this.map.set(key, { value, slot });
    this.next = (slot + 1) % this.max;
  }

  get size(): number {
    return this.map.size;
  }

  *values(): IterableIterator<V> {
    for (const e of this.map.values()) yield e.value;
  }
}

interface Bucket {
  tokens: number;
  last: number;
}

/** Token bucket per key (source IP). Capacity = one second's worth of tokens. */
export class RateLimiter {
  private readonly buckets: FifoMap<Bucket>;

  constructor(
    private readonly perSecond: number,
    maxEntries: number,
    private readonly clock: Clock,
  ) {
    this.buckets = new FifoMap(maxEntries);
  }

  /** Takes one token for `key`; false when the bucket is empty. perSecond ≤ 0 disables limiting. */
  allow(key: string): boolean {
    if (this.perSecond <= 0) return true;
    const now = this.clock();
    let b = this.buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.perSecond, b.tokens + ((now - b.last) * this.perSecond) / 1000);
      b.last = now;
    } else {
      b = { tokens: this.perSecond, last: now };
      this.buckets.set(key, b);
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}

interface CacheEntry {
  response: Buffer;
  expires: number;
}

/** FIFO cache of responses keyed by source addr:port + transaction ID, each entry valid for `ttlMs`. */
export class ResponseCache {
  private readonly entries: FifoMap<CacheEntry>;

  constructor(
    private readonly ttlMs: number,
    maxEntries: number,
    private readonly clock: Clock,
  ) {
    this.entries = new FifoMap(maxEntries);
  }

  get(key: string): Buffer | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires <= this.clock()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.response;
  }

  /** Keeps `response` (the cache owns it after this call); a view into a larger ArrayBuffer is copied. */
  set(key: string, response: Buffer): void {
    if (this.ttlMs <= 0) return;
    this.entries.set(key, { response: ownStorage(response), expires: this.clock() + this.ttlMs });
  }

  get size(): number {
    return this.entries.size;
  }

  /** Bytes of the ArrayBuffers the entries keep alive (O(size): for tests and diagnostics). */
  retainedBytes(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.response.buffer.byteLength;
    return n;
  }
}

/**
 * `b` if it spans its whole ArrayBuffer, else a copy that does. A cached slice of a pool slab (Node's
 * allocUnsafe pool is 64 KiB) or of a received datagram keeps the whole parent alive for as long as
 * the entry lives: 10,000 entries could pin 640 MiB.
 */
function ownStorage(b: Buffer): Buffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) return b;
  const copy = Buffer.allocUnsafeSlow(b.length);
  b.copy(copy);
  return copy;
}
