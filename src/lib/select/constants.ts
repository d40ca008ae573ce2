/** Server selection and failover knobs (sources noted per constant). */
import { REPORT_HISTORY_MAX_AGE_MS } from '../netcheck/constants.js';

/**
 * How long a probe result or a DERP connect outcome counts as evidence of health. Same window as
 * netcheck's report history (addReportAndPruneExpired: 5 min + 5 s), so a node is judged on exactly the
 * reports the home hysteresis looks at.
 */
export const HEALTH_FRESHNESS_MS = REPORT_HISTORY_MAX_AGE_MS;
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
/** Budget of one DERP connect probe (derphttp's whole-connect budget is 10 s; a probe should be snappier). */
export const DEFAULT_CONNECT_PROBE_TIMEOUT_MS = 5_000;
/** Connect probes running at once (Tailscale's map has ~30 regions / ~100 nodes). */
export const CONNECT_PROBE_CONCURRENCY = 16;
