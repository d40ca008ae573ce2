/**
 * The library's one DERP map model: the seed's shapes (shared/seed), extended with optional fields so a
 * Tailscale map (tailcfg/derpmap.go) round-trips losslessly (spec derp-map.md §9).
 */

/** One relay node (the seed's DERPServer), plus the Tailscale DERPNode fields the seed lacks. */
export interface DERPServer {
  /** DERPNode.Name: unique across the whole map (e.g. "1a", "900a"). */
  id: string;
  /** DERPNode.HostName: TLS SNI / certificate name, DNS name when IPs are empty. */
  hostname: string;
  /** "" (or absent) = resolve `hostname` via DNS; an IPv4 literal = use it; "none" = IPv4 disabled. */
  ipv4?: string;
  /** Absent / "" = resolve via DNS (not "disabled"); "none" = IPv6 disabled. */
  ipv6?: string;
  /** UDP STUN port (Tailscale's 0 is stored as 3478); -1 = no STUN. */
  stunPort: number;
  /** 0 = default (443). Maps loaded by this module always store the effective port. */
  derpPort: number;
  /** The enclosing region's code (redundant with the parent). */
  region: string;
  /** The enclosing region's *ID* (the seed's misnomer; DERPNode.RegionID). */
  regionCode: number;
  /** STUN is offered: stunPort != -1 and an address family is usable. */
  canStun: boolean;
  /** DERP relaying is offered (Tailscale: !STUNOnly). */
  canRelay: boolean;
  /** Tailscale DERPNode.CertName: expected TLS name, or `sha256-raw:<hex>` to pin a self-signed cert. */
  certName?: string;
  /** Tailscale DERPNode.InsecureForTests: skip TLS verification. */
  insecureForTests?: boolean;
  /** Plain HTTP instead of TLS (local development relays, `derp serve --dev`). Not in Tailscale maps. */
  plainHttp?: boolean;
  /** Tailscale DERPNode.CanPort80: answers plain HTTP on port 80 (captive-portal checks). */
  canPort80?: boolean;
  /** Tailscale DERPNode.STUNTestIP: send STUN to this IP instead (tests). */
  stunTestIP?: string;
}

export interface DERPRegion {
  regionId: number;
  regionCode: string;
  regionName: string;
  /** Ordered by preference. */
  nodes: DERPServer[];
  /** Tailscale DERPRegion.Avoid (deprecated upstream, carried along). */
  avoid?: boolean;
  /** Tailscale DERPRegion.NoMeasureNoHome: never probed, never chosen as home. */
  noMeasureNoHome?: boolean;
  /** Degrees; absent when Tailscale's value is 0 (omitempty). */
  latitude?: number;
  longitude?: number;
}

/** Tailscale DERPHomeParams. */
export interface DERPHomeParams {
  /** Region ID → latency multiplier for home selection (< 1 favours, > 1 penalises). */
  regionScore?: Record<number, number>;
}

export interface DERPMap {
  regions: Record<number, DERPRegion>;
  /** Tailscale DERPMap.HomeParams. */
  homeParams?: DERPHomeParams;
  /** Tailscale DERPMap.omitDefaultRegions: use only these regions when merging with defaults. */
  omitDefaultRegions?: boolean;
}

/** The schemas a map can be read from / written to. */
export type DerpMapFormat = 'tailscale' | 'seed' | 'yaml';
