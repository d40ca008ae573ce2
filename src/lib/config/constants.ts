/** Defaults of the serve configuration that are not the relay's or STUN's own (those live beside them). */

/** derper's production listen address (cmd/derper/derper.go: -a). */
export const PROD_ADDR = ':443';

/** Let's Encrypt's production and staging ACME directories (RFC 8555). */
export const LE_PRODUCTION_DIRECTORY = 'https://acme-v02.api.letsencrypt.org/directory';
export const LE_STAGING_DIRECTORY = 'https://acme-staging-v02.api.letsencrypt.org/directory';

/** /healthz turns unhealthy when the certificate expires within this many days. */
export const DEFAULT_CERT_MARGIN_DAYS = 7;

/** The port-80 listener (captive-portal checks, HTTP-01, redirect) when TLS is on; -1 disables it. */
export const DEFAULT_HTTP_PORT = 80;
export const HTTP_PORT_DISABLED = -1;

/** Prometheus endpoint: loopback only unless asked otherwise (safe default); `none` turns it off. */
export { DEFAULT_METRICS_ADDR, METRICS_ADDR_OFF as METRICS_OFF } from '../metrics/constants.js';
/** With an ephemeral relay port, metrics get an ephemeral loopback port too. */
export const EPHEMERAL_METRICS_ADDR = '127.0.0.1:0';

/** Config files are small; anything bigger is a mistake (or hostile). */
export const MAX_CONFIG_BYTES = 1 << 20;

/** Nesting a config document may have: real files need 4 (derp.servers[i].field); deeper is refused, not recursed into. */
export const MAX_CONFIG_DEPTH = 32;

/** "did you mean": suggest a known name within this many edits (adjacent swaps count as one). */
export const MAX_SUGGESTION_DISTANCE = 2;

/**
 * `derp serve`'s connection limits (limits.*; the library's RelayServer has none unless given). A
 * large office or CGNAT can put hundreds of nodes behind one address; a flood from one host opens
 * thousands. Off with --dev, where benchmarks and tests connect everything from loopback.
 */
export const DEFAULT_MAX_CONNS_PER_IP = 1000;
export const DEFAULT_MAX_PENDING_HANDSHAKES = 5000;
/** Self-handshakes before listening: 200 left a fresh relay's canary p99 under a handshake flood at 2.2× quiet, 800 at 1.5–1.8× (README, Flood). */
export const DEFAULT_WARM_UP_HANDSHAKES = 800;
/** derper's handshake and write deadlines (spec §3.7; derpserver.go: writeTimeout). */
export const DEFAULT_HANDSHAKE_TIMEOUT_SECONDS = 10;
export const DEFAULT_WRITE_TIMEOUT_SECONDS = 2;

/** How often the names in mesh.with are resolved again. */
export const DEFAULT_MESH_RESOLVE_SECONDS = 30;
