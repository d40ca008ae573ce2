/** Identities: IPv4 as is, IPv6 by /64, node keys; lift and exempt entries. */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/lib/errors.js';
import { ExemptList, ipIdentity, ipv6Prefix64, isExemptEntry, isLiftEntry, keyIdentity, parseLiftEntry } from '../../src/lib/abuse/index.js';
import { key } from './helpers.js';

describe('identities', () => {
  it('IPv4 as is, IPv4-mapped IPv6 unwrapped, IPv6 by its /64', () => {
    expect(ipIdentity('192.0.2.7')).toBe('192.0.2.7');
    expect(ipIdentity('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(ipIdentity('2001:db8:0:1::5')).toBe('2001:db8:0:1::/64');
    expect(ipIdentity('2001:0db8:0000:0001:ffff:0:0:9')).toBe('2001:db8:0:1::/64');
    expect(ipIdentity('[2001:db8:0:1::9]')).toBe('2001:db8:0:1::/64');
    expect(ipIdentity('::1')).toBe('0:0:0:0::/64');
    expect(ipIdentity('2001:db8::')).toBe('2001:db8:0:0::/64');
    expect(ipIdentity('fe80::1%eth0')).toBeNull();
    expect(ipIdentity('not an ip')).toBeNull();
    expect(ipv6Prefix64('64:ff9b::192.0.2.1')).toBe('64:ff9b:0:0::/64');
    expect(ipv6Prefix64('1:2:3:4:5:6:7:8')).toBe('1:2:3:4::/64');
  });

  it('lift entries: a key, an IP, an IPv6 address standing for its /64', () => {
    const k = key();
    expect(parseLiftEntry(keyIdentity(k))).toEqual({ type: 'key', identity: keyIdentity(k) });
    expect(parseLiftEntry(' 198.51.100.1 ')).toEqual({ type: 'ip', identity: '198.51.100.1' });
    expect(parseLiftEntry('2001:db8:0:1::77')).toEqual({ type: 'ip', identity: '2001:db8:0:1::/64' });
    expect(() => parseLiftEntry('10.0.0.0/8')).toThrow(ConfigError);
    expect(() => parseLiftEntry('nodekey:zz')).toThrow();
    expect(isLiftEntry('example.com')).toBe(false);
  });

  it('exempt list: keys, addresses and CIDRs', () => {
    const k = key();
    const e = new ExemptList([keyIdentity(k), '203.0.113.0/24', '2001:db8::/32', '198.51.100.9']);
    expect(e.hasKey(keyIdentity(k))).toBe(true);
    expect(e.hasKey(keyIdentity(key()))).toBe(false);
    expect(e.hasIp('203.0.113.200')).toBe(true);
    expect(e.hasIp('::ffff:203.0.113.1')).toBe(true);
    expect(e.hasIp('203.0.114.1')).toBe(false);
    expect(e.hasIp('2001:db8:ffff::1')).toBe(true);
    expect(e.hasIp('198.51.100.9')).toBe(true);
    expect(e.hasIp('198.51.100.10')).toBe(false);
    expect(() => new ExemptList(['10.0.0.0/33'])).toThrow(/abuse.exempt entry "10.0.0.0\/33"/);
    expect(isExemptEntry('host.example')).toBe(false);
  });
});
