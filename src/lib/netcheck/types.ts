/** The netcheck report (after Tailscale's netcheck.Report, spec netcheck-and-stun.md §6.1); times in ms. */

export type ProbeMethod = 'stun' | 'https';

export interface RegionReport {
  regionId: number;
  regionCode: string;
  regionName: string;
  /** Best latency (any method), null when nothing answered. */
  latencyMs: number | null;
  /** Best STUN latency per family. */
  v4LatencyMs: number | null;
  v6LatencyMs: number | null;
  /** How `latencyMs` was measured. */
  method: ProbeMethod | null;
  /** DERPNode.Name of the node that gave `latencyMs`. */
  node: string | null;
  /** Probes sent to this region (STUN requests and HTTPS requests). */
  probes: number;
  /** Why probes failed (one line each; deduplicated). */
  errors: string[];
}

export interface NetcheckReport {
  /** When the report finished (ISO 8601, UTC). */
  now: string;
  /** Wall time the report took. */
  durationMs: number;
  /** At least one STUN round trip completed. */
  udp: boolean;
  /** A round trip (STUN or HTTPS) completed over that family. */
  ipv4: boolean;
  ipv6: boolean;
  /** A STUN packet could be sent over that family. */
  ipv4CanSend: boolean;
  ipv6CanSend: boolean;
  /** A UDP socket could be bound to [::1]:0. */
  osHasIPv6: boolean;
  /** IPv4 public ip:port differed between STUN servers; null until two IPv4 replies. */
  mappingVariesByDestIP: boolean | null;
  /** Chosen home region, 0 = none. */
  preferredDERP: number;
  /** Best latency per region id (any method), STUN per family. */
  regionLatency: Record<number, number>;
  regionV4Latency: Record<number, number>;
  regionV6Latency: Record<number, number>;
  /** How often each public endpoint was seen. */
  globalV4Counters: Record<string, number>;
  globalV6Counters: Record<string, number>;
  /** First IPv4 endpoint seen ("ip:port"), "" if none. */
  globalV4: string;
  /** Last IPv6 endpoint seen ("[ip]:port"), "" if none. */
  globalV6: string;
  /** null = not checked (or nothing answered). */
  captivePortal: boolean | null;
  /** Every measured-or-skipped region of the map, sorted by id. */
  regions: RegionReport[];
}
