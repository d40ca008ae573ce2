/**
 * Sliding-window event counts per identity, bounded: each identity has a ring of WINDOW_BUCKETS
 * sub-buckets per kind (Uint16, saturating) and a running sum per kind, so an event costs O(1) and the
 * window slides in steps of window / WINDOW_BUCKETS. At most `maxTracked` identities are kept in a
 * ring of slots; a new one takes the slot of one not seen since the clock hand last passed (CLOCK, an
 * O(1) amortised approximation of least-recently-seen; V8 Maps cannot be reordered per event cheaply).
 */
import { ABUSE_KINDS, MAX_THRESHOLD, WINDOW_BUCKETS } from './constants.js';

export const KIND_COUNT = ABUSE_KINDS.length;
const SUMS = KIND_COUNT * WINDOW_BUCKETS;

export class WindowRecord {
  /** Ring counts (kind-major) followed by one running sum per kind. */
  readonly counts = new Uint16Array(SUMS + KIND_COUNT);
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

  count(kind: number): number {
    return this.counts[SUMS + kind]!;
  }
}

export class WindowTable {
  private readonly records = new Map<string, WindowRecord>();
  private ring: (WindowRecord | undefined)[] = [];
  private free: number[] = [];
  private hand = 0;
  private bucketMs: number;
  evictions = 0;

  constructor(
    windowMs: number,
    private readonly maxTracked: number,
  ) {
    this.bucketMs = Math.max(1, windowMs / WINDOW_BUCKETS);
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

  /** Counts one event of `kind` for `id` at `now`; returns the record (count(kind) = events in the window). */
  add(id: string, kind: number, now: number): WindowRecord {
    const b = Math.floor(now / this.bucketMs);
    let r = this.records.get(id);
    if (r === undefined) {
      r = new WindowRecord(id, b, this.takeSlot());
      this.ring[r.slot] = r;
      this.records.set(id, r);
    } else {
      r.used = true;
      advance(r, b);
    }
    const c = r.counts;
    const slot = kind * WINDOW_BUCKETS + (b % WINDOW_BUCKETS);
    // Saturates: the sum stays the sum of the ring, and a threshold ≤ MAX_THRESHOLD is still crossed.
    if (c[SUMS + kind]! < MAX_THRESHOLD) {
      c[slot] = c[slot]! + 1;
      c[SUMS + kind] = c[SUMS + kind]! + 1;
    }
    return r;
  }

  /** The count of `kind` for `id` in the window ending at `now` (0 if untracked). */
  count(id: string, kind: number, now: number): number {
    const r = this.records.get(id);
    if (r === undefined) return 0;
    advance(r, Math.floor(now / this.bucketMs));
    return r.count(kind);
  }

  forget(id: string): void {
    const r = this.records.get(id);
    if (r === undefined) return;
    this.records.delete(id);
    this.ring[r.slot] = undefined;
    this.free.push(r.slot);
  }

  /** A free slot, a new one below the cap, or the slot of the first unused record under the hand. */
  private takeSlot(): number {
    const f = this.free.pop();
    if (f !== undefined) return f;
    if (this.ring.length < this.maxTracked) return this.ring.length;
    for (;;) {
      const at = this.hand;
      this.hand = (at + 1) % this.ring.length;
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

/** Moves the ring forward to bucket `b`, dropping what fell out of the window. */
function advance(r: WindowRecord, b: number): void {
  const d = b - r.bucket;
  // A clock that went back counts into the newest bucket.
  if (d <= 0) return;
  const c = r.counts;
  if (d >= WINDOW_BUCKETS) c.fill(0);
  else {
    for (let i = 1; i <= d; i++) {
      const s = (r.bucket + i) % WINDOW_BUCKETS;
      for (let k = 0; k < KIND_COUNT; k++) {
        const at = k * WINDOW_BUCKETS + s;
        c[SUMS + k] = c[SUMS + k]! - c[at]!;
        c[at] = 0;
      }
    }
  }
  r.bucket = b;
}
