/** Server selection and failover knobs (sources noted per constant). */
import { REPORT_HISTORY_MAX_AGE_MS } from '../netcheck/constants.js';

/**
 * How long a probe result or a DERP connect outcome counts as evidence of health. Same window as
 * netcheck's report history (addReportAndPruneExpired: 5 min + 5 s), so a node is judged on exactly the
 * reports the home hysteresis looks at.
 */
export const HEALTH_FRESHNESS_MS = REPORT_HISTORY_MAX_AGE_MS;
/** Budget of one DERP connect probe (derphttp's whole-connect budget is 10 s; a probe should be snappier). */
export const DEFAULT_CONNECT_PROBE_TIMEOUT_MS = 5_000;
/** Connect probes running at once (Tailscale's map has ~30 regions / ~100 nodes). */
export const CONNECT_PROBE_CONCURRENCY = 16;
