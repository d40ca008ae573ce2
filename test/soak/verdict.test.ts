// The soak's verdict on synthetic series: a flat noisy RSS passes, a growing one fails naming the series
// and its slope; descriptors, losses, stops and churn failures each fail on their own.
import { describe, expect, it } from 'vitest';
import type { Sample } from '../../soak/series.js';
import { SOAK_BOUNDS, fitSeries, judge, leastSquares, warmupFor, type VerdictInput } from '../../soak/verdict.js';

/** Deterministic noise in [-1, 1) (a fixed LCG: the same series every run). */
function noise(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 31 - 1;
  };
}

function series(durationS: number, f: (t: number, r: () => number) => Partial<Sample>, seed = 7): Sample[] {
  const r = noise(seed);
  return Array.from({ length: durationS }, (_, i) => {
    const t = i + 1;
    return { t, rssMiB: 120, heapUsedMiB: 40, externalMiB: 6, heapTotalMiB: 60, loopP99Ms: 1, fds: 60, deliveredPps: 2000, churnPerS: 50, connections: 40, ...f(t, r) };
  });
}

function input(samples: Sample[], over: Partial<VerdictInput> = {}): VerdictInput {
  const durationS = samples.length;
  return {
    samples,
    durationS,
    warmupS: warmupFor(durationS),
    load: { sent: 1000, received: 1000, gaps: 0, stalls: 0, errors: [] },
    churn: { cycles: 3000, failed: 0 },
    fdInFlight: 31,
    ...over,
  };
}

describe('leastSquares', () => {
  it('recovers slope and intercept of a line, and skips missing readings', () => {
    const f = leastSquares([0, 1, 2, 3, NaN], [1, 3, 5, 7, 100])!;
    expect(f.slope).toBeCloseTo(2, 12);
    expect(f.intercept).toBeCloseTo(1, 12);
    expect(f.n).toBe(4);
  });

  it('has no fit for fewer than two distinct x', () => {
    expect(leastSquares([1], [1])).toBeNull();
    expect(leastSquares([2, 2], [1, 5])).toBeNull();
  });
});

describe('warm-up', () => {
  it('is 20 % of the run, at least 30 s, at most half', () => {
    expect(warmupFor(600)).toBe(120);
    expect(warmupFor(60)).toBe(30);
    expect(warmupFor(10)).toBe(5);
  });
});

describe('judge', () => {
  it('passes a flat series with GC-like noise and steps (±6 MiB)', () => {
    // Noise plus a sawtooth of 8 MiB every 20 s: what a steady Node process looks like from outside.
    const s = series(600, (t, r) => ({ rssMiB: 150 + 6 * r() + ((t % 20) / 20) * 8, fds: 60 + Math.round(3 * r()) }));
    const v = judge(input(s));
    expect(v.failures).toEqual([]);
    expect(v.pass).toBe(true);
    expect(Math.abs(v.rss.slopePerMin)).toBeLessThan(SOAK_BOUNDS.rssSlopeMaxMiBPerMin);
    expect(v.windowS).toBeCloseTo(480, 0);
  });

  it('fails a steadily growing RSS, naming the series and its slope', () => {
    // 3 MiB/min over 10 minutes: ~1 KiB per cycle at 3,000 cycles a minute.
    const s = series(600, (t, r) => ({ rssMiB: 150 + (3 * t) / 60 + 2 * r() }));
    const v = judge(input(s));
    expect(v.pass).toBe(false);
    expect(v.failures).toHaveLength(1);
    expect(v.failures[0]).toMatch(/^rss_mib grows 3\.\d MiB\/min/);
    expect(v.rss.slopePerMin).toBeCloseTo(3, 0);
  });

  it('lets a short run through a slope that has not grown the bound yet, and fails a steep one', () => {
    // 60 s run, 30 s fitted: 10 MiB/min is only +5 MiB; 60 MiB/min is +30 MiB.
    expect(judge(input(series(60, (t) => ({ rssMiB: 150 + (10 * t) / 60 })))).pass).toBe(true);
    const v = judge(input(series(60, (t) => ({ rssMiB: 150 + (60 * t) / 60 }))));
    expect(v.failures.join('\n')).toMatch(/rss_mib grows 60\.0 MiB\/min/);
  });

  it('lets RSS steps through that V8 committing more heap accounts for, with a note', () => {
    // The young generation doubling at 200 s: heap total and RSS step up 60 MiB together, the floor stays.
    const step = (t: number): number => (t >= 200 ? 60 : 0);
    const v = judge(input(series(600, (t, r) => ({ rssMiB: 150 + step(t) + r(), heapTotalMiB: 70 + step(t), heapUsedMiB: 35 + ((t % 10) / 10) * 20 }))));
    expect(v.failures).toEqual([]);
    expect(v.notes).toEqual([expect.stringMatching(/^rss_mib grows .*but V8's committed heap grew .* MiB of it, and RSS without it only -?\d+\.\d MiB: heap sizing$/)]);
    expect(v.rss.fittedGrowth).toBeGreaterThan(SOAK_BOUNDS.rssGrowthMinMiB);
  });

  it('notes, and passes, RSS minus the heap stepping up when V8 gives heap back faster than RSS falls', () => {
    // Heap committed −125 MiB at 260 s, RSS only −105: the difference steps up 20 MiB, RSS falls.
    const v = judge(input(series(600, (t, r) => ({ rssMiB: (t >= 260 ? 125 : 230) + r(), heapTotalMiB: t >= 260 ? 45 : 170 }))));
    expect(v.failures).toEqual([]);
    expect(v.native.fittedGrowth).toBeGreaterThan(SOAK_BOUNDS.rssGrowthMinMiB);
    expect(v.notes).toEqual([expect.stringMatching(/^rss_mib − heap_total_mib grew .* while RSS did not/)]);
  });

  it('fails a growing heap floor (a JS leak) even when RSS looks flat', () => {
    // Old space fills at 4 MiB/min while RSS holds (V8 had room): the sawtooth's minimum climbs.
    const v = judge(input(series(600, (t) => ({ heapUsedMiB: 30 + (4 * t) / 60 + ((t % 10) / 10) * 20 }))));
    expect(v.failures).toEqual([expect.stringMatching(/^heap_used_mib floor \(10 s minimum\) grows 4\.0 MiB\/min/)]);
    expect(v.heapFloor.slopePerMin).toBeCloseTo(4, 0);
  });

  it('fails descriptors that climb beyond the load in flight', () => {
    // One a second: +90 over the 90 s fitted.
    const s = series(120, (t) => ({ fds: 60 + t }));
    const v = judge(input(s));
    expect(v.pass).toBe(false);
    expect(v.failures.join('\n')).toMatch(/^fds grow 60\.0\/min/);
    expect(v.fds.bound).toBe(31 + SOAK_BOUNDS.fdSlack);
  });

  it('does not count the load own in-flight swing as a descriptor leak', () => {
    const s = series(120, (_t, r) => ({ fds: 60 + Math.round(15 * (r() + 1)) }));
    expect(judge(input(s)).pass).toBe(true);
  });

  it('fails a steady load that lost packets or stopped', () => {
    const lost = judge(input(series(60, () => ({})), { load: { sent: 1000, received: 998, gaps: 2, stalls: 1, errors: [] } }));
    expect(lost.failures).toEqual([expect.stringMatching(/steady load lost packets: 1000 sent, 998 received, 2 skipped/)]);
    expect(lost.load.lost).toBe(2);
    const stopped = judge(input(series(60, (t) => ({ deliveredPps: t >= 40 && t < 44 ? 0 : 2000 }))));
    expect(stopped.failures).toEqual([expect.stringMatching(/delivered_pps: the steady load stopped, 4 s in a row/)]);
    // Two quiet seconds are not a stop, and neither are the first seconds before the pairs send.
    expect(judge(input(series(60, (t) => ({ deliveredPps: t <= 1 || t === 30 || t === 31 ? 0 : 2000 })))).pass).toBe(true);
  });

  it('fails churn that failed or never completed, and a dead server', () => {
    expect(judge(input(series(60, () => ({})), { churn: { cycles: 900, failed: 100, firstError: 'ECONNRESET' } })).failures).toEqual([
      expect.stringMatching(/^churn: 100 of 1000 cycles failed.*ECONNRESET/),
    ]);
    expect(judge(input(series(60, () => ({})), { churn: { cycles: 0, failed: 0 } })).failures).toEqual(['churn: no cycle completed']);
    expect(judge(input(series(60, () => ({})), { churn: null })).pass).toBe(true);
    expect(judge(input(series(60, () => ({})), { serverError: 'derp serve exited (SIGKILL)' })).failures).toEqual(['server: derp serve exited (SIGKILL)']);
  });

  it('fits every series after the warm-up only', () => {
    // Steep during the warm-up, flat after it.
    const s = series(100, (t) => ({ heapUsedMiB: t < 30 ? t : 30 }));
    const f = fitSeries(s, 'heapUsedMiB', 30);
    expect(f.slopePerMin).toBe(0);
    expect(f.start).toBe(30);
    expect(f.drift).toBe(0);
  });
});
