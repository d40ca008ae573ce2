import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/lib/errors.js';
import { BENCH_DEFAULTS, idleCapacity, maxLatencyMs, parseBenchDuration, percentile, runBench, type BenchOptions } from '../../src/lib/loadgen/index.js';

const base: BenchOptions = { url: 'http://127.0.0.1:1/derp', ...BENCH_DEFAULTS, durationMs: 100, warmupMs: 0 };

describe('parseBenchDuration', () => {
  it.each([
    ['5', 5000],
    ['1.5s', 1500],
    ['250ms', 250],
    ['2m', 120_000],
  ])('%s → %d ms', (text, ms) => expect(parseBenchDuration('--duration', text)).toBe(ms));

  it('rejects malformed, zero and too long, naming the flag', () => {
    expect(() => parseBenchDuration('--duration', '5 min')).toThrow(/--duration: bad duration "5 min"/);
    expect(() => parseBenchDuration('--duration', '0')).toThrow(ConfigError);
    expect(parseBenchDuration('--warmup', '0', true)).toBe(0);
    expect(() => parseBenchDuration('--duration', '11m')).toThrow(/over the 10 min maximum/);
  });
});

describe('histogram', () => {
  it('percentiles and max come from the buckets (10 µs each)', () => {
    const h = new Map([
      [10, 98],
      [100, 1],
      [500, 1],
    ]);
    expect(percentile(h, 100, 0.5)).toBeCloseTo(0.105);
    expect(percentile(h, 100, 0.99)).toBeCloseTo(1.005);
    expect(maxLatencyMs(h)).toBeCloseTo(5.01);
    expect(maxLatencyMs(new Map())).toBeNaN();
  });
});

describe('runBench option checks', () => {
  it('fits connections into the fd limit per worker', () => {
    expect(idleCapacity(2, 1024)).toBe(2 * (1024 - 64));
  });

  it.each([
    [{ url: 'not a url' }, /is not a URL/],
    [{ url: 'ws://127.0.0.1:1/derp', transport: 'derp' as const }, /--transport derp does not go with a ws:/],
    [{ caFile: '/nonexistent/ca.pem', url: 'https://127.0.0.1:1/derp' }, /cannot read --ca-file \/nonexistent\/ca.pem/],
    [{ pid: 999_999_999 }, /--pid 999999999: no such process/],
  ])('%j is a usage error', async (extra, message) => {
    await expect(runBench({ ...base, ...extra })).rejects.toSatisfy((e: unknown) => e instanceof ConfigError && message.test(e.message));
  });
});
