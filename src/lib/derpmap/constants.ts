/** Defaults and limits for DERP maps (spec derp-map.md; Tailscale cmd/tailscale/cli/netcheck.go). */

/** `ipn.DefaultControlURL + "/derpmap/default"`, what `tailscale netcheck` fetches. */
export const DEFAULT_DERP_MAP_URL = 'https://controlplane.tailscale.com/derpmap/default';

/** netcheck.go prodDERPMap: `io.LimitReader(res.Body, 1<<20)`. Also applied to files and stdin. */
export const MAX_MAP_BYTES = 1 << 20;

/** netcheck.go prodDERPMap: 10 s context timeout. */
export const DEFAULT_FETCH_TIMEOUT_MS = 10_000;

/** Go's http.Client stops after 10 redirects. */
export const MAX_REDIRECTS = 10;

/** Our bounds against hostile maps (Tailscale's default map has ~30 regions of 1–4 nodes). */
export const MAX_REGIONS = 1_000;
export const MAX_NODES_PER_REGION = 100;

/** DERPNode.STUNPort 0 ⇒ 3478; DERPPort 0 ⇒ 443 (tailcfg/derpmap.go). */
export const DEFAULT_STUN_PORT = 3478;
export const DEFAULT_DERP_PORT = 443;
/** DERPNode.STUNPort -1 = no STUN on this node. */
export const NO_STUN_PORT = -1;
export const MAX_PORT = 65_535;

/** DERPRegionID.IsValid: > 0 and ≤ 2^53 − 1. */
export const MAX_REGION_ID = Number.MAX_SAFE_INTEGER;

/** Region IDs 900–999 are reserved for user-run DERP; YAML deployment regions get IDs from here. */
export const SELF_HOSTED_REGION_FIRST = 900;
export const SELF_HOSTED_REGION_LAST = 999;

/** The conventional value that disables an address family (any non-IP text does, upstream). */
export const ADDR_DISABLED = 'none';

/** CertName form pinning the SHA-256 of the server's DER certificate (net/tlsdial/tlsdial.go). */
export const SHA256_RAW_PREFIX = 'sha256-raw:';
