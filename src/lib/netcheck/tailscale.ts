/**
 * Our report in the JSON shape `tailscale netcheck --format=json` prints: Tailscale's netcheck.Report
 * marshalled by Go's encoding/json (spec netcheck-and-stun.md §6.1, §7). Field order is the struct's.
 */
import type { NetcheckReport } from './types.js';

/** Go's time.Duration in JSON: integer nanoseconds. */
export type GoDurationNs = number;

/** opt.Bool: "" (unknown / not checked) marshals as null. */
export type GoOptBool = boolean | null;

export interface TailscaleNetcheckReport {
  Now: string;
  UDP: boolean;
  IPv6: boolean;
  IPv4: boolean;
  IPv6CanSend: boolean;
  IPv4CanSend: boolean;
  OSHasIPv6: boolean;
  /** We never send ICMP: false, what Tailscale reports when its ICMP fallback did not run or failed. */
  ICMPv4: boolean;
  MappingVariesByDestIP: GoOptBool;
  /** Port mapping is not probed: false, what Tailscale prints when it looked and found none. */
  UPnP: GoOptBool;
  PMP: GoOptBool;
  PCP: GoOptBool;
  PreferredDERP: number;
  RegionLatency: Record<string, GoDurationNs>;
  RegionV4Latency: Record<string, GoDurationNs>;
  RegionV6Latency: Record<string, GoDurationNs>;
  /** A nil Go map (nothing observed) marshals as null. */
  GlobalV4Counters: Record<string, number> | null;
  GlobalV6Counters: Record<string, number> | null;
  /** netip.AddrPort as text: "ip:port" / "[ip]:port"; the zero value is "". */
  GlobalV4: string;
  GlobalV6: string;
  CaptivePortal: GoOptBool;
}

const NS_PER_MS = 1_000_000;

/** ms (fractional) → whole nanoseconds, as time.Duration holds them. */
export function msToGoDuration(ms: number): GoDurationNs {
  return Math.round(ms * NS_PER_MS);
}

/**
 * An ISO 8601 UTC instant as Go's time.Time marshals it (RFC 3339 with nanoseconds, trailing zeros of
 * the fraction dropped, no fraction when it is zero): "…56.780Z" → "…56.78Z", "…56.000Z" → "…56Z".
 */
export function goTimeText(iso: string): string {
  return iso.replace(/\.(\d+)Z$/, (_m, frac: string) => {
    const f = frac.replace(/0+$/, '');
    return f ? `.${f}Z` : 'Z';
  });
}

function durations(m: Record<number, number>): Record<string, GoDurationNs> {
  const out: Record<string, GoDurationNs> = {};
  for (const [id, ms] of Object.entries(m)) out[id] = msToGoDuration(ms);
  return out;
}

function counters(m: Record<string, number>): Record<string, number> | null {
  return Object.keys(m).length === 0 ? null : { ...m };
}

/** Pure conversion: our NetcheckReport → Tailscale's netcheck.Report JSON. */
export function toTailscaleReport(r: NetcheckReport): TailscaleNetcheckReport {
  return {
    Now: goTimeText(r.now),
    UDP: r.udp,
    IPv6: r.ipv6,
    IPv4: r.ipv4,
    IPv6CanSend: r.ipv6CanSend,
    IPv4CanSend: r.ipv4CanSend,
    OSHasIPv6: r.osHasIPv6,
    ICMPv4: false,
    MappingVariesByDestIP: r.mappingVariesByDestIP,
    UPnP: false,
    PMP: false,
    PCP: false,
    PreferredDERP: r.preferredDERP,
    RegionLatency: durations(r.regionLatency),
    RegionV4Latency: durations(r.regionV4Latency),
    RegionV6Latency: durations(r.regionV6Latency),
    GlobalV4Counters: counters(r.globalV4Counters),
    GlobalV6Counters: counters(r.globalV6Counters),
    GlobalV4: r.globalV4,
    GlobalV6: r.globalV6,
    CaptivePortal: r.captivePortal,
  };
}

/** Go map fields: encoding/json sorts their keys as strings ("10" before "2"); JS objects cannot keep that order. */
const MAP_FIELDS = new Set(['RegionLatency', 'RegionV4Latency', 'RegionV6Latency', 'GlobalV4Counters', 'GlobalV6Counters']);

function goMap(m: Record<string, number>, indent: string): string {
  const keys = Object.keys(m).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (keys.length === 0) return '{}';
  const inner = `${indent}\t`;
  return `{\n${keys.map((k) => `${inner}${JSON.stringify(k)}: ${JSON.stringify(m[k])}`).join(',\n')}\n${indent}}`;
}

/** What `--format=json` writes, byte for byte: json.MarshalIndent(report, "", "\t"). */
export function formatTailscaleReport(r: NetcheckReport): string {
  const t = toTailscaleReport(r);
  const fields = Object.entries(t).map(([k, v]) => {
    const text = MAP_FIELDS.has(k) && v !== null ? goMap(v as Record<string, number>, '\t') : JSON.stringify(v);
    return `\t${JSON.stringify(k)}: ${text}`;
  });
  return `{\n${fields.join(',\n')}\n}`;
}
