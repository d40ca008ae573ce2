/**
 * Shared fast-check settings for the property tests (test/<module>/properties.test.ts).
 *
 * Every property runs from a fixed seed so a failure in `npm test` reproduces byte for byte; the
 * failure message prints the seed and the shrunk counterexample. `FC_RUNS=<n>` sets the run count of
 * every property (the long run for the README figure); `FC_SEED=<n>` replaces
 * the seed (to explore beyond the pinned one).
 */
import fc from 'fast-check';

/** The pinned seed (any fixed integer would do; this one is the issue number and the date it was set). */
export const FC_SEED = 920261201;

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(v)}`);
  return n;
}

/** Runs per property: `runs` (the modest default sized for `npm test`) unless FC_RUNS is set. */
export function runsOr(runs: number): number {
  return envInt('FC_RUNS') ?? runs;
}

/** fc.assert parameters: the seed, and `runs` runs (or FC_RUNS). */
export function fcParams<T>(runs: number): fc.Parameters<T> {
  return { seed: envInt('FC_SEED') ?? FC_SEED, numRuns: runsOr(runs) };
}

/** Cut points for `len` bytes: sorted, distinct, strictly inside (0, len). */
export function splitsOf(len: number, maxCuts = 40): fc.Arbitrary<number[]> {
  if (len < 2) return fc.constant([]);
  return fc.uniqueArray(fc.integer({ min: 1, max: len - 1 }), { maxLength: Math.min(maxCuts, len - 1) }).map((a) => a.sort((x, y) => x - y));
}

/** `b` cut at `cuts` (as splitsOf returns them). */
export function cut(b: Buffer, cuts: readonly number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of cuts) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  out.push(b.subarray(prev));
  return out;
}

/** Every byte on its own. */
export function bytewise(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i++) out.push(b.subarray(i, i + 1));
  return out;
}
