/** The limits.* group: file and flag values, defaults, the issue's exact error, and the relay settings they make. */
import { describe, expect, it } from 'vitest';
import { ConfigFileError, formatConfigIssue, parseConfigText, relayLimits, resolveServeConfig, workerShare } from '../../src/lib/config/index.js';

const KEY = `nodekey:${'ab'.repeat(32)}`;

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigFileError) return err.issues.map(formatConfigIssue);
    throw err;
  }
  throw new Error('expected a ConfigFileError');
}

describe('limits.* settings', () => {
  it('the issue\'s example: a bad accept rate in the file, with its position', () => {
    const text = ['dev: true', 'limits:', '  acceptRate: fast', ''].join('\n');
    expect(issuesOf(() => parseConfigText(text, 'derp.yaml'))).toEqual(['derp.yaml:3:15 limits.acceptRate: expected a number ≥ 0, found "fast"']);
  });

  it('a bad flag value is reported like a file value', () => {
    expect(issuesOf(() => resolveServeConfig(undefined, { dev: true, 'accept-connection-limit': 'fast' }))).toEqual([
      '--accept-connection-limit (limits.acceptRate): expected a number ≥ 0, found "fast"',
    ]);
  });

  it('file values, flags over the file, per-key overrides, and the relay settings they make', () => {
    const text = ['dev: true', 'limits:', '  clientRate: 1000000', '  acceptRate: 2.5', '  maxConnsPerIp: 20', '  handshakeShare: 0.25', '  perKey:', `    "${KEY.toUpperCase().replace('NODEKEY', 'nodekey')}": { rate: 0 }`, ''].join('\n');
    const c = resolveServeConfig(parseConfigText(text, 'derp.yaml'), { 'client-burst': 3_000_000, 'max-conns': 50 });
    expect(c.limits).toEqual({
      clientRate: 1_000_000, clientBurst: 3_000_000, perKey: { [KEY]: { rate: 0 } }, acceptRate: 2.5, acceptBurst: 0,
      maxConnsPerIp: 20, maxConns: 50, maxPendingHandshakes: 0, handshakeShare: 0.25, handshakeTimeoutSeconds: 10, writeTimeoutSeconds: 2,
    });
    expect(relayLimits(c.limits)).toEqual({
      clientLimits: { rate: 1_000_000, burst: 3_000_000, perKey: { [KEY]: { rate: 0 } } },
      connectionLimits: { acceptRate: 2.5, acceptBurst: 0, maxConnsPerIp: 20, maxConns: 50, maxPendingHandshakes: 0, handshakeShare: 0.25 },
    });
  });

  it('a handshake share outside 0..1 is precise, from the file and from the flag', () => {
    const text = ['dev: true', 'limits:', '  handshakeShare: 1.5', ''].join('\n');
    expect(issuesOf(() => parseConfigText(text, 'derp.yaml'))).toEqual(['derp.yaml:3:19 limits.handshakeShare: expected a number from 0 to 1, found 1.5']);
    expect(issuesOf(() => resolveServeConfig(undefined, { dev: true, 'handshake-share': -0.5 }))).toEqual([
      '--handshake-share (limits.handshakeShare): expected a number from 0 to 1, found -0.5',
    ]);
    expect(resolveServeConfig(undefined, { dev: true }).limits.handshakeShare).toBe(0);
  });

  it('defaults without dev: per-IP and pending-handshake caps on', () => {
    const c = resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '192.0.2.1' });
    expect(c.limits).toMatchObject({ maxConnsPerIp: 1000, maxPendingHandshakes: 5000, clientRate: 0, acceptRate: 0 });
  });

  it('bad per-key entries and timeouts are precise', () => {
    const text = ['dev: true', 'limits:', '  perKey:', '    "nodekey:12": { rate: 1 }', `    "${KEY}": { rate: -1 }`, '  handshakeTimeoutSeconds: 0', ''].join('\n');
    const issues = issuesOf(() => parseConfigText(text, 'derp.yaml'));
    expect(issues).toHaveLength(3);
    expect(issues[0]).toMatch(/^derp\.yaml:4:\d+ limits\.perKey/);
    expect(issues[1]).toMatch(/^derp\.yaml:5:\d+ limits\.perKey/);
    expect(issues[2]).toBe('derp.yaml:6:28 limits.handshakeTimeoutSeconds: expected a number of seconds > 0 and ≤ 300, found 0');
  });
});

describe('workerShare: host-wide connection limits split over --workers', () => {
  const host = { acceptRate: 200, acceptBurst: 50, maxConnsPerIp: 7, maxConns: 10_001, maxPendingHandshakes: 256, handshakeShare: 0.25 };
  const shares = (n: number) => Array.from({ length: n }, (_, i) => workerShare(host, i, n));
  const sum = (n: number, k: keyof typeof host) => shares(n).reduce((a, s) => a + s[k], 0);

  it('one worker enforces the limits as configured', () => {
    expect(workerShare(host, 0, 1)).toEqual(host);
  });

  it('the shares of every count add up to the host figure; the rate is divided', () => {
    for (const n of [2, 3, 4, 7]) {
      for (const k of ['acceptBurst', 'maxConnsPerIp', 'maxConns', 'maxPendingHandshakes'] as const) expect(sum(n, k)).toBe(host[k]);
      expect(sum(n, 'acceptRate')).toBeCloseTo(200, 9);
      // A share of each worker's own event loop: not divided.
      for (const x of shares(n)) expect(x.handshakeShare).toBe(0.25);
      // Near-equal shares: the kernel spreads connections evenly.
      const conns = shares(n).map((s) => s.maxConns);
      expect(Math.max(...conns) - Math.min(...conns)).toBeLessThanOrEqual(1);
    }
  });

  it('a share is never 0 (unlimited): a limit below the worker count gives each worker 1; off stays off', () => {
    expect(shares(8).map((s) => s.maxConnsPerIp)).toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
    const off = { acceptRate: 0, acceptBurst: 0, maxConnsPerIp: 0, maxConns: 0, maxPendingHandshakes: 0, handshakeShare: 0 };
    expect(workerShare(off, 1, 4)).toEqual(off);
  });
});

