/** Mesh defaults (spec §10). */

/**
 * ForwardPacket is dropped (counted as forward_error) while this much waits for the link's socket.
 * derper blocks the writer for up to 5 s instead; a bound keeps one slow peer from holding memory.
 */
export const MESH_MAX_BUFFERED_BYTES = 4 << 20;

/** Reconnect backoff of a mesh link: derper retries every 5 s; we start fast and cap there. */
export const MESH_RECONNECT = { baseMs: 50, maxMs: 5_000 } as const;

/** derper's default mesh key file (cmd/derper/derper.go: -mesh-psk-file). */
export const DERPER_MESH_PSK_FILE = '/home/derp/keys/derp-mesh.key';

/**
 * Link liveness: a link pings its peer this often while up, and drops the link when nothing (no pong,
 * no frame) has come for MESH_READ_TIMEOUT_MS. derper waits for the client's 2-minute read timeout, so a
 * node that vanishes without closing its sockets keeps attracting packets for its former clients.
 */
export const MESH_PING_INTERVAL_MS = 2_000;
export const MESH_READ_TIMEOUT_MS = 6_000;
