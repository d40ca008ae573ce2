/**
 * Current bans by identity (O(1) lookup, lazy expiry) and each identity's offence count, which makes
 * the next ban longer: banSeconds × 2^(offences − 1), capped at banMaxSeconds. Both maps are bounded.
 * Bans live in memory only: they survive a reload (the monitor keeps this object) but not a restart.
 */
import type { AbuseKind } from './constants.js';
import { OFFENCE_MEMORY_MS } from './constants.js';

/** A full ban list is swept for expired bans at most this often. */
const FULL_SWEEP_MS = 1000;
import type { IdentityType } from './identity.js';

export interface Ban {
  /** `nodekey:<hex>`, an IPv4 address, or an IPv6 /64 (`2001:db8::/64`). */
  identity: string;
  type: IdentityType;
  /** The event kind whose threshold was crossed, how many were counted over which window (banReason). */
  kind: AbuseKind;
  count: number;
  threshold: number;
  windowSeconds: number;
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

/** `fanout: 1000 in 60 s (threshold 1000)`: why, in words (for /debug/bans). */
export function banReason(b: Ban): string {
  return `${b.kind}: ${b.count} in ${b.windowSeconds} s (threshold ${b.threshold})`;
}

export type LiftCause = 'expired' | 'config' | 'api';

export class BanList {
  private readonly bans = new Map<string, Ban>();
  private readonly history = new Map<string, Offence>();
  lifted: Record<LiftCause, number> = { expired: 0, config: 0, api: 0 };
  /** Bans dropped because the list was full (counted, never silent). */
  overflow = 0;
  private lastSweep = -Infinity;
  /** Identities whose ban in force was made elsewhere (adopt): its end or lift is counted where it was made. */
  private readonly adopted = new Set<string>();

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
    if (!this.adopted.delete(identity)) this.lifted.expired++;
    return undefined;
  }

  /**
   * Bans `identity` for banSeconds × 2^(offences − 1) (≤ maxSeconds); an identity already banned keeps
   * its ban (created false). When the list is full of bans in force, no ban is made (ban null,
   * counted in `overflow`): the bans there stay. Offences are not recorded while that list is full.
   */
  add(
    entry: Pick<Ban, 'identity' | 'type' | 'kind' | 'count' | 'threshold' | 'windowSeconds'>,
    now: number,
    durations: { banSeconds: number; banMaxSeconds: number },
  ): { ban: Ban | null; created: boolean } {
    const current = this.get(entry.identity, now);
    if (current !== undefined) return { ban: current, created: false };
    const past = this.history.get(entry.identity);
    const offences = past !== undefined && past.lastUntil + OFFENCE_MEMORY_MS > now ? past.offences + 1 : 1;
    // 2^(n−1) overflows nothing: the exponent is capped well before the cap matters.
    const seconds = Math.min(durations.banMaxSeconds, durations.banSeconds * 2 ** Math.min(offences - 1, 40));
    const ban: Ban = { ...entry, since: now, until: now + seconds * 1000, offences };
    this.adopted.delete(entry.identity);
    if (this.bans.size >= this.maxBans || this.history.size >= this.maxBans) this.sweepWhenFull(now);
    // Full of bans in force: the ones there stay, the new one is counted and not made.
    if (this.bans.size >= this.maxBans) {
      this.overflow++;
      return { ban: null, created: false };
    }
    this.bans.set(entry.identity, ban);
    if (past !== undefined || this.history.size < this.maxBans) this.history.set(entry.identity, { offences, lastUntil: ban.until });
    return { ban, created: true };
  }

  /**
   * A ban made elsewhere (another worker of this host): in force here until its own end, its offences
   * remembered so that one made here next escalates from them. False when one at least as long is here
   * already, it has ended, or the list is full of bans in force (counted in `overflow`).
   */
  adopt(ban: Ban, now: number): boolean {
    if (ban.until <= now) return false;
    const current = this.get(ban.identity, now);
    if (current !== undefined && current.until >= ban.until) return false;
    if (current === undefined && this.bans.size >= this.maxBans) {
      this.sweepWhenFull(now);
      if (this.bans.size >= this.maxBans) {
        this.overflow++;
        return false;
      }
    }
    this.bans.set(ban.identity, { ...ban });
    this.adopted.add(ban.identity);
    const past = this.history.get(ban.identity);
    if (past !== undefined || this.history.size < this.maxBans) this.history.set(ban.identity, { offences: Math.max(ban.offences, past?.offences ?? 0), lastUntil: Math.max(ban.until, past?.lastUntil ?? 0) });
    return true;
  }

  /** Lifts a ban and forgets the identity's offences; returns the lifted ban, if there was one. */
  lift(identity: string, cause: LiftCause, now: number): Ban | undefined {
    const b = this.get(identity, now);
    this.history.delete(identity);
    if (b === undefined) return undefined;
    this.bans.delete(identity);
    if (!this.adopted.delete(identity)) this.lifted[cause]++;
    return b;
  }

  /** Bans in force at `now`, soonest to end first (expired ones are removed). */
  list(now: number): Ban[] {
    this.sweep(now);
    return [...this.bans.values()].sort((a, b) => a.until - b.until);
  }

  /** Bans in force at `now` by type (expired ones are removed). */
  countByType(now: number): Record<IdentityType, number> {
    this.sweep(now);
    const n: Record<IdentityType, number> = { key: 0, ip: 0 };
    for (const b of this.bans.values()) n[b.type]++;
    return n;
  }

  sweep(now: number): void {
    for (const [id, b] of this.bans) {
      if (b.until <= now) {
        this.bans.delete(id);
        if (!this.adopted.delete(id)) this.lifted.expired++;
      }
    }
  }

  /** Full: expired bans and forgotten offences are swept at most once per FULL_SWEEP_MS (a ban flood stays O(1) each). */
  private sweepWhenFull(now: number): void {
    if (now - this.lastSweep < FULL_SWEEP_MS) return;
    this.lastSweep = now;
    this.sweep(now);
    for (const [id, o] of this.history) if (o.lastUntil + OFFENCE_MEMORY_MS <= now) this.history.delete(id);
  }
}
