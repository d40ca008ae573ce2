/**
 * The relay's one hook for measurements its counters (stats.ts) cannot give: durations. Called only on
 * handshakes, answered server pings and drained slow-receiver queues, never per delivered packet.
 * The metrics layer implements it; the relay itself never depends on metrics.
 */

/** How a handshake ended: registered, or why not. */
export type HandshakeResult = 'ok' | 'rejected' | 'timeout' | 'closed';

export interface RelayObserver {
  /** A connection finished its handshake (ClientInfo accepted) or failed it; seconds since the accept. */
  handshake(result: HandshakeResult, seconds: number): void;
  /** A client answered the relay's Ping; seconds from the Ping being queued to its Pong being read. */
  rtt(seconds: number): void;
  /** A slow receiver's socket drained; seconds its queued packets waited (blocked → drained). */
  queueWait(seconds: number): void;
}
