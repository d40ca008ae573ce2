/** The `abuse.*` fields: defaults, values from the file and the flag, precise errors, and the monitor taking them. */
import { describe, expect, it } from 'vitest';
import { AbuseMonitor, defaultAbuseSettings, keyIdentity } from '../../src/lib/abuse/index.js';
import { ConfigFileError, formatConfigIssue, parseConfigText, resolveServeConfig } from '../../src/lib/config/index.js';
import { key } from './helpers.js';

function problems(text: string, flags: Record<string, unknown> = {}): string[] {
  try {
    resolveServeConfig(parseConfigText(text, 'derp.yaml'), flags);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigFileError);
    return (err as ConfigFileError).issues.map(formatConfigIssue);
  }
  throw new Error('expected the configuration to be refused');
}

describe('abuse.* settings', () => {
  it('defaults: detection on, bans off, 10 min doubling to 24 h', () => {
    const c = resolveServeConfig(undefined, { dev: true });
    expect(c.abuse).toEqual(defaultAbuseSettings());
    expect(c.abuse).toMatchObject({ windowSeconds: 60, ban: false, banSeconds: 600, banMaxSeconds: 86_400, lift: [], exempt: [] });
    expect(Object.values(c.abuse.thresholds).every((t) => t > 0)).toBe(true);
  });

  it('reads the file; --abuse-ban / --no-abuse-ban win over it', () => {
    const k = keyIdentity(key());
    const text = [
      'dev: true',
      'abuse:',
      '  windowSeconds: 30',
      '  thresholds:',
      '    fanout: 200',
      '    protocolViolation: 0',
      '  ban: true',
      '  banSeconds: 60',
      '  banMaxSeconds: 3600',
      `  lift: ["${k}", "2001:db8::1"]`,
      '  exempt: ["10.0.0.0/8", "::1"]',
    ].join('\n');
    const file = parseConfigText(text, 'derp.yaml');
    const c = resolveServeConfig(file);
    expect(c.abuse).toEqual({
      windowSeconds: 30,
      thresholds: { ...defaultAbuseSettings().thresholds, fanout: 200, protocolViolation: 0 },
      ban: true,
      banSeconds: 60,
      banMaxSeconds: 3600,
      lift: [k, '2001:db8::1'],
      exempt: ['10.0.0.0/8', '::1'],
    });
    expect(resolveServeConfig(file, { 'abuse-ban': false }).abuse.ban).toBe(false);
    // What resolves, the monitor takes.
    expect(() => new AbuseMonitor({ settings: c.abuse })).not.toThrow();
  });

  it('bad thresholds, lists and durations: precise errors with the file position', () => {
    const text = [
      'dev: true',
      'abuse:',
      '  windowSeconds: 0',
      '  thresholds:',
      '    fanout: -3',
      '    absentPeer: 70000',
      '    fanoutt: 1',
      '  lift: ["10.0.0.0/8"]',
      '  exempt: ["example.com"]',
    ].join('\n');
    const p = problems(text);
    expect(p).toEqual(expect.arrayContaining([
      'derp.yaml:3:18 abuse.windowSeconds: expected an integer from 1 to 86400, found 0',
      'derp.yaml:5:13 abuse.thresholds.fanout: expected an integer from 0 to 65535 (0 = off), found -3',
      'derp.yaml:6:17 abuse.thresholds.absentPeer: expected an integer from 0 to 65535 (0 = off), found 70000',
      'derp.yaml:8:10 abuse.lift[0]: expected a list of nodekey:… keys and IP addresses, found "10.0.0.0/8"',
      'derp.yaml:9:12 abuse.exempt[0]: expected a list of nodekey:… keys, IP addresses or CIDRs, found "example.com"',
    ]));
    expect(p.find((x) => x.includes('fanoutt'))).toMatch(/unknown field \(did you mean "fanout"\?\)/);
  });

  it('banMaxSeconds below banSeconds is refused where it was written', () => {
    const p = problems('dev: true\nabuse:\n  banSeconds: 7200\n  banMaxSeconds: 3600\n');
    expect(p).toEqual(['derp.yaml:4:18 abuse.banMaxSeconds: abuse.banMaxSeconds (3600) must be at least abuse.banSeconds (7200)']);
    // Only banSeconds given, above the default cap: the problem is banSeconds.
    expect(problems('dev: true\nabuse:\n  banSeconds: 100000\n')).toEqual([
      'derp.yaml:3:15 abuse.banSeconds: abuse.banMaxSeconds (86400) must be at least abuse.banSeconds (100000)',
    ]);
  });
});
