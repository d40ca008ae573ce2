/**
 * Abuse detection (issue 7 §4): the relay reports suspicious events through `onAbuse`; per node key
 * and per source IP (IPv6 per /64) they are counted over a sliding window; crossing a kind's threshold
 * logs one warning per episode, counts a metric and, with bans on, bans the identity that crossed for
 * a time that doubles on each repeat offence. `isBanned` is what the relay asks at accept (key null)
 * and at admission (with the key).
 *
 * Never banned: mesh peers, allow-listed keys (`isAllowListed`), `abuse.exempt` entries, loopback
 * sources and the trusted proxies' own addresses (behind a proxy the hooks get the real client
 * address; a proxy's address stands for everyone behind it). Events from a never-banned key are not
 * counted against its IP either, so a busy allow-listed node behind NAT does not get its NAT banned.
 */
import { describeError } from '../errors.js';
import { shortKey } from '../protocol/keys.js';
import { TrustedProxies } from '../server/forwarded.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { isLoopbackAddress } from '../util/net.js';
import { BanList, type Ban } from './bans.js';
import {
  ABUSE_ACTIONS,
  ABUSE_KINDS,
  DEFAULT_MAX_BANS,
  DEFAULT_MAX_TRACKED,
  LOG_BURST,
  LOG_WINDOW_MS,
  type AbuseAction,
  type AbuseKind,
} from './constants.js';
import { ExemptList, ipIdentity, keyIdentity, parseLiftEntry, type IdentityType } from './identity.js';
import { THRESHOLD_OF, checkAbuseSettings, defaultAbuseSettings, type AbuseSettings } from './settings.js';
import { KIND_COUNT, WindowTable, type WindowRecord } from './window.js';

/** Who an event is about, as the relay's hook passes it. */
export interface AbuseWho {
  /** The client's address (the real one behind a trusted proxy). */
  ip: string;
  /** Null before the handshake told the key. */
  key: Buffer | null;
  /** A mesh-key connection (never counted, never banned). */
  mesh?: boolean;
}

export interface AbuseMonitorInit {
  settings?: AbuseSettings;
  logger?: Logger;
  /** Allow-listed keys are never banned (the admission lists' predicate). */
  isAllowListed?: (key: Buffer) => boolean;
  /** Mesh peers by key, for callers whose hook cannot say `mesh`. */
  isMeshPeer?: (key: Buffer) => boolean;
  /** The relay's trusted proxies: their own addresses are never banned. */
  trustedProxies?: readonly string[];
  /** Called on each new ban (e.g. to close the identity's open connections). */
  onBan?: (ban: Ban) => void;
  /** Keys and IPs tracked at once, each (default 32,768). */
  maxTracked?: number;
  /** Bans (and offence records) held at once (default 65,536). */
  maxBans?: number;
  now?: () => number;
}

export interface AbuseStats {
  /** Events reported, by kind (also those of kinds turned off). */
  events: Record<AbuseKind, number>;
  /** Threshold crossings by kind and what they led to. */
  crossings: Record<AbuseKind, Record<AbuseAction, number>>;
  bans: {
    /** In force now. */
    active: number;
    activeByType: Record<IdentityType, number>;
    /** Bans made since start. */
    total: number;
    lifted: { expired: number; config: number; api: number };
    /** Bans dropped because the ban list was full. */
    overflow: number;
  };
  /** isBanned answers "yes", by what matched. */
  refused: Record<IdentityType, number>;
  tracked: { keys: number; ips: number; evictions: number; offenders: number };
  /** Abuse warnings only counted because too many came at once. */
  logsSuppressed: number;
}

/** A Map, not an object: a kind named like an Object.prototype member must miss too. */
const KIND_INDEX: ReadonlyMap<string, number> = new Map(ABUSE_KINDS.map((k, i) => [k, i]));

function byKind<T>(make: () => T): Record<AbuseKind, T> {
  return Object.fromEntries(ABUSE_KINDS.map((k) => [k, make()])) as Record<AbuseKind, T>;
}

export class AbuseMonitor {
  private cfg: AbuseSettings;
  private thresholds = new Array<number>(KIND_COUNT).fill(0);
  private exempt: ExemptList;
  private trusted: TrustedProxies;
  private readonly keys: WindowTable;
  private readonly ips: WindowTable;
  private readonly banList: BanList;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly events = new Array<number>(KIND_COUNT).fill(0);
  private readonly crossings = byKind(() => Object.fromEntries(ABUSE_ACTIONS.map((a) => [a, 0])) as Record<AbuseAction, number>);
  private readonly refused: Record<IdentityType, number> = { key: 0, ip: 0 };
  private bansTotal = 0;
  // One-entry memos: a flood comes from one connection, whose key Buffer and IP string repeat.
  private memoKey: Buffer | null = null;
  private memoKeyId = '';
  private memoKeyExempt = false;
  private memoIp = '';
  private memoIpId: string | null = null;
  private logWindowStart = 0;
  private logged = 0;
  private suppressed = 0;
  private suppressedTotal = 0;

  /** Throws ConfigError for bad settings or trusted proxies. */
  constructor(private readonly init: AbuseMonitorInit = {}) {
    const s = init.settings ?? defaultAbuseSettings();
    checkAbuseSettings(s);
    this.cfg = s;
    this.exempt = new ExemptList(s.exempt);
    this.trusted = new TrustedProxies(init.trustedProxies ?? []);
    this.logger = init.logger ?? silentLogger;
    this.now = init.now ?? Date.now;
    const max = init.maxTracked ?? DEFAULT_MAX_TRACKED;
    this.keys = new WindowTable(s.windowSeconds * 1000, max);
    this.ips = new WindowTable(s.windowSeconds * 1000, max);
    this.banList = new BanList(init.maxBans ?? DEFAULT_MAX_BANS);
    this.applyThresholds();
  }

  get settings(): AbuseSettings {
    return this.cfg;
  }

  /**
   * New settings (SIGHUP): thresholds, window, bans on/off, durations and exemptions apply at once;
   * current bans stay, except those of identities in `lift`, which are lifted (and their offences
   * forgotten). A new window length restarts the counts. Throws ConfigError (nothing changes) for bad
   * settings. Returns the lifted bans.
   */
  reload(settings: AbuseSettings): { lifted: Ban[] } {
    checkAbuseSettings(settings);
    const exempt = new ExemptList(settings.exempt);
    const lifts = settings.lift.map(parseLiftEntry);
    this.cfg = settings;
    this.exempt = exempt;
    this.keys.setWindow(settings.windowSeconds * 1000);
    this.ips.setWindow(settings.windowSeconds * 1000);
    this.applyThresholds();
    this.memoKey = null;
    this.memoIp = '';
    const now = this.now();
    const lifted: Ban[] = [];
    for (const { type, identity } of lifts) {
      (type === 'key' ? this.keys : this.ips).forget(identity);
      const b = this.banList.lift(identity, 'config', now);
      if (b === undefined) continue;
      lifted.push(b);
      this.logger.log('info', 'ban lifted', { identity, by: 'abuse.lift', kind: b.kind, offences: b.offences });
    }
    return { lifted };
  }

  /** The allow list or mesh peers changed (e.g. an allow-list file was reloaded): re-ask the predicates. */
  refreshExemptions(): void {
    this.memoKey = null;
  }

  /** The relay's trusted proxies changed (reload). Throws ConfigError for a bad entry. */
  setTrustedProxies(cidrs: readonly string[]): void {
    this.trusted = new TrustedProxies(cidrs);
  }

  /** The relay's hook: one suspicious event. O(1); never throws. */
  readonly onAbuse = (kind: AbuseKind, who: AbuseWho): void => {
    const k = KIND_INDEX.get(kind);
    if (k === undefined) return;
    this.events[k]!++;
    const th = this.thresholds[k]!;
    if (th === 0 || who.mesh === true) return;
    try {
      const now = this.now();
      let keyExempt = false;
      if (who.key !== null) {
        // By content, and a copy kept: the caller's Buffer may be reused for another key.
        if (this.memoKey === null || !this.memoKey.equals(who.key)) {
          this.memoKey = Buffer.from(who.key);
          this.memoKeyId = keyIdentity(who.key);
          this.memoKeyExempt = this.keyExempt(who.key, this.memoKeyId);
        }
        keyExempt = this.memoKeyExempt;
        const r = this.keys.add(this.memoKeyId, k, now);
        this.check(this.keys, r, k, th, 'key', who, keyExempt, now);
      }
      if (keyExempt) return;
      if (who.ip !== this.memoIp) {
        this.memoIp = who.ip;
        this.memoIpId = ipIdentity(who.ip);
      }
      const ipId = this.memoIpId;
      if (ipId === null) return;
      const r = this.ips.add(ipId, k, now);
      this.check(this.ips, r, k, th, 'ip', who, false, now);
    } catch (err) {
      // A bug here must not take the relay's read loop with it.
      this.logger.log('error', 'abuse monitor failed on an event', { kind, reason: describeError(err) });
    }
  };

  /** Whether a connection from `ip` (with `key`, once known) is refused by a ban. O(1). */
  readonly isBanned = (ip: string, key: Buffer | null): boolean => {
    if (this.banList.size === 0) return false;
    const now = this.now();
    if (key !== null) {
      const id = keyIdentity(key);
      if (this.keyExempt(key, id)) return false;
      if (this.banList.get(id, now) !== undefined) {
        this.refused.key++;
        return true;
      }
    }
    if (this.ipExempt(ip)) return false;
    const ipId = ipIdentity(ip);
    if (ipId !== null && this.banList.get(ipId, now) !== undefined) {
      this.refused.ip++;
      return true;
    }
    return false;
  };

  /**
   * A ban another worker of this host made (`--workers`): enforced here too, and not counted as made
   * here (see BanList.adopt). True when it is new here: the caller closes the identity's connections.
   */
  adopt(ban: Ban): boolean {
    return this.banList.adopt(ban, this.now());
  }

  /** Bans in force, soonest to end first. */
  bans(): Ban[] {
    return this.banList.list(this.now());
  }

  /** Lifts the ban of a `nodekey:…` or IP address (ConfigError if it is neither); false if none. */
  lift(entry: string): boolean {
    const { type, identity } = parseLiftEntry(entry);
    (type === 'key' ? this.keys : this.ips).forget(identity);
    const b = this.banList.lift(identity, 'api', this.now());
    if (b !== undefined) this.logger.log('info', 'ban lifted', { identity, by: 'api', kind: b.kind, offences: b.offences });
    return b !== undefined;
  }

  stats(): AbuseStats {
    const activeByType = this.banList.countByType(this.now());
    return {
      events: Object.fromEntries(ABUSE_KINDS.map((kind, i) => [kind, this.events[i]!])) as Record<AbuseKind, number>,
      crossings: Object.fromEntries(ABUSE_KINDS.map((kind) => [kind, { ...this.crossings[kind] }])) as Record<AbuseKind, Record<AbuseAction, number>>,
      bans: { active: activeByType.key + activeByType.ip, activeByType, total: this.bansTotal, lifted: { ...this.banList.lifted }, overflow: this.banList.overflow },
      refused: { ...this.refused },
      tracked: { keys: this.keys.size, ips: this.ips.size, evictions: this.keys.evictions + this.ips.evictions, offenders: this.banList.historySize },
      logsSuppressed: this.suppressedTotal,
    };
  }

  private applyThresholds(): void {
    ABUSE_KINDS.forEach((kind, i) => (this.thresholds[i] = this.cfg.thresholds[THRESHOLD_OF[kind]]));
  }

  private keyExempt(key: Buffer, id: string): boolean {
    return this.exempt.hasKey(id) || this.init.isMeshPeer?.(key) === true || this.init.isAllowListed?.(key) === true;
  }

  private ipExempt(ip: string): boolean {
    return isLoopbackAddress(ip) || this.trusted.isTrusted(ip) || this.exempt.hasIp(ip);
  }

  private check(table: WindowTable, r: WindowRecord, k: number, th: number, type: IdentityType, who: AbuseWho, keyExempt: boolean, now: number): void {
    const n = table.sum(r, k);
    const bit = 1 << k;
    if (n < th) {
      r.flagged &= ~bit;
      return;
    }
    if ((r.flagged & bit) !== 0) return;
    r.flagged |= bit;
    this.cross(r.id, type, k, n, who, type === 'key' ? keyExempt : this.ipExempt(who.ip), now);
  }

  private cross(identity: string, type: IdentityType, k: number, count: number, who: AbuseWho, exempt: boolean, now: number): void {
    const kind = ABUSE_KINDS[k]!;
    const th = this.thresholds[k]!;
    const windowSeconds = this.cfg.windowSeconds;
    let action: AbuseAction = exempt ? 'exempt' : this.cfg.ban ? 'banned' : 'warned';
    let ban: Ban | undefined;
    if (action === 'banned') {
      const r = this.banList.add({ identity, type, kind, count, threshold: th, windowSeconds }, now, this.cfg);
      // Already banned (its connections are still closing), or the ban list is full: no new ban.
      if (r.created && r.ban !== null) {
        ban = r.ban;
        this.bansTotal++;
      } else action = 'warned';
    }
    this.crossings[kind][action]++;
    if (this.mayLog(now)) {
      const suppressed = this.suppressed;
      this.suppressed = 0;
      this.logger.log('warn', action === 'banned' ? 'abuse threshold crossed: banned' : 'abuse threshold crossed', {
        kind,
        action,
        identity: type,
        ip: who.ip,
        key: who.key === null ? undefined : shortKey(who.key),
        count,
        threshold: th,
        windowSeconds,
        banSeconds: ban === undefined ? undefined : Math.round((ban.until - ban.since) / 1000),
        until: ban === undefined ? undefined : new Date(ban.until).toISOString(),
        offences: ban?.offences,
        suppressed: suppressed > 0 ? suppressed : undefined,
      });
    }
    if (ban !== undefined) this.init.onBan?.(ban);
  }

  /** At most LOG_BURST warnings per LOG_WINDOW_MS: a distributed attack must not flood the log. */
  private mayLog(now: number): boolean {
    if (now - this.logWindowStart >= LOG_WINDOW_MS) {
      this.logWindowStart = now;
      this.logged = 0;
    }
    if (this.logged < LOG_BURST) {
      this.logged++;
      return true;
    }
    this.suppressed++;
    this.suppressedTotal++;
    return false;
  }
}
