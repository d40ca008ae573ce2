/**
 * Sliding-window event counts per identity, bounded: each identity has a ring of WINDOW_BUCKETS
 * sub-buckets per kind (Uint16, saturating) and a running sum per kind, so an event costs O(1) and the
 * window slides in steps of window / WINDOW_BUCKETS. The counts of all identities share one Uint16Array
 * (no typed array per identity). At most `maxTracked` identities are kept in a ring of slots; a new
 * one takes the slot of one not seen again since the clock hand last passed (CLOCK: an O(1) amortised
 * approximation of least-recently-seen; a V8 Map cannot be reordered per event cheaply).
 */
import { ABUSE_KINDS, MAX_THRESHOLD, WINDOW_BUCKETS } from './constants.js';

export const KIND_COUNT = ABUSE_KINDS.length;
/** Per slot: ring counts (kind-major), then one running sum per kind. */
const SUMS = KIND_COUNT * WINDOW_BUCKETS;
const STRIDE = SUMS + KIND_COUNT;
/** Slots allocated at first; the arena doubles up to maxTracked. */
const INITIAL_SLOTS = 1024;

export class WindowRecord {
  /** Absolute index (time / bucket length) of the newest bucket. */
  bucket: number;
  /** Kinds currently over their threshold (bit per kind): one warning per episode. */
  flagged = 0;
  /** Seen again since it was added or the clock hand last passed (a one-off identity goes first). */
  used = false;
  constructor(
    readonly id: string,
    bucket: number,
    readonly slot: number,
  ) {
    this.bucket = bucket;
  }
}

export class WindowTable {
  private readonly records = new Map<string, WindowRecord>();
  private ring: (WindowRecord | undefined)[] = [];
  private free: number[] = [];
  private hand = 0;
  private arena: Uint16Array;
  private bucketMs: number;
  evictions = 0;

  constructor(
    windowMs: number,
    private readonly maxTracked: number,
  ) {
    this.bucketMs = Math.max(1, windowMs / WINDOW_BUCKETS);
    this.arena = new Uint16Array(Math.min(maxTracked, INITIAL_SLOTS) * STRIDE);
  }

  get size(): number {
    return this.records.size;
  }

  /** A new window length: counts restart (they were measured over the old one). */
  setWindow(windowMs: number): void {
    const next = Math.max(1, windowMs / WINDOW_BUCKETS);
    if (next === this.bucketMs) return;
    this.bucketMs = next;
    this.records.clear();
    this.ring = [];
    this.free = [];
    this.hand = 0;
  }

  /** Counts one event of `kind` for `id` at `now`; returns the record (sum(record, kind) = events in the window). */
  add(id: string, kind: number, now: number): WindowRecord {
    const b = Math.floor(now / this.bucketMs);
    let r = this.records.get(id);
    if (r === undefined) {
      const slot = this.takeSlot();
      r = new WindowRecord(id, b, slot);
      this.ring[slot] = r;
      this.records.set(id, r);
      this.arena.fill(0, slot * STRIDE, (slot + 1) * STRIDE);
    } else {
      r.used = true;
      this.advance(r, b);
    }
    const c = this.arena;
    const base = r.slot * STRIDE;
    const slot = base + kind * WINDOW_BUCKETS + (b % WINDOW_BUCKETS);
    const sum = base + SUMS + kind;
    // Saturates: the sum stays the sum of the ring, and a threshold ≤ MAX_THRESHOLD is still crossed.
    if (c[sum]! < MAX_THRESHOLD) {
      c[slot] = c[slot]! + 1;
      c[sum] = c[sum]! + 1;
    }
    return r;
  }

  /** Events of `kind` in the record's window as of its last event. */
  sum(r: WindowRecord, kind: number): number {
    return this.arena[r.slot * STRIDE + SUMS + kind]!;
  }

  /** The count of `kind` for `id` in the window ending at `now` (0 if untracked). */
  count(id: string, kind: number, now: number): number {
    const r = this.records.get(id);
    if (r === undefined) return 0;
    this.advance(r, Math.floor(now / this.bucketMs));
    return this.sum(r, kind);
  }

  forget(id: string): void {
    const r = this.records.get(id);
    if (r === undefined) return;
    this.records.delete(id);
    this.ring[r.slot] = undefined;
    this.free.push(r.slot);
  }

  /** Moves the record's ring forward to bucket `b`, dropping what fell out of the window. */
  private advance(r: WindowRecord, b: number): void {
    const d = b - r.bucket;
    // A clock that went back counts into the newest bucket.
    if (d <= 0) return;
    const c = this.arena;
    const base = r.slot * STRIDE;
    if (d >= WINDOW_BUCKETS) c.fill(0, base, base + STRIDE);
    else {
      for (let i = 1; i <= d; i++) {
        const s = (r.bucket + i) % WINDOW_BUCKETS;
        for (let k = 0; k < KIND_COUNT; k++) {
          const at = base + k * WINDOW_BUCKETS + s;
          const sum = base + SUMS + k;
          c[sum] = c[sum]! - c[at]!;
          c[at] = 0;
        }
      }
    }
    r.bucket = b;
  }

  /** A free slot, a new one below the cap, or the slot of the first record under the hand not seen again. */
  private takeSlot(): number {
    const f = this.free.pop();
    if (f !== undefined) return f;
    const n = this.ring.length;
    if (n < this.maxTracked) {
      if ((n + 1) * STRIDE > this.arena.length) {
        const grown = new Uint16Array(Math.min(this.maxTracked, 2 * (this.arena.length / STRIDE)) * STRIDE);
        grown.set(this.arena);
        this.arena = grown;
      }
      return n;
    }
    for (;;) {
      const at = this.hand;
      this.hand = (at + 1) % n;
      const r = this.ring[at];
      if (r === undefined) return at;
      if (r.used) {
        r.used = false;
        continue;
      }
      this.records.delete(r.id);
      this.evictions++;
      return at;
    }
  }
}
