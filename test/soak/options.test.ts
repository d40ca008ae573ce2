// `npm run soak` options: durations with units, the churn rate, --url needing --pid, bad input named.
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/lib/errors.js';
import { parseSoakOptions } from '../../soak/options.js';

describe('parseSoakOptions', () => {
  it('defaults to 10 minutes at 3,000 churn cycles a minute with hostile clients, into bench/results/', () => {
    const o = parseSoakOptions([]);
    expect(o).toMatchObject({ durationS: 600, durationLabel: '10m', churnPerMin: 3000, pairs: 8, rate: 2000, hostile: true, warmupS: undefined });
    expect(o.outDir).toMatch(/bench\/results$/);
  });

  it('reads units and labels files by the duration as typed', () => {
    expect(parseSoakOptions(['--duration', '90'])).toMatchObject({ durationS: 90, durationLabel: '90s' });
    expect(parseSoakOptions(['--duration', '2h', '--warmup', '5m', '--churn', '6000/min', '--no-hostile'])).toMatchObject({
      durationS: 7200,
      durationLabel: '2h',
      warmupS: 300,
      churnPerMin: 6000,
      hostile: false,
    });
  });

  it('rejects bad values, naming the flag', () => {
    const bad: Array<[string[], RegExp]> = [
      [['--duration', '0'], /--duration: bad duration "0"/],
      [['--duration', '25h'], /--duration 25h is over the 24 h maximum/],
      [['--duration', '1m', '--warmup', '1m'], /--warmup 1m leaves nothing/],
      [['--churn', 'lots'], /--churn: expected cycles a minute/],
      [['--pairs', '0'], /--pairs: expected an integer ≥ 1/],
      [['--url', 'http://127.0.0.1:3340/derp'], /--url needs --pid/],
      [['--pid', '42'], /--pid and --metrics-url go with --url/],
      [['--bogus'], /Unknown option '--bogus'/],
    ];
    for (const [args, re] of bad) {
      expect(() => parseSoakOptions(args), args.join(' ')).toThrow(ConfigError);
      expect(() => parseSoakOptions(args), args.join(' ')).toThrow(re);
    }
  });
});
