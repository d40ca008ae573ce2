import { describe, expect, it } from 'vitest';
import { parseDuration } from '../../src/lib/util/duration.js';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['1.5m', 90_000],
    ['2h', 7_200_000],
    [' 10s ', 10_000],
  ])('%s → %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it('needs a unit unless a bare unit is given; refuses 0 unless allowed, and anything else', () => {
    expect(parseDuration('5')).toBeUndefined();
    expect(parseDuration('5', { bareUnit: 's' })).toBe(5_000);
    expect(parseDuration('0s')).toBeUndefined();
    expect(parseDuration('0', { bareUnit: 's', allowZero: true })).toBe(0);
    for (const bad of ['', 's', '-1s', '1 s', '1d', '1e3s', 'soon']) expect(parseDuration(bad, { bareUnit: 's' })).toBeUndefined();
  });
});
