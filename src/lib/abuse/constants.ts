/**
 * Defaults and bounds of abuse detection (issue 7 §4). The thresholds are counts per sliding window
 * (`windowSeconds`), chosen for a public relay: a normal client talks to tens of peers and a large
 * tailnet's node to a few hundred; netcheck probers and peers that just left cause a few packets to
 * absent peers; a client refused by admission retries with back-off.
 */

/** What the relay reports through the `onAbuse` hook. */
export const ABUSE_KINDS = ['fanout', 'absent_peer', 'handshake_failure', 'protocol_violation', 'admission_refused'] as const;
export type AbuseKind = (typeof ABUSE_KINDS)[number];

/** What a threshold crossing led to (a bounded metric label). */
export const ABUSE_ACTIONS = ['warned', 'banned', 'exempt'] as const;
export type AbuseAction = (typeof ABUSE_ACTIONS)[number];

/** Sliding window length: long enough to see a scan, short enough to forget a burst at connect. */
export const DEFAULT_WINDOW_SECONDS = 60;

/**
 * Distinct destinations per window (an event per new destination). Tailscale clients send disco
 * pings to every peer they know: a few hundred for a big tailnet; a scan of the key space is far more.
 */
export const DEFAULT_FANOUT_THRESHOLD = 1000;
/** Packets to keys not connected here: a peer that just left or moved home gets a few per second at most. */
export const DEFAULT_ABSENT_PEER_THRESHOLD = 2000;
/** Refused admissions: a client outside the allow list reconnects with back-off, a few a minute. */
export const DEFAULT_ADMISSION_REFUSED_THRESHOLD = 30;
/** Failed handshakes (bad box, timeout, garbage): a broken client fails now and then, a flood does not stop. */
export const DEFAULT_HANDSHAKE_FAILURE_THRESHOLD = 30;
/** Protocol violations close the connection: a real client never commits one. */
export const DEFAULT_PROTOCOL_VIOLATION_THRESHOLD = 5;

/** Bans are opt-in: start with warnings, read them, then turn bans on. */
export const DEFAULT_BAN = false;
/** First ban 10 min, doubling on each repeat offence, capped at 24 h. */
export const DEFAULT_BAN_SECONDS = 600;
export const DEFAULT_BAN_MAX_SECONDS = 86_400;

/** The ring of sub-buckets per window: the window slides in steps of windowSeconds / 6. */
export const WINDOW_BUCKETS = 6;
/** Counts saturate here (a Uint16 per bucket); thresholds must stay at or below it. */
export const MAX_THRESHOLD = 65_535;

/**
 * Keys and source IPs tracked at once, each: about 200 B an identity, so 13 MB with both tables full
 * (measured); when full, an identity not seen again recently makes room.
 */
export const DEFAULT_MAX_TRACKED = 32_768;
/**
 * Bans (and offence records) held at once: about 330 B a ban with its record, 11 MB when full
 * (measured). When full of bans in force, new crossings are warned about and not banned.
 */
export const DEFAULT_MAX_BANS = 32_768;
/** An identity's offence count (for the growing ban) is forgotten this long after its last ban ended. */
export const OFFENCE_MEMORY_MS = 24 * 3600 * 1000;

/** Abuse warnings logged per LOG_WINDOW_MS before the rest are only counted (a distributed attack). */
export const LOG_BURST = 20;
export const LOG_WINDOW_MS = 10_000;

/** IPv6 sources are counted and banned per /64, the usual allocation to one host or site. */
export const IPV6_PREFIX_BITS = 64;
