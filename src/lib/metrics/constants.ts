/** Defaults of the metrics endpoints and histogram buckets (seconds, Prometheus base units). */

/** `--metrics-addr` default: loopback only; Prometheus' conventional exporter port range starts at 9090. */
export const DEFAULT_METRICS_ADDR = '127.0.0.1:9090';
/** `--metrics-addr none` turns the metrics listener off. */
export const METRICS_ADDR_OFF = 'none';
/** Every metric of ours starts with this (prom-client's default process metrics keep their standard names). */
export const METRIC_PREFIX = 'derp_';

/** Handshake (accept → ClientInfo accepted or failed): one box open, so mostly sub-millisecond on loopback; up to the 10 s timeout. */
export const HANDSHAKE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Client RTT from server pings: LAN to intercontinental, plus a tail for stalled clients. */
export const RTT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5];
/** Slow-receiver queue wait: the write timeout (2 s) bounds it unless disabled. */
export const QUEUE_WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5];

/** Weight of the newest sample in derper's average_queue_duration_ms EWMA (derpserver.go: α = 0.1). */
export const QUEUE_EWMA_ALPHA = 0.1;

/**
 * A scrape renders this many metrics per event-loop turn, then lets the relay's I/O run: the whole
 * registry (~100 metrics) costs ~2 ms of the relay's thread when idle and 10+ ms under load, in one
 * turn if done at once, and every relayed packet would wait for it.
 */
export const SCRAPE_METRICS_PER_TURN = 8;
