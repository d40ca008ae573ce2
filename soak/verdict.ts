/**
 * The soak's verdict: after the warm-up, least-squares slopes of RSS and open descriptors, each held to
 * a bound, plus the steady load's own counts (nothing lost, never stopped) and the churn's failures.
 */
import type { Sample, SeriesKey } from './series.js';

/**
 * Why these bounds. A leak the soak must catch is per connection: at the default churn (3,000 cycles a
 * minute) one retained KiB per cycle is ~2.9 MiB/min, so RSS_SLOPE_MAX = 2 MiB/min catches anything
 * from ~700 bytes per cycle up. RSS also moves by itself: it climbs for the first ~30 s (V8 sizing its
 * heap, JIT code), then V8 grows and shrinks the heap in steps of several MiB and glibc returns freed
 * memory lazily. Measured on the shared 2-core machine (3-minute run, 30 s windows after a 30 s
 * warm-up): slopes up to 11 MiB/min, fitted growth up to 5.4 MiB. So RSS fails only when the slope is
 * over 2 MiB/min AND the fitted growth over the measured window is over 16 MiB (3× that noise): a
 * 1-minute run must see a steep leak, a 10-minute run catches a slow one. In a 10-minute run V8 also
 * resized its heap twice (committed +70 MiB at 3.4 min, −125 MiB at 4.3 min; heap floor flat), so
 * RSS growth fails only if RSS minus V8's committed heap grows past the same bound too; a JS leak
 * shows as a rising heap floor (the 10 s minimum of heap used), held to the same bound.
 */
export const SOAK_BOUNDS = {
  rssSlopeMaxMiBPerMin: 2,
  rssGrowthMinMiB: 16,
  /** Descriptors beyond the load's own in-flight variation (stdio, epoll, a scrape, timers of libuv). */
  fdSlack: 16,
  /** Seconds in a row with no packet delivered that count as the steady load having stopped. */
  stopSeconds: 3,
  /** Failed churn cycles tolerated, as a fraction of attempts (a handshake has a 10 s budget; none should fail). */
  churnFailMax: 0.01,
} as const;

/** Samples at each end of the measured window whose median is that end's level (fewer in a short window). */
const END_SAMPLES = 10;
/** The first seconds of the run, before the first deliveries, do not count as a stop. */
const STOP_GRACE_S = 2;

/** Warm-up for a run of `durationS`: 20 % of it, at least 30 s, but never more than half the run. */
export function warmupFor(durationS: number): number {
  return Math.min(Math.max(0.2 * durationS, 30), 0.5 * durationS);
}

export interface Fit {
  /** Units per second. */
  slope: number;
  intercept: number;
  n: number;
}

/** Ordinary least squares y = slope·x + intercept over the finite pairs; null with fewer than 2 distinct x. */
export function leastSquares(xs: readonly number[], ys: readonly number[]): Fit | null {
  let n = 0;
  let sx = 0;
  let sy = 0;
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isFinite(xs[i]) || !Number.isFinite(ys[i])) continue;
    n++;
    sx += xs[i]!;
    sy += ys[i]!;
  }
  if (n < 2) return null;
  const mx = sx / n;
  const my = sy / n;
  let sxx = 0;
  let sxy = 0;
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isFinite(xs[i]) || !Number.isFinite(ys[i])) continue;
    sxx += (xs[i]! - mx) ** 2;
    sxy += (xs[i]! - mx) * (ys[i]! - my);
  }
  if (sxx === 0) return null;
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx, n };
}

function median(xs: readonly number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export interface SeriesFit {
  /** Fitted slope, units per minute (NaN when it cannot be fitted). */
  slopePerMin: number;
  /** slope × the measured window: the growth the fit says happened after the warm-up. */
  fittedGrowth: number;
  intercept: number;
  /** Medians of the first and last END_SAMPLES samples of the window, and end − start. */
  start: number;
  end: number;
  drift: number;
}

/** A series by name, or one derived from the samples (value of sample i). */
export type SeriesPick = SeriesKey | ((s: Sample, i: number) => number);

/** The fit of one series over the samples at or after the warm-up. */
export function fitSeries(samples: readonly Sample[], pick: SeriesPick, warmupS: number): SeriesFit {
  const all = samples.map((s, i) => ({ t: s.t, y: typeof pick === 'function' ? pick(s, i) : s[pick] }));
  const w = all.filter((s) => s.t >= warmupS);
  const f = leastSquares(
    w.map((s) => s.t),
    w.map((s) => s.y),
  );
  const span = w.length > 1 ? w[w.length - 1]!.t - w[0]!.t : 0;
  // A short window's ends must not overlap: at most a quarter of it each.
  const k = Math.max(1, Math.min(END_SAMPLES, Math.floor(w.length / 4)));
  const start = median(w.slice(0, k).map((s) => s.y));
  const end = median(w.slice(-k).map((s) => s.y));
  return {
    slopePerMin: f ? f.slope * 60 : NaN,
    fittedGrowth: f ? f.slope * span : NaN,
    intercept: f ? f.intercept : NaN,
    start,
    end,
    drift: end - start,
  };
}

/** Seconds over which the heap's floor (its lowest reading: what survives GC) is taken. */
export const HEAP_FLOOR_S = 10;

/** For each sample, the lowest heap-used reading of the last HEAP_FLOOR_S seconds. */
export function heapFloor(samples: readonly Sample[]): number[] {
  return samples.map((s, i) => {
    let m = Infinity;
    for (let j = i; j >= 0 && samples[j]!.t > s.t - HEAP_FLOOR_S; j--) if (Number.isFinite(samples[j]!.heapUsedMiB)) m = Math.min(m, samples[j]!.heapUsedMiB);
    return Number.isFinite(m) ? m : NaN;
  });
}

/** What the steady load's workers counted (after their drain). */
export interface LoadTotals {
  sent: number;
  received: number;
  /** Sequence numbers that never arrived before a later one did. */
  gaps: number;
  stalls: number;
  errors: string[];
}

export interface ChurnTotals {
  cycles: number;
  failed: number;
  firstError?: string;
}

export interface VerdictInput {
  samples: readonly Sample[];
  durationS: number;
  warmupS: number;
  load: LoadTotals;
  /** null = churn off. */
  churn: ChurnTotals | null;
  /** Descriptors the load itself may have open at one instant beyond the steady pairs (churn loops, slowloris, hostile clients). */
  fdInFlight: number;
  /** Set when the server died or stopped answering. */
  serverError?: string;
}

export interface SoakVerdict {
  pass: boolean;
  /** One line per failed check, naming the series and the figure. */
  failures: string[];
  /** What passed only on a second look (RSS growth that V8's committed heap accounts for). */
  notes: string[];
  warmupS: number;
  /** Seconds fitted (after the warm-up). */
  windowS: number;
  rss: SeriesFit & { boundSlopeMiBPerMin: number; boundGrowthMiB: number };
  fds: SeriesFit & { bound: number };
  heapUsed: SeriesFit;
  /** The heap's 10 s minimum: grows with a JS leak, not with V8 resizing its generations. */
  heapFloor: SeriesFit;
  heapTotal: SeriesFit;
  /** RSS − V8's committed heap: code, malloc, Buffers, stacks. */
  native: SeriesFit;
  external: SeriesFit;
  loopP99Ms: { median: number; max: number };
  deliveredPps: { median: number; longestStopS: number };
  churnPerS: { median: number };
  load: LoadTotals & { lost: number };
  churn: ChurnTotals | null;
}

const f1 = (x: number): string => x.toFixed(1);

export function judge(i: VerdictInput): SoakVerdict {
  const failures: string[] = [];
  const w = i.samples.filter((s) => s.t >= i.warmupS);
  const windowS = w.length > 1 ? w[w.length - 1]!.t - w[0]!.t : 0;
  const B = SOAK_BOUNDS;

  const notes: string[] = [];
  const over = (f: SeriesFit): boolean => f.slopePerMin > B.rssSlopeMaxMiBPerMin && f.fittedGrowth > B.rssGrowthMinMiB;
  const bound = `bound: ${B.rssSlopeMaxMiBPerMin} MiB/min and ${B.rssGrowthMinMiB} MiB`;
  const rss = fitSeries(i.samples, 'rssMiB', i.warmupS);
  const heapTotal = fitSeries(i.samples, 'heapTotalMiB', i.warmupS);
  const native = fitSeries(i.samples, (s) => s.rssMiB - s.heapTotalMiB, i.warmupS);
  const floors = heapFloor(i.samples);
  const floor = fitSeries(i.samples, (_s, k) => floors[k]!, i.warmupS);
  const rssLine = `rss_mib grows ${f1(rss.slopePerMin)} MiB/min after the ${f1(i.warmupS)} s warm-up (fitted +${f1(rss.fittedGrowth)} MiB over ${f1(windowS)} s; ${bound})`;
  // V8 resizes its heap in steps of tens of MiB under load and gives them back later: RSS growth that
  // V8's committed heap accounts for is sizing, not a leak. RSS minus that heap alone is no verdict
  // either: when V8 gives 125 MiB back, RSS falls only ~105 at first, a step up in the difference.
  if (over(rss) && (!Number.isFinite(native.slopePerMin) || over(native))) failures.push(rssLine);
  else if (over(rss)) notes.push(`${rssLine}; but V8's committed heap grew ${f1(heapTotal.fittedGrowth)} MiB of it, and RSS without it only ${f1(native.fittedGrowth)} MiB: heap sizing`);
  else if (over(native)) notes.push(`rss_mib − heap_total_mib grew ${f1(native.fittedGrowth)} MiB while RSS did not (${f1(rss.fittedGrowth)} MiB): V8 released heap that RSS had not yet given back`);
  if (over(floor)) failures.push(`heap_used_mib floor (${HEAP_FLOOR_S} s minimum) grows ${f1(floor.slopePerMin)} MiB/min after the warm-up (fitted +${f1(floor.fittedGrowth)} MiB; ${bound})`);
  const fdBound = i.fdInFlight + B.fdSlack;
  const fds = fitSeries(i.samples, 'fds', i.warmupS);
  if (fds.drift > fdBound || fds.fittedGrowth > fdBound) {
    failures.push(
      `fds grow ${f1(fds.slopePerMin)}/min after the warm-up: ${f1(fds.start)} → ${f1(fds.end)} (drift ${f1(fds.drift)}, fitted +${f1(fds.fittedGrowth)}; bound ${fdBound} = ${i.fdInFlight} in flight + ${B.fdSlack})`,
    );
  }
  if (w.length < 2) failures.push(`only ${w.length} sample(s) after the ${f1(i.warmupS)} s warm-up: nothing to fit`);

  let longestStop = 0;
  let run = 0;
  for (const s of i.samples) {
    if (s.t < STOP_GRACE_S || s.t > i.durationS - 1) continue;
    run = s.deliveredPps === 0 ? run + 1 : 0;
    longestStop = Math.max(longestStop, run);
  }
  if (longestStop >= B.stopSeconds) failures.push(`delivered_pps: the steady load stopped, ${longestStop} s in a row with no packet delivered (bound: ${B.stopSeconds} s)`);
  const lost = i.load.sent - i.load.received;
  if (i.load.sent === 0) failures.push('steady load: no packet sent');
  if (lost > 0 || i.load.gaps > 0) failures.push(`steady load lost packets: ${i.load.sent} sent, ${i.load.received} received, ${i.load.gaps} skipped in sequence`);
  if (i.churn) {
    const attempts = i.churn.cycles + i.churn.failed;
    if (i.churn.cycles === 0) failures.push(`churn: no cycle completed${i.churn.firstError ? ` (${i.churn.firstError})` : ''}`);
    else if (i.churn.failed > attempts * B.churnFailMax) failures.push(`churn: ${i.churn.failed} of ${attempts} cycles failed (bound ${B.churnFailMax * 100} %): ${i.churn.firstError ?? ''}`);
  }
  if (i.serverError) failures.push(`server: ${i.serverError}`);

  const loop = w.map((s) => s.loopP99Ms).filter(Number.isFinite);
  return {
    pass: failures.length === 0,
    failures,
    notes,
    warmupS: i.warmupS,
    windowS,
    rss: { ...rss, boundSlopeMiBPerMin: B.rssSlopeMaxMiBPerMin, boundGrowthMiB: B.rssGrowthMinMiB },
    fds: { ...fds, bound: fdBound },
    heapUsed: fitSeries(i.samples, 'heapUsedMiB', i.warmupS),
    heapFloor: floor,
    heapTotal,
    native,
    external: fitSeries(i.samples, 'externalMiB', i.warmupS),
    loopP99Ms: { median: median(loop), max: loop.length > 0 ? Math.max(...loop) : NaN },
    deliveredPps: { median: median(w.map((s) => s.deliveredPps)), longestStopS: longestStop },
    churnPerS: { median: median(w.map((s) => s.churnPerS)) },
    load: { ...i.load, lost },
    churn: i.churn,
  };
}
