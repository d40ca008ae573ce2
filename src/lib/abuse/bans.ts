/**
 * Current bans by identity (O(1) lookup, lazy expiry) and each identity's offence count, which makes
 * the next ban longer: banSeconds × 2^(offences − 1), capped at banMaxSeconds. Both maps are bounded.
 * Bans live in memory only: they survive a reload (the monitor keeps this object) but not a restart.
 */
import type { AbuseKind } from './constants.js';
import { OFFENCE_MEMORY_MS } from './constants.js';
import type { IdentityType } from './identity.js';

export interface Ban {
  /** `nodekey:<hex>`, an IPv4 address, or an IPv6 /64 (`2001:db8::/64`). */
  identity: string;
  type: IdentityType;
  /** The event kind whose threshold was crossed. */
  kind: AbuseKind;
  /** Human-readable: what was counted over which window. */
  reason: string;
  /** Epoch ms. */
  since: number;
  until: number;
  /** This identity's offences, this one included (1 = first ban). */
  offences: number;
}

interface Offence {
  offences: number;
  /** When the last ban ends (epoch ms). */
  lastUntil: number;
}

export type LiftCause = 'expired' | 'config' | 'api';

export class BanList {
  private readonly bans = new Map<string, Ban>();
  private readonly history = new Map<string, Offence>();
  lifted: Record<LiftCause, number> = { expired: 0, config: 0, api: 0 };
  /** Bans dropped because the list was full (counted, never silent). */
  overflow = 0;

  constructor(private readonly maxBans: number) {}

  get size(): number {
    return this.bans.size;
  }

  get historySize(): number {
    return this.history.size;
  }

  /** The ban of `identity` in force at `now`, or undefined (an expired one is removed here). */
  get(identity: string, now: number): Ban | undefined {
    const b = this.bans.get(identity);
    if (b === undefined) return undefined;
    if (b.until > now) return b;
    this.bans.delete(identity);
    this.lifted.expired++;
    return undefined;
  }

  /**
   * Bans `identity` for banSeconds × 2^(offences − 1) (≤ maxSeconds); an identity already banned keeps
   * its ban (created false). Returns the ban in force.
   */
  add(
    entry: { identity: string; type: IdentityType; kind: AbuseKind; reason: string },
    now: number,
    durations: { banSeconds: number; banMaxSeconds: number },
  ): { ban: Ban; created: boolean } {
    const current = this.get(entry.identity, now);
    if (current !== undefined) return { ban: current, created: false };
    const past = this.history.get(entry.identity);
    const offences = past !== undefined && past.lastUntil + OFFENCE_MEMORY_MS > now ? past.offences + 1 : 1;
    // 2^(n−1) overflows nothing: the exponent is capped well before the cap matters.
    const seconds = Math.min(durations.banMaxSeconds, durations.banSeconds * 2 ** Math.min(offences - 1, 40));
    const ban: Ban = { ...entry, since: now, until: now + seconds * 1000, offences };
    if (this.bans.size >= this.maxBans) this.makeRoom(now);
    this.bans.set(entry.identity, ban);
    this.history.delete(entry.identity);
    if (this.history.size >= this.maxBans) this.dropOldestHistory(now);
    this.history.set(entry.identity, { offences, lastUntil: ban.until });
    return { ban, created: true };
  }

  /** Lifts a ban and forgets the identity's offences; returns the lifted ban, if there was one. */
  lift(identity: string, cause: LiftCause, now: number): Ban | undefined {
    const b = this.get(identity, now);
    this.history.delete(identity);
    if (b === undefined) return undefined;
    this.bans.delete(identity);
    this.lifted[cause]++;
    return b;
  }

  /** Bans in force at `now`, soonest to end first (expired ones are removed). */
  list(now: number): Ban[] {
    this.sweep(now);
    return [...this.bans.values()].sort((a, b) => a.until - b.until);
  }

  sweep(now: number): void {
    for (const [id, b] of this.bans) {
      if (b.until <= now) {
        this.bans.delete(id);
        this.lifted.expired++;
      }
    }
  }

  private makeRoom(now: number): void {
    this.sweep(now);
    if (this.bans.size < this.maxBans) return;
    const oldest = this.bans.keys().next();
    if (oldest.done !== true) this.bans.delete(oldest.value);
    this.overflow++;
  }

  private dropOldestHistory(now: number): void {
    for (const [id, o] of this.history) if (o.lastUntil + OFFENCE_MEMORY_MS <= now) this.history.delete(id);
    if (this.history.size < this.maxBans) return;
    const oldest = this.history.keys().next();
    if (oldest.done !== true) this.history.delete(oldest.value);
  }
}
