/**
 * The client's real address behind a reverse proxy: X-Forwarded-For is believed only when the TCP peer
 * is a trusted proxy, and then only as far as the chain of trusted proxies reaches (each hop appends
 * the address it saw, so everything left of the first untrusted hop is whatever the client wrote).
 */
import { BlockList, isIP } from 'node:net';
import { ConfigError } from '../errors.js';

/** What resolving a connection's peer yields. */
export interface ForwardedPeer {
  /** The client's address as the outermost trusted proxy saw it. */
  address: string;
  /** The X-Forwarded-For value was present but unusable (and the proxy's address was kept). */
  malformed: boolean;
}

const V4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/** Canonical form for matching and display: no brackets, IPv4-mapped IPv6 as IPv4; null when not an IP. */
export function normalizeIp(text: string): string | null {
  let s = text.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const fam = isIP(s);
  if (fam === 0) return null;
  if (fam === 6) {
    const m = V4_MAPPED.exec(s);
    if (m !== null && isIP(m[1]!) === 4) return m[1]!;
    // Zone ids (fe80::1%eth0) mean nothing to a remote proxy's header.
    if (s.includes('%')) return null;
  }
  return s;
}

/** A set of trusted proxy CIDRs ("10.0.0.0/8", "::1/128", or a bare address). */
export class TrustedProxies {
  private readonly list = new BlockList();
  readonly cidrs: readonly string[];

  /** Throws ConfigError naming the first entry that is not an IPv4/IPv6 address or CIDR. */
  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const slash = c.indexOf('/');
      const ip = normalizeIp(slash < 0 ? c : c.slice(0, slash));
      const fam = ip === null ? 0 : isIP(ip);
      const max = fam === 4 ? 32 : 128;
      const bitsText = slash < 0 ? String(max) : c.slice(slash + 1);
      const bits = /^\d{1,3}$/.test(bitsText) ? Number(bitsText) : NaN;
      if (ip === null || !(bits >= 0 && bits <= max)) {
        throw new ConfigError(`trusted proxy ${JSON.stringify(c)} is not an IPv4 or IPv6 address or CIDR (e.g. 127.0.0.1/32, 10.0.0.0/8, ::1/128)`, {
          context: { trustedProxy: c },
        });
      }
      this.list.addSubnet(ip, bits, fam === 4 ? 'ipv4' : 'ipv6');
    }
    this.cidrs = [...cidrs];
  }

  get empty(): boolean {
    return this.cidrs.length === 0;
  }

  /** True when `address` (as a socket reports it) is inside one of the CIDRs. */
  isTrusted(address: string): boolean {
    const ip = normalizeIp(address);
    if (ip === null) return false;
    return this.list.check(ip, isIP(ip) === 4 ? 'ipv4' : 'ipv6');
  }

  /**
   * The client's address for a connection from `peer` carrying `xff` (every X-Forwarded-For value,
   * comma-joined). Null when the peer is not trusted or sent no header: use the TCP peer as is.
   * Walks right to left past trusted hops; the first untrusted address is the client. A malformed
   * entry stops the walk at the last good hop, since nothing left of it can be vouched for.
   */
  resolve(peer: string, xff: string | undefined): ForwardedPeer | null {
    if (xff === undefined || this.empty || !this.isTrusted(peer)) return null;
    const hops = xff.split(',');
    let address = normalizeIp(peer) ?? peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const ip = normalizeIp(hops[i]!);
      if (ip === null) return { address, malformed: true };
      address = ip;
      if (!this.isTrusted(ip)) break;
    }
    return { address, malformed: false };
  }
}
