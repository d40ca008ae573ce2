/**
 * Server-side tuning knobs that are ours (not the wire protocol's). Protocol timing and limits live in
 * ../protocol/constants.ts; these decide how the Node server batches, buffers and reaps connections.
 */

/** Default listen address of the library (`derp serve` without --dev uses ":443", like derper). */
export const DEFAULT_ADDR = '127.0.0.1:3340';
export const DEFAULT_PORT = 3340;

/**
 * A destination counts as "slow" once this much is waiting in Node's socket buffer; its packets then go
 * to the bounded per-kind queues (Go's sendQueue) until the socket drains. 256 KiB keeps a few
 * milliseconds of line rate in flight without letting one stuck reader hold megabytes.
 */
export const WRITE_BLOCK_THRESHOLD = 256 << 10;

/**
 * Smallest capacity a destination's per-turn batch grows to once one frame no longer fits; it then
 * doubles within the turn. The first frame of a turn gets an exact-size buffer (cheap for idle clients).
 */
export const BATCH_INITIAL_BYTES = 16 << 10;
/** Upper bound for the capacity hint carried from one turn's batch to the next (a power of two: the pool's largest class). */
export const BATCH_MAX_HINT_BYTES = 1 << 20;

/**
 * Idle batch buffers kept for reuse across the process (bufpool.ts). 8 MiB covers every destination of
 * a busy relay having a few batches in flight; beyond it buffers are left to the GC.
 */
export const BATCH_POOL_MAX_BYTES = 8 << 20;

/** Control frames (PeerGone, KeepAlive…) held for a blocked destination; beyond this they are dropped. */
export const CONTROL_QUEUE_MAX = 64;

/** Restarting frame sent by `stop()` by default: reconnect after 500 ms, keep trying for 5 s (spec §5.1 0x15). */
export const DEFAULT_RESTART_RECONNECT_IN_MS = 500;
export const DEFAULT_RESTART_TRY_FOR_MS = 5_000;

/**
 * TCP keepalive on accepted connections: first probe after this much idle time (Go's net default, which
 * derper inherits). libuv then probes every second, 10 times, so a peer that vanished without FIN/RST
 * (half-open) is freed ~10 s after the idle time. With unacknowledged data in flight the kernel's
 * retransmission timeout applies instead, or the write timeout once the socket backs up.
 */
export const TCP_KEEPALIVE_MS = 15_000;

/** How long `stop()` waits for connections to flush and close before destroying them. */
export const STOP_GRACE_MS = 2_000;
/** A client that half-closed gets what was already written to it; it must read some of it within this long. */
export const HALF_CLOSE_LINGER_MS = STOP_GRACE_MS;

/** The global ticker runs at a quarter of the shortest configured timeout, within these bounds. */
export const MIN_TICK_MS = 5;
export const MAX_TICK_MS = 1_000;

/**
 * Largest WebSocket message accepted. Go's coder/websocket reads at most 32 KiB per message; we accept
 * more (a frame may span messages anyway) but bound memory per connection.
 */
export const WS_MAX_PAYLOAD = 1 << 20;

/** Close codes used on the WebSocket transport (RFC 6455 §7.4.1; spec §3.6). */
export const WS_CLOSE_GOING_AWAY = 1001;
export const WS_CLOSE_UNSUPPORTED_DATA = 1003;
export const WS_CLOSE_POLICY = 1008;

/** Connections an unread `acceptClient()` iterator holds before it drops the oldest. */
export const ACCEPT_QUEUE_MAX = 1024;

/**
 * Bytes a client may send after ClientInfo while its admission decision is pending, held (copied) to be
 * replayed in order; beyond this its transport is paused too (and a disconnect is then only noticed at
 * the handshake deadline). Keeping the transport reading at first lets a client that leaves be cleaned up.
 */
export const ADMISSION_HOLD_BYTES = 64 << 10;

/**
 * Once the accept rate is exceeded the listener stays closed at least this long (longer if the next token
 * is further off). Short, so a reopened listener admits a few connections at a time: a burst of
 * handshakes admitted together would hold the event loop for milliseconds.
 */
export const ACCEPT_PAUSE_MIN_MS = 10;
/** The listen backlog (Node's default) until an accept-rate pause, and the least the relay uses after one. */
export const LISTEN_BACKLOG = 511;
export const ACCEPT_PAUSED_BACKLOG_MIN = 8;
/** A listener that could not be reopened (the port taken meanwhile) is retried this often. */
export const ACCEPT_REOPEN_RETRY_MS = 1000;
/** A listener reopened with the short backlog gets the full one back after this long without a pause. */
export const ACCEPT_BACKLOG_RESTORE_MS = 10_000;
/** An accept-rate pause is logged at most this often (the counters have the rest). */
export const ACCEPT_PAUSE_LOG_MS = 60_000;
/** Bytes one connection reads before it lets the others have the event loop (conn.noteRead): two reads of libuv's 64 KiB. */
export const READ_YIELD_BYTES = 128 << 10;
/**
 * Packets one connection may send per event-loop turn before it yields (conn.onHeader). 128 KiB of
 * 64-byte packets is ~1,300 of them, several milliseconds on a slow core; small packets reach this first.
 */
export const READ_YIELD_FRAMES = 256;
/** ClientInfo frames opened per event-loop turn (hub.takeHandshakeTurn): ~0.3 ms each, so a turn stays well under a millisecond. */
export const HANDSHAKES_PER_TURN = 2;
/** Under a handshake share, ms of ClientInfo work banked while there is none (~10 cold handshakes, ~100 warm): a lone reconnect never waits. */
export const HANDSHAKE_SHARE_BANK_MS = 5;
/**
 * New connections' first reads handled per event-loop turn (relay.onConnection): each is the upgrade
 * parse, the connection's setup and its 101 + ServerKey write (~70 µs on a slow core), or Node's HTTP
 * parser for anything else. A refilled accept bucket lets hundreds arrive in one poll.
 */
export const FIRST_READS_PER_TURN = 8;
/**
 * TLS ClientHellos handed to the TLS layer per event-loop turn (relay.awaitClientHello): the server's
 * whole first flight (key share, certificate, signature) is computed as the hello is read, ~0.5 ms of
 * OpenSSL here (a TLS handshake costs the relay ~2 ms of CPU in all, against ~0.3 ms for a plain one).
 */
export const TLS_HANDSHAKES_PER_TURN = 1;
/**
 * An HTTP head still incomplete is kept by the relay's sniffer (under its deadline) up to this size,
 * Node's default maximum header size; past it Node's parser gets it (and answers 431).
 */
export const SNIFF_HEAD_MAX_BYTES = 16 << 10;
/** Keepalives and server Pings written per event-loop turn (the hub's tick takes only those due). */
export const KEEPALIVES_PER_TURN = 32;
/** Connections closed per event-loop turn for not sending ClientInfo (or not being admitted) in time. */
export const HANDSHAKE_EXPIRIES_PER_TURN = 16;
/** Connections closed per event-loop turn for not finishing their HTTP head in time (~50 µs each). */
export const HEAD_EXPIRIES_PER_TURN = 16;
/** A TurnQueue drops its consumed head once it is this long. */
export const DEFERRED_COMPACT_AT = 1024;
/** The handshake crypto thread's young generation (MiB): it holds one batch at a time. */
export const CRYPTO_THREAD_YOUNG_MIB = 4;
/** The least a crypto-thread batch buffer holds (reused back and forth): some 60 ClientInfo frames. */
export const CRYPTO_BATCH_MIN_BYTES = 16 << 10;
/** Warm-up handshakes in flight at once: enough that the crypto thread answers in batches, as under load. */
export const WARM_UP_CONCURRENCY = 32;
/** A warm-up never holds the start longer than this (a slow machine starts colder instead). */
export const WARM_UP_MAX_MS = 5_000;
