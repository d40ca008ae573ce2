/** The latency histogram the workers fill and the orchestrator merges: fixed buckets, no allocation per sample. */

/** Resolution and range: 10 µs buckets up to 2 s (the last bucket collects the rest). */
export const HIST_BUCKET_US = 10;
export const HIST_BUCKETS = 200_000;

/** The latency below which a fraction `q` of `total` samples fall, ms (bucket midpoint); NaN when empty. */
export function percentile(hist: Map<number, number>, total: number, q: number): number {
  const want = Math.ceil(total * q);
  let seen = 0;
  for (const b of [...hist.keys()].sort((a, b) => a - b)) {
    seen += hist.get(b)!;
    if (seen >= want) return ((b + 0.5) * HIST_BUCKET_US) / 1000;
  }
  return NaN;
}

/** The highest latency recorded, ms (upper edge of the highest non-empty bucket); NaN when empty. */
export function maxLatencyMs(hist: Map<number, number>): number {
  let top = -1;
  for (const [b, c] of hist) if (c > 0 && b > top) top = b;
  return top < 0 ? NaN : ((top + 1) * HIST_BUCKET_US) / 1000;
}
