/** MultiRegionClient knobs (sources noted per constant). */
/** Regions a MultiRegionClient stays connected to (home + one spare, so a relay death needs no fresh dial). */
export const DEFAULT_REGIONS_K = 2;
/** Packets held while no region can take them (magicsock's per-region write queue is 32). */
export const DEFAULT_HELD_LIMIT = 32;
/** How long "the peer is not on region R" (PeerGone) is remembered before R is tried again. */
export const DEFAULT_PEER_ABSENT_TTL_MS = 30_000;
/** Re-measurement cadence while connected: magicsock re-runs netcheck every 20–26 s (doPeriodicSTUN). */
export const REMEASURE_MIN_MS = 20_000;
export const REMEASURE_MAX_MS = 26_000;
/** Retry of regions whose first connect failed, when fewer than K are up (backoff cap of util/backoff). */
export const DEFAULT_REGION_RETRY_MS = 5_000;
