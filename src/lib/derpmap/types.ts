/**
 * The seed's DERP map shapes (shared/seed), used across the library. A later issue adds Tailscale's
 * JSON schema and conversion; these stay the library's public model for a relay node.
 */

/** One relay node (the seed's DERPServer), plus the TLS fields a Tailscale DERPNode carries. */
export interface DERPServer {
  id: string;
  hostname: string;
  ipv4?: string;
  ipv6?: string;
  stunPort: number;
  /** 0 = default (443). */
  derpPort: number;
  region: string;
  regionCode: number;
  canStun: boolean;
  canRelay: boolean;
  /** Tailscale DERPNode.CertName: expected TLS name, or `sha256-raw:<hex>` to pin a self-signed cert. */
  certName?: string;
  /** Tailscale DERPNode.InsecureForTests: skip TLS verification. */
  insecureForTests?: boolean;
  /** Plain HTTP instead of TLS (local development relays, `derp serve --dev`). */
  plainHttp?: boolean;
}

export interface DERPRegion {
  regionId: number;
  regionCode: string;
  regionName: string;
  nodes: DERPServer[];
}

export interface DERPMap {
  regions: Record<number, DERPRegion>;
}
