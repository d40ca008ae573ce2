/** Defaults of `derp probe` (issue 8 §1), each with where its value comes from. */

/** Certificate expiry: warn at ≤ 14 days, fail at ≤ 3 (issue 8; Let's Encrypt renews at 30 days left). */
export const DEFAULT_WARN_DAYS = 14;
export const DEFAULT_FAIL_DAYS = 3;
/** Packets the `packet` check exchanges (issue 8). */
export const DEFAULT_PACKETS = 10;
/** Checks running at once. Each holds at most two DERP connections, so this bounds sockets too. */
export const DEFAULT_CONCURRENCY = 8;
/** Every check's own budget. */
export const DEFAULT_CHECK_TIMEOUT_MS = 10_000;
/** Time given to a check that was aborted (timeout, deadline) to close its sockets before the run moves on. */
export const ABORT_GRACE_MS = 2_000;
/** STUN Binding budget within a check (net/netcheck stunProbeTimeout is 3 s). */
export const STUN_TIMEOUT_MS = 3_000;
/** How long one packet may take to come back in the `packet` check before it counts as lost. */
export const PACKET_TIMEOUT_MS = 2_000;
/** `packet` payload size: small, like derpprobe's mesh probe (8 bytes) plus our sequence header. */
export const PACKET_PAYLOAD_BYTES = 16;
/** `mesh`: resend interval while the far node may not have heard of the receiver yet (derpprobe waits 100 ms once). */
export const MESH_RESEND_MS = 250;
/** `mesh`: how long a packet may take to cross the mesh before the pair is bad. */
export const MESH_DELIVERY_TIMEOUT_MS = 3_000;
/** `bandwidth`: packets in flight (derpprobe uses 30, just under derper's per-client queue of 32). */
export const BANDWIDTH_IN_FLIGHT = 30;
/** STUN port assumed for `--server` targets: derper's default. */
export const SERVER_DEFAULT_STUN_PORT = 3478;
/** The port CanPort80 nodes answer plain HTTP on. */
export const CAPTIVE_PORTAL_PORT = 80;
/** Region of `--server` targets (no map region). */
export const SERVER_REGION_ID = 0;
export const SERVER_REGION_CODE = 'server';
