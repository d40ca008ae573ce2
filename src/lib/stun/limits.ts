/**
 * Bounded per-source state for the STUN server: a token-bucket rate limiter and a short-lived response
 * cache. Both evict oldest-first (Map insertion order) so a flood of spoofed sources cannot grow memory.
 */

/** Milliseconds clock; injectable so tests control time without sleeping. */
export type Clock = () => number;

interface Bucket {
  tokens: number;
  last: number;
}

/** Token bucket per key (source IP). Capacity = one second's worth of tokens. */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly perSecond: number,
    private readonly maxEntries: number,
    private readonly clock: Clock,
  ) {}

  /** Takes one token for `key`; false when the bucket is empty. perSecond ≤ 0 disables limiting. */
  allow(key: string): boolean {
    if (this.perSecond <= 0) return true;
    const now = this.clock();
    let b = this.buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.perSecond, b.tokens + ((now - b.last) * this.perSecond) / 1000);
      b.last = now;
    } else {
      if (this.buckets.size >= this.maxEntries) this.buckets.delete(this.buckets.keys().next().value!);
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
  private readonly entries = new Map<string, CacheEntry>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
    private readonly clock: Clock,
  ) {}

  get(key: string): Buffer | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires <= this.clock()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.response;
  }

  set(key: string, response: Buffer): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return;
    this.entries.delete(key);
    while (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { response, expires: this.clock() + this.ttlMs });
  }

  get size(): number {
    return this.entries.size;
  }
}
