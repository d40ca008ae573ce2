/**
 * Reconnect policy as data (after nats.js): the reference client's backoff
 * `min(n² × base, max) × U[jitter)` (tailscale util/backoff), with an optional custom delay function.
 */
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS } from '../protocol/constants.js';

export interface ReconnectPolicy {
  /** Multiplier of n² in the backoff, ms. */
  baseMs: number;
  /** Cap before jitter, ms. */
  maxMs: number;
  /** Jitter factor range [lo, hi): the delay is multiplied by a uniform value in it. */
  jitter: [number, number];
  /** Replaces the formula: attempt (1 = first retry after a failure) → delay in ms. */
  delay?: (attempt: number) => number;
}

/** util/backoff: jitter U[0.5, 1.5). */
export const DEFAULT_JITTER: [number, number] = [0.5, 1.5];

export const DEFAULT_RECONNECT_POLICY: ReconnectPolicy = {
  baseMs: BACKOFF_BASE_MS,
  maxMs: BACKOFF_MAX_MS,
  jitter: DEFAULT_JITTER,
};

export function reconnectPolicy(p?: Partial<ReconnectPolicy>): ReconnectPolicy {
  return { ...DEFAULT_RECONNECT_POLICY, ...p };
}

/** Delay before reconnect attempt number `attempt` (1-based: consecutive failures so far). */
export function backoffDelay(policy: ReconnectPolicy, attempt: number, random: () => number = Math.random): number {
  if (policy.delay) return Math.max(0, policy.delay(attempt));
  const n = Math.max(1, attempt);
  const raw = Math.min(n * n * policy.baseMs, policy.maxMs);
  const [lo, hi] = policy.jitter;
  return raw * (lo + random() * (hi - lo));
}
