/**
 * The relay's shared state: which connection owns which key (with derper's duplicate-key rules),
 * who was sent packets from whom (for PeerGone), the per-turn flush of dirty connections, and one
 * ticker for every handshake deadline, write timeout and keepalive (no per-connection timers).
 */
import { timingSafeEqual, type KeyObject } from 'node:crypto';
import { KEEPALIVE_INTERVAL_MS, KEEPALIVE_JITTER_MS, KEY_LEN, MESH_WRITE_TIMEOUT_MS, PeerGoneReason, PeerPresentFlags } from '../protocol/constants.js';
import { looksLikeDisco } from '../protocol/disco.js';
import { encode, ipTo16 } from '../protocol/frames.js';
import type { Logger } from '../util/logger.js';
import { ClientConn } from './conn.js';
import { HANDSHAKE_EXPIRIES_PER_TURN, HANDSHAKE_SHARE_BANK_MS, HANDSHAKES_PER_TURN, KEEPALIVES_PER_TURN, MAX_TICK_MS, MIN_TICK_MS } from './constants.js';
import type { AbuseEvent, AbuseHook, AdmitFn, BanCheck, PacketForwarder } from './hooks.js';
import { ClientLimits } from './limits.js';
import type { HandshakeResult, RelayObserver } from './observer.js';
import { newStats, type DropReason, type RelayStats } from './stats.js';
import { ShareBudget, TurnQueue, TurnRunner } from './turns.js';
import type { CryptoThread } from './crypto-thread.js';
import { DueWheel } from './wheel.js';

/** NotePreferred changes count as home moves only this long after connecting (derpserver.go: setPreferred). */
const HOME_MOVE_GRACE_MS = 5_000;
/** Compact a duplicate set's send history once it is this much longer than the set. */
const DUP_HISTORY_SLACK = 16;

/** Several connections for one key (spec §8): the last writer is active. */
class DupSet {
  readonly conns = new Set<ClientConn>();
  last: ClientConn | null = null;
  history: ClientConn[] = [];

  /** Keeps, in order, connections still in the set, without consecutive repeats (derpserver.go: removeClient). */
  compact(): void {
    const trim: ClientConn[] = [];
    for (const c of this.history) if (this.conns.has(c) && trim[trim.length - 1] !== c) trim.push(c);
    this.history = trim;
  }
}

export interface HubConfig {
  privateKey: KeyObject;
  /** The server's own public key: WatchConns from a client with this key is ignored (it dialed itself). */
  publicKey: Buffer;
  logger: Logger;
  handshakeTimeoutMs: number;
  /** Exact keepalive interval; absent = 60 s + per-connection jitter in [0, 5 s). */
  keepAliveMs: number | undefined;
  sendQueueDepth: number;
  /** 0 disables the write timeout. */
  writeTimeoutMs: number;
  /** Server Ping (RTT) interval; absent = each connection's keepalive interval; 0 = never ping. */
  pingIntervalMs: number | undefined;
}

/** The sibling-worker link among a key's forwarders, or null. */
function siblingOf(v: PacketForwarder | PacketForwarder[]): PacketForwarder | null {
  if (!Array.isArray(v)) return v.sibling === true ? v : null;
  for (const f of v) if (f.sibling === true) return f;
  return null;
}

/** PeerPresent for a key held by a sibling worker (its address is not known here). */
function siblingPresentFrame(keyStr: string): Buffer {
  return encode.peerPresent(Buffer.from(keyStr, 'latin1'), new Uint8Array(16), 0, PeerPresentFlags.IsRegular);
}

/** PeerPresent for one connection: its address, port and flags (derpserver.go: presentFlags). */
function peerPresentFrame(c: ClientConn): Buffer {
  let flags = 0;
  if (c.mesh) flags |= PeerPresentFlags.IsMeshPeer;
  if (c.info?.isProber === true) flags |= PeerPresentFlags.IsProber;
  if (flags === 0) flags = PeerPresentFlags.IsRegular;
  return encode.peerPresent(c.key!, ipTo16(c.remoteAddress), c.remotePort, flags);
}

export class Hub {
  readonly stats: RelayStats = newStats();
  /** Bumped on any change of key → active connection; invalidates the per-connection dst caches. */
  gen = 0;
  readonly privateKey: KeyObject;
  readonly logger: Logger;
  readonly sendQueueDepth: number;
  /** Every live connection, handshaking or registered. */
  readonly all = new Set<ClientConn>();
  readonly pending = new Set<ClientConn>();
  readonly blocked = new Set<ClientConn>();
  private readonly clients = new Map<string, ClientConn | DupSet>();
  /**
   * src key → (dst key → the dst connection that was sent packets from src) (derpserver.go: sentTo).
   * Pruned when either side closes (each dst connection knows its senders), so a sender that talks to
   * many short-lived peers holds nothing for the ones that left.
   */
  private readonly sentTo = new Map<string, Map<string, ClientConn>>();
  private dirtyList: ClientConn[] = [];
  private spareList: ClientConn[] = [];
  private flushScheduled = false;
  private ticker: NodeJS.Timeout | null = null;
  /** Set during stop(): no PeerGone storm while everyone is being closed. */
  stopping = false;
  readonly registeredListeners = new Set<(c: ClientConn) => void>();
  /** Extra work for the same ticker (RelayServer: connections that have not sent their request yet). */
  onTick: ((now: number) => void) | null = null;
  /** Duration measurements (metrics); null = none, and then no server pings are sent. */
  observer: RelayObserver | null = null;
  /** Opens ClientInfo frames off the event loop (RelayServerInit.cryptoThread); null = inline. */
  cryptoThread: CryptoThread | null = null;
  /** Admission after ClientInfo (RelayServerInit.admit); null = everyone. */
  admit: AdmitFn | null = null;
  onAbuse: AbuseHook | null = null;
  isBanned: BanCheck | null = null;
  /** Per-client byte rates (spec §9); setClientLimits applies a change to live connections. */
  limits = new ClientLimits();
  /** Cap on connections between the upgrade and ServerInfo (ClientInfo wait + admission); 0 = none. */
  maxPendingHandshakes = 0;
  /** The region's mesh key (spec §10.1); null = no client is a mesh peer. */
  private meshKey: Buffer | null = null;
  /** Mesh connections that sent WatchConns: they hear PeerPresent / PeerGone for every local key. */
  private readonly watchers = new Set<ClientConn>();
  /**
   * Keys held by other nodes (spec §10.2): the link(s) that reported them, the first registered first
   * (derpserver.go: multiForwarder). Consulted only when the key has no local connection.
   */
  private readonly forwarders = new Map<string, PacketForwarder | PacketForwarder[]>();

  constructor(private readonly cfg: HubConfig) {
    this.privateKey = cfg.privateKey;
    this.logger = cfg.logger;
    this.sendQueueDepth = cfg.sendQueueDepth;
    const shortest = Math.min(cfg.handshakeTimeoutMs, cfg.writeTimeoutMs || Infinity, cfg.keepAliveMs ?? KEEPALIVE_INTERVAL_MS, cfg.pingIntervalMs || Infinity);
    this.tickMs = Math.max(MIN_TICK_MS, Math.min(MAX_TICK_MS, Math.floor(shortest / 4)));
    this.keepAlives = new DueWheel(this.tickMs, Date.now());
  }

  private readonly tickMs: number;
  /** Active connections by their next keepalive or server Ping, a tick's worth per slot. */
  private readonly keepAlives: DueWheel<ClientConn>;
  private readonly dueKeepAlives: ClientConn[] = [];

  /** Connections waiting for a keepalive or Ping (tests: closed ones must not stay). */
  get keepAliveEntries(): number {
    return this.keepAlives.size;
  }

  startTicker(): void {
    if (this.ticker !== null) return;
    this.ticker = setInterval(this.tick, this.tickMs);
    this.ticker.unref();
  }

  stopTicker(): void {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
  }

  private readonly tick = (): void => {
    const now = Date.now();
    this.relaying = this.stats.packetsReceived !== this.packetsAtTick;
    this.packetsAtTick = this.stats.packetsReceived;
    for (const c of this.pending) {
      if (now < c.deadline) continue;
      // A batch that timed out together (a flood held at the pending cap) is closed a few per turn; one
      // waiting for its turn is not due again (its deadline is reset when its handshake finishes).
      if (!this.handshakeExpiries.offer(c)) c.deadline = Infinity;
    }
    const wt = this.cfg.writeTimeoutMs;
    if (wt > 0) {
      for (const c of this.blocked) {
        const limit = this.writeTimeoutFor(c, wt);
        if (now - c.blockedSince > limit) {
          this.stats.writeTimeouts++;
          c.close(`write timeout: peer did not read for ${limit} ms`, 'warn');
        }
      }
    }
    // Only the connections due this tick, KEEPALIVES_PER_TURN per turn (a reconnect storm's clients
    // all come due within the same few seconds, a write each).
    const due = this.keepAlives.takeDue(now, this.dueKeepAlives);
    for (const c of due) this.keepAliveTurns.offer(c);
    due.length = 0;
    this.onTick?.(now);
  };

  private readonly keepAliveTurns = new TurnRunner<ClientConn>(
    KEEPALIVES_PER_TURN,
    (c) => {
      c.keepAliveIfDue(Date.now());
      this.keepAlives.schedule(c, c.nextKeepAliveAt());
    },
    (c) => !c.active,
  );

  /** Write timeout for a connection; mesh peers get derper's 30 s (spec §10.1). */
  private writeTimeoutFor(c: ClientConn, wt: number): number {
    return c.mesh ? Math.max(wt, MESH_WRITE_TIMEOUT_MS) : wt;
  }

  keepAliveIntervalMs(): number {
    return this.cfg.keepAliveMs ?? KEEPALIVE_INTERVAL_MS + Math.floor(Math.random() * KEEPALIVE_JITTER_MS);
  }

  /** Server Ping interval for a connection with this keepalive interval; 0 = no pings. */
  pingIntervalMs(keepAliveMs: number): number {
    return this.cfg.pingIntervalMs ?? keepAliveMs;
  }

  /** A handshake ended (per connection, not per packet): counted in stats by the caller, timed here. */
  noteHandshake(c: ClientConn, result: HandshakeResult): void {
    this.observer?.handshake(result, (performance.now() - c.acceptedAt) / 1000);
  }

  /**
   * Whether a ClientInfo may be opened in this event-loop turn. Each costs ~0.3 ms of crypto and setup;
   * a burst of them (a reconnect storm, a handshake flood, a refilled accept bucket) handled in one turn
   * would hold every established client's packets for as long. Past HANDSHAKES_PER_TURN the connection
   * parks (deferHandshake) and is resumed, in order, in later turns, with I/O polled in between.
   */
  takeHandshakeTurn(): boolean {
    return this.handshakeTurns.take();
  }

  /** A connection whose ClientInfo waits for a later turn (its reading is paused, the frame held). */
  deferHandshake(c: ClientConn): void {
    this.stats.handshakesDeferred++;
    this.handshakeTurns.defer(c);
  }

  /**
   * The share of the event loop ClientInfo work (X25519, box, registration) may take while clients are
   * relaying (packets in the last tick); 0 = no share, the per-turn limit only. A burst of handshakes
   * then waits, in order and within its handshake deadline, instead of holding relayed packets.
   */
  setHandshakeShare(share: number): void {
    if (share === (this.handshakeBudget?.share ?? 0)) return;
    this.handshakeBudget = share > 0 ? new ShareBudget(share, HANDSHAKE_SHARE_BANK_MS) : null;
    this.handshakeTurns.setGate(share > 0 ? this.handshakeGate : null, (n) => (this.stats.handshakeShareWaits += n));
  }

  /** Whether ClientInfo work is timed (a handshake share is set). */
  get handshakeShareOn(): boolean {
    return this.handshakeBudget !== null;
  }

  /** Ms one ClientInfo took (conn.onFrame times it under a share). */
  spendOnHandshake(ms: number): void {
    this.handshakeBudget?.spend(ms);
  }

  private handshakeBudget: ShareBudget | null = null;
  /** Packets received by the last tick, and whether any came in the tick before: the share applies only then. */
  private packetsAtTick = 0;
  private relaying = false;
  private readonly handshakeGate = (): number => (this.relaying && this.handshakeBudget !== null ? this.handshakeBudget.msUntilAvailable() : 0);

  /** Pending connections past their deadline; one closed or whose handshake finished meanwhile (no longer pending) is skipped. */
  private readonly handshakeExpiries = new TurnRunner<ClientConn>(
    HANDSHAKE_EXPIRIES_PER_TURN,
    (c) => {
      this.stats.handshakeTimeouts++;
      c.fail(c.admitting ? `handshake timeout: no admission decision within ${this.cfg.handshakeTimeoutMs} ms` : `handshake timeout: no ClientInfo within ${this.cfg.handshakeTimeoutMs} ms`, undefined, 'timeout');
    },
    (c) => !this.pending.has(c),
  );

  // Each resumed connection takes its turn (takeHandshakeTurn); a closed one takes none.
  private readonly handshakeTurns = new TurnQueue<ClientConn>(HANDSHAKES_PER_TURN, (c) => c.resumeHandshake());

  /** False (and counted) when the pending-handshake cap is reached: the caller closes the connection. */
  hasPendingRoom(): boolean {
    const max = this.maxPendingHandshakes;
    if (max > 0 && this.pending.size >= max) {
      this.stats.connectionsRefused.pending_handshakes++;
      return false;
    }
    return true;
  }

  /** Reports to the abuse hook; a throwing hook is logged, never lets a client break the relay. */
  abuse(event: AbuseEvent, ip: string, key: Buffer | null): void {
    const h = this.onAbuse;
    if (h === null) return;
    try {
      h(event, { ip, key });
    } catch (err) {
      this.logger.log('error', 'abuse hook threw', { event, reason: err instanceof Error ? err.message : String(err) });
    }
  }

  /** The ServerInfo JSON for a client key (its advertised rate); undefined = derper's plain one. */
  readonly serverInfoFor = (clientKey: Buffer): Buffer | undefined => {
    const l = this.limits;
    if (l.unlimited) return undefined;
    return l.serverInfoPlaintext(l.forKey(clientKey.toString('latin1'), false));
  };

  /** The ban check; one that throws is logged and treated as "not banned" (a broken detector must not lock everyone out). */
  banned(ip: string, key: Buffer | null): boolean {
    const b = this.isBanned;
    if (b === null) return false;
    try {
      return b(ip, key) === true;
    } catch (err) {
      this.logger.log('error', 'ban check threw; treating the client as not banned', { reason: err instanceof Error ? err.message : String(err) });
      return false;
    }
  }

  /** New per-client rates for every live connection and every later one. */
  setClientLimits(l: ClientLimits): void {
    this.limits = l;
    for (const c of this.all) if (c.active) c.applyRate(l.forKey(c.keyStr, c.mesh));
  }

  addPending(c: ClientConn): void {
    this.all.add(c);
    this.pending.add(c);
    c.acceptedAt = performance.now();
    c.deadline = Date.now() + this.cfg.handshakeTimeoutMs;
    this.stats.accepts++;
    this.stats.pendingHandshakes++;
  }

  // ------------------------------------------------------------ registry

  /** The active connection for a key (latin1 string of the 32 bytes), or null. */
  lookup(keyStr: string): ClientConn | null {
    const v = this.clients.get(keyStr);
    if (v === undefined) return null;
    return v instanceof ClientConn ? v : v.last;
  }

  register(c: ClientConn): void {
    const st = this.stats;
    if (this.pending.delete(c)) st.pendingHandshakes--;
    this.keepAlives.schedule(c, c.nextKeepAliveAt());
    st.currentConnections++;
    const cur = this.clients.get(c.keyStr);
    if (cur === undefined) {
      this.clients.set(c.keyStr, c);
      st.clients++;
    } else if (cur instanceof ClientConn) {
      // derpserver.go: registerClient — both stay, the newest is active, the old one is in the history.
      st.dupClientKeys++;
      st.dupClientConns += 2;
      st.dupClientConnsTotal++;
      cur.isDup = true;
      c.isDup = true;
      const d = new DupSet();
      d.conns.add(cur);
      d.conns.add(c);
      d.last = c;
      d.history.push(cur);
      this.clients.set(c.keyStr, d);
    } else {
      st.dupClientConns++;
      st.dupClientConnsTotal++;
      c.isDup = true;
      cur.conns.add(c);
      cur.last = c;
      cur.history.push(c);
    }
    this.gen++;
    this.logger.log('debug', 'client connected', { remote: c.remoteText(), key: c.key!.toString('hex').slice(0, 16), transport: c.transport, ...(c.mesh ? { mesh: true } : {}) });
    // Every new connection of a key, duplicates included (spec §8).
    if (this.watchers.size !== 0) {
      const f = peerPresentFrame(c);
      for (const w of this.watchers) w.appendFrame(f);
    }
    for (const l of this.registeredListeners) l(c);
  }

  /** Last writer wins among duplicates (spec §8). */
  noteActivity(c: ClientConn): void {
    const d = this.clients.get(c.keyStr);
    if (!(d instanceof DupSet) || d.last === c) return;
    d.last = c;
    d.history.push(c);
    if (d.history.length > d.conns.size + DUP_HISTORY_SLACK) d.compact();
    this.gen++;
  }

  /** Bookkeeping when a connection closes (registered or not). */
  onClosed(c: ClientConn, wasActive: boolean): void {
    this.all.delete(c);
    this.keepAlives.remove(c);
    if (this.pending.delete(c)) this.stats.pendingHandshakes--;
    this.blocked.delete(c);
    if (!wasActive) return;
    if (c.watching && this.watchers.delete(c)) this.stats.watchers--;
    this.forgetSentTo(c);
    const st = this.stats;
    st.currentConnections--;
    if (c.preferred) st.currentHomeConnections--;
    const cur = this.clients.get(c.keyStr);
    if (cur === c) {
      this.clients.delete(c.keyStr);
      st.clients--;
      this.gen++;
      this.broadcastGone(c.key!);
      // Still in the region through another node: its senders keep their entries (derpserver.go: unregisterClient).
      if (!this.forwarders.has(c.keyStr)) this.peerGoneFromRegion(c.keyStr, c.key!);
    } else if (cur instanceof DupSet && cur.conns.delete(c)) {
      st.dupClientConns--;
      c.isDup = false;
      if (cur.last === c) cur.last = null;
      cur.compact();
      if (cur.last === null && cur.history.length > 0) cur.last = cur.history[cur.history.length - 1]!;
      if (cur.conns.size === 1) {
        // Back to a single connection: it is active again; no PeerGone (upstream issue 13566).
        const only = cur.conns.values().next().value!;
        only.isDup = false;
        this.clients.set(c.keyStr, only);
        st.dupClientKeys--;
        st.dupClientConns--;
      }
      this.gen++;
    }
  }

  /** Remembers src → dst for PeerGone; true when dst is new for this sender (fan-out). */
  noteSentTo(srcStr: string, dstStr: string, dst: ClientConn): boolean {
    let m = this.sentTo.get(srcStr);
    if (m === undefined) this.sentTo.set(srcStr, (m = new Map()));
    const fresh = m.get(dstStr) !== dst;
    m.set(dstStr, dst);
    (dst.sentFrom ??= new Set()).add(srcStr);
    return fresh;
  }

  /** A closed destination connection is nobody's PeerGone target any more. */
  private forgetSentTo(dst: ClientConn): void {
    const from = dst.sentFrom;
    if (from === null) return;
    dst.sentFrom = null;
    for (const srcStr of from) {
      const m = this.sentTo.get(srcStr);
      if (m === undefined || m.get(dst.keyStr) !== dst) continue;
      m.delete(dst.keyStr);
      if (m.size === 0) this.sentTo.delete(srcStr);
    }
  }

  /** Entries held for PeerGone bookkeeping (for tests and /debug). */
  sentToEntries(): number {
    let n = 0;
    for (const m of this.sentTo.values()) n += m.size;
    return n;
  }

  /** The key's last connection left: PeerGone(Disconnected) to every connection it sent to (spec §7.2). */
  private peerGoneFromRegion(keyStr: string, key: Buffer): void {
    const m = this.sentTo.get(keyStr);
    if (m === undefined) return;
    this.sentTo.delete(keyStr);
    for (const dst of m.values()) dst.sentFrom?.delete(keyStr);
    if (this.stopping) return;
    for (const dst of m.values()) if (dst.active) dst.sendPeerGone(key, PeerGoneReason.Disconnected);
  }

  /**
   * No active connection for the destination: forward it to the node that holds the key (spec §7.1 step
   * 2), else drop it, and the sender hears PeerGone(NotHere) for any packet (not only disco, a deliberate
   * extension), rate-limited per sender connection. `buf[dstOff, +32)` is the destination key, the
   * packet's `len` bytes follow it.
   */
  routeElsewhere(src: ClientConn, dstStr: string, buf: Buffer, dstOff: number, len: number, disco: boolean): PacketForwarder | null {
    const set = this.clients.get(dstStr);
    if (set instanceof DupSet) {
      this.drop('dup_client', len, disco);
      return null;
    }
    if (set === undefined && this.forwarders.size !== 0) {
      const f = this.forwarderFor(dstStr);
      if (f !== null) {
        this.forwardVia(f, src.key!, buf, dstOff, len, disco);
        return f;
      }
    }
    this.drop('unknown_dest', len, disco);
    this.abuse('absent_peer', src.remoteAddress, src.key);
    if (src.allowNotHere(Date.now())) src.sendPeerGone(buf.subarray(dstOff, dstOff + KEY_LEN), PeerGoneReason.NotHere);
    return null;
  }

  /** Counted once: written to the link (forwarded out) or refused by it (forward_error). */
  forwardVia(f: PacketForwarder, srcKey: Buffer, buf: Buffer, dstOff: number, len: number, disco: boolean): void {
    if (f.forwardPacket(srcKey, buf, dstOff, len)) this.stats.packetsForwardedOut++;
    else this.drop('forward_error', len, disco);
  }

  // ------------------------------------------------------------ mesh (spec §10)

  /** Sets the mesh key (32 bytes) or clears it; connections already up keep what they were. */
  setMeshKey(key: Buffer | null): void {
    this.meshKey = key === null ? null : Buffer.from(key);
  }

  get meshEnabled(): boolean {
    return this.meshKey !== null;
  }

  /** Constant-time comparison with the configured key (types/key/derp.go: Equal). */
  isMeshKey(k: Buffer | undefined): boolean {
    const mine = this.meshKey;
    if (mine === null || k === undefined || k.length !== KEY_LEN) return false;
    return timingSafeEqual(k, mine);
  }

  /** WatchConns: first every local key (the flood), then every change (derpserver.go: addWatcher). */
  addWatcher(c: ClientConn): void {
    if (c.watching) return;
    if (c.key!.equals(this.cfg.publicKey)) {
      // Our own key: a node dialed itself (derpserver.go: addWatcher ignores it).
      this.logger.log('info', 'ignoring WatchConns from our own server key (this node dialed itself)', { remote: c.remoteText() });
      return;
    }
    c.watching = true;
    this.watchers.add(c);
    this.stats.watchers++;
    for (const v of this.clients.values()) {
      const conn = v instanceof ClientConn ? v : (v.last ?? v.conns.values().next().value);
      if (conn !== undefined) c.appendFrame(peerPresentFrame(conn));
    }
    // A region peer also hears the keys the host's other workers hold (its one link lands on this worker).
    if (!c.sibling) for (const [k, v] of this.forwarders) if (!this.clients.has(k) && siblingOf(v) !== null) c.appendFrame(siblingPresentFrame(k));
  }

  /** Region watchers (not sibling workers) hear `f` for a key a sibling worker holds. */
  private toRegionWatchers(f: Buffer): void {
    for (const w of this.watchers) if (!w.sibling) w.appendFrame(f);
  }

  /** ForwardPacket from the region for a key a sibling worker holds: written to that link; false = none. */
  forwardToSibling(src: Buffer, dstStr: string, buf: Buffer, dstOff: number, len: number, disco: boolean): boolean {
    const v = this.forwarders.get(dstStr);
    const f = v === undefined ? null : siblingOf(v);
    if (f === null) return false;
    this.forwardVia(f, src, buf, dstOff, len, disco);
    return true;
  }

  /** The key's last local connection closed: every watcher hears PeerGone(Disconnected). */
  private broadcastGone(key: Buffer): void {
    if (this.watchers.size === 0 || this.stopping) return;
    const f = encode.peerGone(key, PeerGoneReason.Disconnected);
    // Still held by a sibling worker: region watchers keep routing it to this host.
    const v = this.forwarders.get(key.toString('latin1'));
    const held = v !== undefined && siblingOf(v) !== null;
    for (const w of this.watchers) if (!held || w.sibling) w.appendFrame(f);
  }

  /** A mesh link reports `keyStr` present on its node. */
  addForwarder(keyStr: string, f: PacketForwarder): void {
    // Senders cache their last destination's route, forwarders included.
    this.gen++;
    const cur = this.forwarders.get(keyStr);
    if (f.sibling === true && (cur === undefined || siblingOf(cur) === null) && !this.clients.has(keyStr) && this.watchers.size !== 0) this.toRegionWatchers(siblingPresentFrame(keyStr));
    if (cur === undefined) this.forwarders.set(keyStr, f);
    else if (Array.isArray(cur)) {
      if (!cur.includes(f)) cur.push(f);
    } else if (cur !== f) {
      this.forwarders.set(keyStr, [cur, f]);
      this.stats.multiForwarderCreated++;
    }
  }

  /** The link lost `keyStr` (PeerGone, NotHere, or the link itself went down). */
  removeForwarder(keyStr: string, f: PacketForwarder): void {
    const cur = this.forwarders.get(keyStr);
    if (cur === undefined) return;
    this.gen++;
    if (f.sibling === true) this.siblingGone(keyStr, cur, f);
    if (Array.isArray(cur)) {
      const i = cur.indexOf(f);
      if (i < 0) return;
      cur.splice(i, 1);
      if (cur.length === 1) {
        this.forwarders.set(keyStr, cur[0]!);
        this.stats.multiForwarderDeleted++;
      }
      return;
    }
    if (cur !== f) return;
    this.forwarders.delete(keyStr);
    // Gone from the whole region: its local senders hear PeerGone (derpserver.go: RemovePacketForwarder).
    if (!this.clients.has(keyStr)) this.peerGoneFromRegion(keyStr, Buffer.from(keyStr, 'latin1'));
  }

  /** `f` (a sibling link) forgets the key: region watchers hear PeerGone when no sibling and no local connection holds it. */
  private siblingGone(keyStr: string, cur: PacketForwarder | PacketForwarder[], f: PacketForwarder): void {
    if (this.watchers.size === 0 || this.stopping || this.clients.has(keyStr)) return;
    const others = Array.isArray(cur) ? cur.filter((x) => x !== f && x.sibling === true).length : 0;
    if (others === 0 && (cur === f || (Array.isArray(cur) && cur.includes(f)))) this.toRegionWatchers(encode.peerGone(Buffer.from(keyStr, 'latin1'), PeerGoneReason.Disconnected));
  }

  /** The preferred (first-registered) link for a key, or null. */
  forwarderFor(keyStr: string): PacketForwarder | null {
    const v = this.forwarders.get(keyStr);
    if (v === undefined) return null;
    return Array.isArray(v) ? v[0]! : v;
  }

  /** ForwardPacket for a key with no active connection here: never re-forwarded (spec §10.3). */
  dropForwarded(from: ClientConn, dstStr: string, dstKey: Buffer, len: number, disco: boolean): void {
    if (this.clients.get(dstStr) instanceof DupSet) {
      this.drop('dup_client', len, disco);
      return;
    }
    this.drop('unknown_dest_on_fwd', len, disco);
    // Tells the forwarding node's link to forget the key (derpserver.go: handleFrameForwardPacket).
    if (from.allowNotHere(Date.now())) from.sendPeerGone(dstKey, PeerGoneReason.NotHere);
  }

  /** ClosePeer (spec §10.4): closes every connection of the key; returns how many. */
  closePeer(keyStr: string): number {
    const v = this.clients.get(keyStr);
    this.stats.closePeerFrames++;
    if (v === undefined) {
      this.logger.log('info', 'ClosePeer for a key with no connection here', { key: Buffer.from(keyStr, 'latin1').toString('hex').slice(0, 16) });
      return 0;
    }
    const conns = v instanceof ClientConn ? [v] : [...v.conns];
    for (const c of conns) c.close('closed by a mesh peer (ClosePeer)', 'info');
    this.stats.closePeerConns += conns.length;
    return conns.length;
  }

  /** Keys mesh links reported (some may be local too), and mesh watchers (for tests and /debug). */
  meshView(): { remoteKeys: number; watchers: number } {
    return { remoteKeys: this.forwarders.size, watchers: this.watchers.size };
  }

  /** Keys reachable only through a mesh link (derper: clients_remote); O(keys), at scrape time. */
  remoteOnlyKeys(): number {
    let n = 0;
    for (const k of this.forwarders.keys()) if (!this.clients.has(k)) n++;
    return n;
  }

  /** Injects a packet as if `from` had sent it (RelayServer.relayPacket). */
  inject(from: Buffer, to: Buffer, data: Buffer): boolean {
    const st = this.stats;
    const disco = looksLikeDisco(data);
    st.packetsReceived++;
    st.bytesReceived += data.length;
    if (disco) st.packetsReceivedDisco++;
    else st.packetsReceivedOther++;
    const dstStr = to.toString('latin1');
    const dst = this.lookup(dstStr);
    if (dst === null) {
      this.drop(this.clients.get(dstStr) instanceof DupSet ? 'dup_client' : 'unknown_dest', data.length, disco);
      return false;
    }
    const fromStr = from.toString('latin1');
    if (this.clients.has(fromStr)) this.noteSentTo(fromStr, dstStr, dst);
    dst.deliver(from, data, 0, data.length, disco);
    return true;
  }

  setPreferred(c: ClientConn, preferred: boolean): void {
    if (c.preferred === preferred) return;
    c.preferred = preferred;
    const st = this.stats;
    st.currentHomeConnections += preferred ? 1 : -1;
    if (Date.now() - c.connectedAt > HOME_MOVE_GRACE_MS) {
      if (preferred) st.homeMovesIn++;
      else st.homeMovesOut++;
    }
  }

  drop(reason: DropReason, bytes: number, disco: boolean): void {
    const st = this.stats;
    st.packetsDropped[reason]++;
    st.bytesDropped[reason] += bytes;
    if (disco) {
      st.packetsDroppedDisco++;
      st.packetsDroppedDiscoBy[reason]++;
      st.bytesDroppedDiscoBy[reason] += bytes;
    } else st.packetsDroppedOther++;
  }

  /** `pkts` packets (`discoPkts` of them disco) dropped at once, e.g. a batch its connection never wrote. */
  dropBatch(reason: DropReason, pkts: number, bytes: number, discoPkts: number, discoBytes: number): void {
    const st = this.stats;
    st.packetsDropped[reason] += pkts;
    st.bytesDropped[reason] += bytes;
    st.packetsDroppedDisco += discoPkts;
    st.packetsDroppedOther += pkts - discoPkts;
    st.packetsDroppedDiscoBy[reason] += discoPkts;
    st.bytesDroppedDiscoBy[reason] += discoBytes;
  }

  // ------------------------------------------------------------ flushing

  markDirty(c: ClientConn): void {
    c.dirty = true;
    this.dirtyList.push(c);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushAll);
    }
  }

  /** A number that changes once per event-loop turn in which it was asked for (per-turn budgets). */
  turn(): number {
    if (!this.turnBumpScheduled) {
      this.turnBumpScheduled = true;
      setImmediate(this.bumpTurn);
    }
    return this.turnSeq;
  }

  private turnSeq = 0;
  private turnBumpScheduled = false;
  private readonly bumpTurn = (): void => {
    this.turnSeq++;
    this.turnBumpScheduled = false;
  };

  /** One write per destination per event-loop turn. */
  readonly flushAll = (): void => {
    this.flushScheduled = false;
    const list = this.dirtyList;
    this.dirtyList = this.spareList;
    for (let i = 0; i < list.length; i++) list[i]!.flush();
    list.length = 0;
    this.spareList = list;
  };
}
