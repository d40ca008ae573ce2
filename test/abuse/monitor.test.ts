/** AbuseMonitor with an injected clock: thresholds, warnings, bans that grow, expiry, lift, exemptions, bounds. */
import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { AbuseMonitor, DEFAULT_MAX_TRACKED, LOG_BURST, keyIdentity, type Ban } from '../../src/lib/abuse/index.js';
import { ConfigError } from '../../src/lib/errors.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { Clock, key, settings, type SettingsOver } from './helpers.js';

const IP = '198.51.100.7';

function setup(over: SettingsOver = {}, init: Partial<ConstructorParameters<typeof AbuseMonitor>[0]> = {}) {
  const clock = new Clock();
  const logger = new MemoryLogger();
  const banned: Ban[] = [];
  const m = new AbuseMonitor({ settings: settings(over), logger, now: clock.now, onBan: (b) => banned.push(b), ...init });
  return { m, clock, logger, banned };
}

describe('AbuseMonitor: thresholds', () => {
  it('crossing a threshold warns once per episode with kind, ip, short key, count and window', () => {
    const { m, logger } = setup({ thresholds: { fanout: 5 } });
    const k = key();
    for (let i = 0; i < 4; i++) m.onAbuse('fanout', { ip: IP, key: k });
    expect(logger.entries.filter((e) => e.level === 'warn')).toHaveLength(0);
    m.onAbuse('fanout', { ip: IP, key: k });
    // Both the key and its IP crossed: two warnings.
    const warns = logger.entries.filter((e) => e.level === 'warn');
    expect(warns.map((w) => w.fields.identity).sort()).toEqual(['ip', 'key']);
    expect(warns[0]!.fields).toMatchObject({ kind: 'fanout', action: 'warned', ip: IP, count: 5, threshold: 5, windowSeconds: 60 });
    expect(String(warns[0]!.fields.key)).toMatch(/^\[.{5}\]$/);
    // The key in full is never logged (short form only).
    expect(JSON.stringify(logger.entries)).not.toContain(keyIdentity(k).slice(8));
    for (let i = 0; i < 20; i++) m.onAbuse('fanout', { ip: IP, key: k });
    expect(logger.entries.filter((e) => e.level === 'warn')).toHaveLength(2);
    const s = m.stats();
    expect(s.events.fanout).toBe(25);
    expect(s.crossings.fanout).toEqual({ warned: 2, banned: 0, exempt: 0 });
    expect(s.bans.active).toBe(0);
  });

  it('the window slides: spread-out events never cross, and a new episode warns again', () => {
    const { m, clock, logger } = setup({ windowSeconds: 60, thresholds: { absentPeer: 10 } });
    const k = key();
    // 9 events per minute, for ten minutes: never 10 inside one window.
    for (let minute = 0; minute < 10; minute++) {
      for (let i = 0; i < 9; i++) m.onAbuse('absent_peer', { ip: IP, key: k });
      clock.advance(61);
    }
    expect(logger.entries.filter((e) => e.level === 'warn')).toHaveLength(0);
    for (let i = 0; i < 10; i++) m.onAbuse('absent_peer', { ip: IP, key: k });
    expect(logger.entries.filter((e) => e.level === 'warn' && e.fields.identity === 'key')).toHaveLength(1);
    // The episode ends when the count falls under the threshold; the next crossing warns again.
    clock.advance(61);
    m.onAbuse('absent_peer', { ip: IP, key: k });
    for (let i = 0; i < 9; i++) m.onAbuse('absent_peer', { ip: IP, key: k });
    expect(logger.entries.filter((e) => e.level === 'warn' && e.fields.identity === 'key')).toHaveLength(2);
  });

  it('counts per kind: one kind does not add to another; a threshold of 0 is off', () => {
    const { m } = setup({ thresholds: { handshakeFailure: 3, protocolViolation: 0 } });
    for (let i = 0; i < 100; i++) m.onAbuse('protocol_violation', { ip: IP, key: key() });
    m.onAbuse('handshake_failure', { ip: IP, key: null });
    m.onAbuse('handshake_failure', { ip: IP, key: null });
    expect(m.stats().crossings.handshake_failure.warned).toBe(0);
    m.onAbuse('handshake_failure', { ip: IP, key: null });
    const s = m.stats();
    expect(s.crossings.handshake_failure.warned).toBe(1);
    expect(s.crossings.protocol_violation).toEqual({ warned: 0, banned: 0, exempt: 0 });
    expect(s.events.protocol_violation).toBe(100);
    // Kinds that are off are not even tracked.
    expect(s.tracked.keys).toBe(0);
  });

  it('events with no key (before the handshake) count against the IP only', () => {
    const { m, banned } = setup({ ban: true, thresholds: { handshakeFailure: 3 } });
    for (let i = 0; i < 3; i++) m.onAbuse('handshake_failure', { ip: '2001:db8:7:7::1', key: null });
    expect(banned.map((b) => [b.type, b.identity])).toEqual([['ip', '2001:db8:7:7::/64']]);
  });

  it('unknown kinds and malformed addresses are ignored, never thrown', () => {
    const { m } = setup({ thresholds: { fanout: 1 } });
    for (const kind of ['nonsense', 'toString', '__proto__', 'constructor']) expect(() => m.onAbuse(kind as never, { ip: IP, key: null })).not.toThrow();
    expect(() => m.onAbuse('fanout', { ip: 'garbage', key: null })).not.toThrow();
    expect(m.stats().tracked.ips).toBe(0);
    expect(Object.values(m.stats().events).reduce((a, b) => a + b, 0)).toBe(1);
  });
});

describe('AbuseMonitor: bans', () => {
  it('bans the key that crossed; the ban doubles on repeat offences up to the cap', () => {
    const { m, clock, banned, logger } = setup({ ban: true, banSeconds: 600, banMaxSeconds: 2000, thresholds: { protocolViolation: 2 } });
    const k = key();
    const durations: number[] = [];
    for (let offence = 0; offence < 4; offence++) {
      // Each time from a new address, so only the key accumulates offences.
      const ip = `203.0.113.${offence + 1}`;
      m.onAbuse('protocol_violation', { ip, key: k });
      m.onAbuse('protocol_violation', { ip, key: k });
      const b = banned.filter((x) => x.type === 'key').at(-1)!;
      durations.push((b.until - b.since) / 1000);
      expect(b.offences).toBe(offence + 1);
      expect(m.isBanned('192.0.2.200', k)).toBe(true);
      clock.advance((b.until - b.since) / 1000);
      expect(m.isBanned('192.0.2.200', k)).toBe(false);
    }
    expect(durations).toEqual([600, 1200, 2000, 2000]);
    const w = logger.entries.find((e) => e.msg === 'abuse threshold crossed: banned')!;
    expect(w.fields).toMatchObject({ action: 'banned', banSeconds: 600, offences: 1 });
    expect(m.stats().bans.lifted.expired).toBeGreaterThanOrEqual(4);
  });

  it('isBanned: an IP ban refuses at accept (key null) and at admission; other IPs and keys pass', () => {
    const { m } = setup({ ban: true, thresholds: { admissionRefused: 3 } });
    for (let i = 0; i < 3; i++) m.onAbuse('admission_refused', { ip: IP, key: key() });
    expect(m.isBanned(IP, null)).toBe(true);
    expect(m.isBanned(`::ffff:${IP}`, null)).toBe(true);
    expect(m.isBanned(IP, key())).toBe(true);
    expect(m.isBanned('198.51.100.8', null)).toBe(false);
    expect(m.stats().refused.ip).toBe(3);
    // Three different keys, one each: no key crossed.
    expect(m.bans().map((b) => b.type)).toEqual(['ip']);
  });

  it('an IPv6 ban covers the whole /64 and nothing beyond it', () => {
    const { m } = setup({ ban: true, thresholds: { handshakeFailure: 2 } });
    m.onAbuse('handshake_failure', { ip: '2001:db8:1:2::a', key: null });
    m.onAbuse('handshake_failure', { ip: '2001:db8:1:2:ffff::b', key: null });
    expect(m.isBanned('2001:db8:1:2:1234:5678:9abc:def0', null)).toBe(true);
    expect(m.isBanned('2001:db8:1:3::a', null)).toBe(false);
  });

  it('already banned: a new crossing neither re-bans nor counts an offence', () => {
    const { m, clock, banned } = setup({ ban: true, thresholds: { fanout: 2 } });
    const k = key();
    m.onAbuse('fanout', { ip: IP, key: k });
    m.onAbuse('fanout', { ip: IP, key: k });
    clock.advance(120);
    m.onAbuse('fanout', { ip: IP, key: k });
    m.onAbuse('fanout', { ip: IP, key: k });
    expect(banned.filter((b) => b.type === 'key')).toHaveLength(1);
    expect(m.bans().find((b) => b.type === 'key')!.offences).toBe(1);
    expect(m.stats().crossings.fanout.warned).toBe(2);
  });

  it('with bans off, crossings warn and count but nobody is banned', () => {
    const { m, banned } = setup({ ban: false, thresholds: { fanout: 2 } });
    const k = key();
    for (let i = 0; i < 5; i++) m.onAbuse('fanout', { ip: IP, key: k });
    expect(banned).toHaveLength(0);
    expect(m.isBanned(IP, k)).toBe(false);
    expect(m.stats().crossings.fanout.warned).toBe(2);
  });
});

describe('AbuseMonitor: a sibling worker\'s bans (adopt)', () => {
  it('enforces an adopted ban until its end, escalates the next one made here from it, and counts neither its making nor its end', () => {
    const a = setup({ ban: true, banSeconds: 600, banMaxSeconds: 5000, thresholds: { protocolViolation: 2 } });
    const b = setup({ ban: true, banSeconds: 600, banMaxSeconds: 5000, thresholds: { protocolViolation: 2 } });
    const k = key();
    // From two addresses, so only the key crosses.
    a.m.onAbuse('protocol_violation', { ip: '203.0.113.1', key: k });
    a.m.onAbuse('protocol_violation', { ip: '203.0.113.2', key: k });
    const made = a.banned.find((x) => x.type === 'key')!;
    expect(b.m.isBanned('192.0.2.1', k)).toBe(false);
    expect(b.m.adopt(made)).toBe(true);
    // Again (a replay to a restarted worker, or the same ban twice): nothing new.
    expect(b.m.adopt(made)).toBe(false);
    expect(b.m.isBanned('192.0.2.1', k)).toBe(true);
    expect(b.m.bans().map((x) => x.identity)).toEqual([keyIdentity(k)]);
    expect(b.m.stats().bans).toMatchObject({ active: 1, total: 0 });
    // An ended ban is not adopted.
    expect(b.m.adopt({ ...made, identity: keyIdentity(key()), until: b.clock.now() - 1 })).toBe(false);
    b.clock.advance(600);
    expect(b.m.isBanned('192.0.2.1', k)).toBe(false);
    expect(b.m.stats().bans.lifted.expired).toBe(0);
    // Its next offence, here: the second ban, twice as long.
    b.m.onAbuse('protocol_violation', { ip: '203.0.113.3', key: k });
    b.m.onAbuse('protocol_violation', { ip: '203.0.113.4', key: k });
    const next = b.banned.find((x) => x.type === 'key')!;
    expect(next.offences).toBe(2);
    expect((next.until - next.since) / 1000).toBe(1200);
    expect(b.m.stats().bans.total).toBe(1);
  });
});

describe('AbuseMonitor: never banned', () => {
  it('allow-listed keys and mesh peers: counted as exempt, not banned, and not counted against their IP', () => {
    const allowed = key();
    const meshKey = key();
    const { m, banned } = setup({ ban: true, thresholds: { fanout: 3 } }, {
      isAllowListed: (k) => k.equals(allowed),
      isMeshPeer: (k) => k.equals(meshKey),
    });
    for (let i = 0; i < 10; i++) {
      m.onAbuse('fanout', { ip: IP, key: allowed });
      m.onAbuse('fanout', { ip: IP, key: meshKey });
      m.onAbuse('fanout', { ip: IP, key: key(), mesh: true });
    }
    expect(banned).toHaveLength(0);
    expect(m.isBanned(IP, allowed)).toBe(false);
    expect(m.stats().crossings.fanout).toEqual({ warned: 0, banned: 0, exempt: 2 });
    // Not one event reached the IP's count.
    expect(m.stats().tracked.ips).toBe(0);
  });

  it('an allow-listed key passes isBanned even from a banned IP (admission), and a banned key once allow-listed', () => {
    let allowed: Buffer | null = null;
    const { m } = setup({ ban: true, thresholds: { protocolViolation: 1 } }, { isAllowListed: (k) => allowed !== null && k.equals(allowed) });
    const k = key();
    m.onAbuse('protocol_violation', { ip: IP, key: k });
    expect(m.isBanned(IP, k)).toBe(true);
    allowed = k;
    expect(m.isBanned(IP, k)).toBe(false);
    expect(m.isBanned(IP, null)).toBe(true);
  });

  it('loopback, trusted proxies and abuse.exempt addresses are never banned as IPs (their keys still are)', () => {
    const { m, banned } = setup({ ban: true, thresholds: { protocolViolation: 1 }, exempt: ['203.0.113.0/24'] }, { trustedProxies: ['10.1.0.0/16'] });
    for (const ip of ['127.0.0.1', '::1', '10.1.2.3', '203.0.113.9']) m.onAbuse('protocol_violation', { ip, key: null });
    expect(banned).toHaveLength(0);
    expect(m.stats().crossings.protocol_violation.exempt).toBe(4);
    const k = key();
    m.onAbuse('protocol_violation', { ip: '127.0.0.1', key: k });
    expect(banned.map((b) => b.type)).toEqual(['key']);
    expect(m.isBanned('127.0.0.1', k)).toBe(true);
    expect(m.isBanned('127.0.0.1', null)).toBe(false);
  });

  it('an exempt key is never banned', () => {
    const k = key();
    const { m, banned } = setup({ ban: true, thresholds: { fanout: 1 }, exempt: [keyIdentity(k)] });
    m.onAbuse('fanout', { ip: IP, key: k });
    expect(banned).toHaveLength(0);
  });
});

describe('AbuseMonitor: reload and lift', () => {
  it('bans survive a reload with new thresholds; lift lifts them and forgets the offences', () => {
    const { m, banned, logger } = setup({ ban: true, thresholds: { fanout: 2 } });
    const k = key();
    m.onAbuse('fanout', { ip: IP, key: k });
    m.onAbuse('fanout', { ip: IP, key: k });
    expect(m.bans()).toHaveLength(2);
    m.reload(settings({ ban: true, thresholds: { fanout: 50 } }));
    expect(m.bans()).toHaveLength(2);
    expect(m.isBanned(IP, k)).toBe(true);
    const { lifted } = m.reload(settings({ ban: true, thresholds: { fanout: 2 }, lift: [keyIdentity(k), IP, '192.0.2.99'] }));
    expect(lifted.map((b) => b.type).sort()).toEqual(['ip', 'key']);
    expect(m.isBanned(IP, k)).toBe(false);
    expect(m.bans()).toHaveLength(0);
    expect(logger.entries.filter((e) => e.msg === 'ban lifted').map((e) => e.fields.by)).toEqual(['abuse.lift', 'abuse.lift']);
    expect(m.stats().bans.lifted.config).toBe(2);
    // Offences forgotten: the next ban is a first one again (600 s), and counting restarted.
    m.onAbuse('fanout', { ip: IP, key: k });
    expect(m.bans()).toHaveLength(0);
    m.onAbuse('fanout', { ip: IP, key: k });
    const again = banned.filter((b) => b.type === 'key').at(-1)!;
    expect(again.offences).toBe(1);
    expect((again.until - again.since) / 1000).toBe(600);
  });

  it('a bad reload throws ConfigError and changes nothing', () => {
    const { m } = setup({ ban: true, thresholds: { fanout: 2 } });
    const k = key();
    m.onAbuse('fanout', { ip: IP, key: k });
    m.onAbuse('fanout', { ip: IP, key: k });
    expect(() => m.reload(settings({ banSeconds: 100, banMaxSeconds: 10 }))).toThrow(ConfigError);
    expect(() => m.reload(settings({ lift: ['not-an-ip'] }))).toThrow(/neither a nodekey/);
    expect(() => m.reload(settings({ thresholds: { fanout: -1 } }))).toThrow(/abuse.thresholds.fanout/);
    expect(m.settings.thresholds.fanout).toBe(2);
    expect(m.isBanned(IP, k)).toBe(true);
  });

  it('lift() by API: a key, an IP', () => {
    const { m } = setup({ ban: true, thresholds: { fanout: 1 } });
    const k = key();
    m.onAbuse('fanout', { ip: IP, key: k });
    expect(m.lift(keyIdentity(k))).toBe(true);
    expect(m.lift(keyIdentity(k))).toBe(false);
    expect(m.lift(IP)).toBe(true);
    expect(m.isBanned(IP, k)).toBe(false);
    expect(m.stats().bans.lifted.api).toBe(2);
  });
});

describe('AbuseMonitor: bounded', () => {
  it('100k identities: tracking, bans and offence records stay within their caps', () => {
    const cap = 1000;
    const { m } = setup({ ban: true, thresholds: { fanout: 1 } }, { maxTracked: cap, maxBans: cap });
    for (let i = 0; i < 100_000; i++) {
      const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
      m.onAbuse('fanout', { ip, key: key() });
    }
    const s = m.stats();
    expect(s.tracked.keys).toBeLessThanOrEqual(cap);
    expect(s.tracked.ips).toBeLessThanOrEqual(cap);
    expect(s.tracked.evictions).toBeGreaterThanOrEqual(2 * (100_000 - cap));
    expect(s.bans.active).toBeLessThanOrEqual(cap);
    expect(s.tracked.offenders).toBeLessThanOrEqual(cap);
    expect(s.bans.overflow).toBeGreaterThan(0);
    // Warnings are rate-limited, the rest counted.
    expect(s.logsSuppressed).toBe(2 * 100_000 - LOG_BURST);
  });

  it('heap: a second 100k identities (and bans) after the tables are full adds nothing', () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const { m } = setup({ ban: true, thresholds: { fanout: 1 } }, { maxTracked: 10_000, maxBans: 10_000 });
    const round = (prefix: number) => {
      for (let i = 0; i < 100_000; i++) m.onAbuse('fanout', { ip: `${prefix}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, key: key() });
      gc();
      return process.memoryUsage().heapUsed;
    };
    gc();
    const empty = process.memoryUsage().heapUsed;
    const full = round(10);
    const again = round(11);
    expect(m.stats().tracked.keys).toBe(10_000);
    expect(m.stats().bans.active).toBe(10_000);
    // Filling the tables costs megabytes; another 100k identities cost (nearly) nothing more.
    expect(full - empty).toBeGreaterThan(1_000_000);
    expect(again - full).toBeLessThan((full - empty) / 4);
  });

  it('the default cap holds under 100k distinct keys without bans', () => {
    const { m } = setup({ thresholds: { absentPeer: 1000 } });
    for (let i = 0; i < 100_000; i++) m.onAbuse('absent_peer', { ip: IP, key: key() });
    expect(m.stats().tracked.keys).toBe(DEFAULT_MAX_TRACKED);
    expect(m.stats().tracked.ips).toBe(1);
  });
});

describe('AbuseMonitor: settings at construction', () => {
  it('refuses bad settings and bad trusted proxies with ConfigError', () => {
    expect(() => new AbuseMonitor({ settings: settings({ windowSeconds: 0 }) })).toThrow(/abuse.windowSeconds/);
    expect(() => new AbuseMonitor({ settings: settings({ exempt: ['nope'] }) })).toThrow(ConfigError);
    expect(() => new AbuseMonitor({ trustedProxies: ['x'] })).toThrow(ConfigError);
  });
});

describe('AbuseMonitor: the caller\'s buffers', () => {
  it('a Buffer reused for another key is not mistaken for the first key', () => {
    const { m } = setup({ ban: true, thresholds: { fanout: 2 } });
    const buf = key();
    const first = Buffer.from(buf);
    m.onAbuse('fanout', { ip: '2001:db8::1', key: buf });
    key().copy(buf);
    m.onAbuse('fanout', { ip: '2001:db8:1::1', key: buf });
    expect(m.bans()).toHaveLength(0);
    expect(m.stats().tracked.keys).toBe(2);
    m.onAbuse('fanout', { ip: '2001:db8:2::1', key: first });
    expect(m.bans().map((b) => b.identity)).toEqual([keyIdentity(first)]);
  });

  it('refreshExemptions: a key allow-listed later is exempt from then on', () => {
    let allowed = false;
    const { m, banned } = setup({ ban: true, thresholds: { fanout: 3 } }, { isAllowListed: () => allowed });
    const k = key();
    m.onAbuse('fanout', { ip: IP, key: k });
    allowed = true;
    m.refreshExemptions();
    m.onAbuse('fanout', { ip: IP, key: k });
    m.onAbuse('fanout', { ip: IP, key: k });
    expect(banned).toHaveLength(0);
    expect(m.stats().crossings.fanout.exempt).toBe(1);
  });
});
