/** netcheck timing and limits (spec netcheck-and-stun.md §6.2; Tailscale net/netcheck/netcheck.go). */

/** ReportTimeout: hard cap for one report. */
export const REPORT_TIMEOUT_MS = 5_000;
/** stunProbeTimeout: stop waiting for STUN replies. */
export const STUN_PROBE_TIMEOUT_MS = 3_000;
/** defaultInitialRetransmitTime: spacing of a full plan's tries (0, 100, 200 ms). */
export const INITIAL_RETRANSMIT_MS = 100;
/** Tries per (region, family) in the initial/full plan. */
export const INITIAL_TRIES = 3;
/** httpsProbeTimeout: budget for the HTTPS latency fallback. */
export const HTTPS_PROBE_TIMEOUT_MS = 5_000;
/** measureHTTPSLatency: per-node dial budget when dialling a region like a DERP client. */
export const HTTPS_DIAL_TIMEOUT_MS = 1_500;
/** measureHTTPSLatency reads at most 8 KiB of the latency-check body. */
export const HTTPS_MAX_BODY_BYTES = 8 << 10;
/** Captive-portal detection starts 200 ms into a full report. */
export const CAPTIVE_PORTAL_DELAY_MS = 200;
/** net/captivedetection: 3 s timeout, at most 5 endpoints. */
export const CAPTIVE_PORTAL_TIMEOUT_MS = 3_000;
export const CAPTIVE_PORTAL_MAX_ENDPOINTS = 5;
/** net/captivedetection: the request's Cache-Control header. */
export const CAPTIVE_PORTAL_CACHE_CONTROL = 'no-cache, no-store, must-revalidate, no-transform, max-age=0';

/** preferredDERPAbsoluteDiff: a new home must be at least this much faster. */
export const PREFERRED_DERP_ABSOLUTE_DIFF_MS = 10;
/** PreferredDERPFrameTime: a home heard from this recently is kept when a challenger appears. */
export const PREFERRED_DERP_FRAME_TIME_MS = 8_000;
/** PreferredDERPKeepAliveTimeout (2 × DERP keepalive): keep a home with recent traffic when nothing answered. */
export const PREFERRED_DERP_KEEPALIVE_TIMEOUT_MS = 120_000;
/** addReportAndPruneExpired: history kept for home selection (5 min + 5 s). */
export const REPORT_HISTORY_MAX_AGE_MS = 5 * 60_000 + 5_000;

/**
 * Regions probed at once. STUN probes are one datagram each, so this only matters for huge maps and for
 * the HTTPS fallback (one TCP/TLS connection per region); Tailscale's map has ~30 regions.
 */
export const MAX_CONCURRENT_REGIONS = 64;
