/**
 * Who abuse is counted against and banned: a node key (`nodekey:<hex>`) or a source address, IPv4 as
 * is and IPv6 by its /64 (one host or site usually gets a whole /64, so a single address is no
 * identity at all). Also the operator's lists: `abuse.lift` and `abuse.exempt` entries.
 */
import { BlockList, isIP } from 'node:net';
import { ConfigError } from '../errors.js';
import { NODE_PUBLIC_PREFIX, formatNodePublic, parseNodePublic } from '../protocol/keys.js';
import { normalizeIp } from '../server/forwarded.js';
import { IPV6_PREFIX_BITS } from './constants.js';

export type IdentityType = 'key' | 'ip';

/** `2001:db8:0:1::/64` for any address in that /64 (`ip` must be a valid IPv6 address without zone). */
export function ipv6Prefix64(ip: string): string {
  const dbl = ip.indexOf('::');
  let groups: string[];
  if (dbl < 0) groups = ip.split(':');
  else {
    const head = dbl === 0 ? [] : ip.slice(0, dbl).split(':');
    const tail = dbl + 2 === ip.length ? [] : ip.slice(dbl + 2).split(':');
    // An embedded IPv4 tail (::ffff:1.2.3.4 style) stands for two groups.
    const width = head.length + tail.length + (tail.at(-1)?.includes('.') === true ? 1 : 0);
    groups = [...head, ...new Array<string>(8 - width).fill('0'), ...tail];
  }
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/${IPV6_PREFIX_BITS}`;
}

/** The identity of a source address: IPv4 (mapped IPv6 unwrapped), or its IPv6 /64; null if not an IP. */
export function ipIdentity(address: string): string | null {
  if (isIP(address) === 4) return address;
  const ip = normalizeIp(address);
  if (ip === null) return null;
  return isIP(ip) === 4 ? ip : ipv6Prefix64(ip);
}

export function keyIdentity(key: Uint8Array): string {
  return formatNodePublic(key);
}

/** A `lift` entry: a node key or an IP address (an IPv6 address lifts the ban of its /64). */
export function parseLiftEntry(text: string): { type: IdentityType; identity: string } {
  const t = text.trim();
  if (t.startsWith(NODE_PUBLIC_PREFIX)) return { type: 'key', identity: keyIdentity(parseNodePublic(t)) };
  const id = ipIdentity(t);
  if (id === null) throw new ConfigError(`abuse entry ${JSON.stringify(text)} is neither a nodekey:… nor an IP address`, { context: { entry: text } });
  return { type: 'ip', identity: id };
}

export function isLiftEntry(text: string): boolean {
  try {
    parseLiftEntry(text);
    return true;
  } catch {
    return false;
  }
}

/** `abuse.exempt`: keys, addresses and CIDRs that are never banned. */
export class ExemptList {
  private readonly keys = new Set<string>();
  private readonly nets = new BlockList();
  private nets4 = 0;
  private nets6 = 0;

  /** Throws ConfigError naming the first entry that is not a nodekey, an IP or a CIDR. */
  constructor(entries: readonly string[] = []) {
    for (const e of entries) this.add(e);
  }

  add(entry: string): void {
    const t = entry.trim();
    if (t.startsWith(NODE_PUBLIC_PREFIX)) {
      this.keys.add(keyIdentity(parseNodePublic(t)));
      return;
    }
    const slash = t.indexOf('/');
    const ip = normalizeIp(slash < 0 ? t : t.slice(0, slash));
    const fam = ip === null ? 0 : isIP(ip);
    const max = fam === 4 ? 32 : 128;
    const bitsText = slash < 0 ? String(max) : t.slice(slash + 1);
    const bits = /^\d{1,3}$/.test(bitsText) ? Number(bitsText) : NaN;
    if (ip === null || !(bits >= 0 && bits <= max)) {
      throw new ConfigError(`abuse.exempt entry ${JSON.stringify(entry)} is not a nodekey:…, an IP address or a CIDR`, { context: { entry } });
    }
    this.nets.addSubnet(ip, bits, fam === 4 ? 'ipv4' : 'ipv6');
    if (fam === 4) this.nets4++;
    else this.nets6++;
  }

  hasKey(identity: string): boolean {
    return this.keys.size > 0 && this.keys.has(identity);
  }

  /** `address` as a socket or X-Forwarded-For reports it. */
  hasIp(address: string): boolean {
    if (this.nets4 + this.nets6 === 0) return false;
    const ip = normalizeIp(address);
    if (ip === null) return false;
    return this.nets.check(ip, isIP(ip) === 4 ? 'ipv4' : 'ipv6');
  }
}

export function isExemptEntry(text: string): boolean {
  try {
    new ExemptList([text]);
    return true;
  } catch {
    return false;
  }
}
