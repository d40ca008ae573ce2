/**
 * MultiRegionClient: one node key connected to its best K healthy DERP regions at once (one DERPClient
 * each, with its own reconnect), so peers can reach it on any of them. Sends to a peer through the
 * region where the peer was last seen (home first; PeerGone → next region), fails over when a relay dies.
 */
import { EventEmitter } from 'node:events';
import type { DERPServer } from '../derpmap/types.js';
import { ClosedError, DerpError, NoHealthyServerError, describeError } from '../errors.js';
import { KEY_LEN } from '../protocol/constants.js';
import { NodePrivateKey, formatNodePublic, parseNodePublic } from '../protocol/keys.js';
import {
  DEFAULT_HELD_LIMIT,
  DEFAULT_PEER_ABSENT_TTL_MS,
  DEFAULT_REGION_RETRY_MS,
  DEFAULT_REGIONS_K,
  REMEASURE_MAX_MS,
  REMEASURE_MIN_MS,
} from './constants.js';
import type { ServerSelector } from '../select/selector.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { DERPClient, type DERPClientOptions, type PeerGoneEvent, type ReceivedPacket } from '../client/client.js';
import { BoundedQueue } from '../client/packet-queue.js';

export interface MultiRegionClientOptions {
  selector: ServerSelector;
  privateKey?: NodePrivateKey;
  /** Regions to stay connected to. Default DEFAULT_REGIONS_K. */
  k?: number;
  /** Always send to peers through this region (and stay connected to it) while it is up. */
  peerRegion?: number;
  /** Options for every per-region DERPClient (TLS, transport, reconnect policy, timeouts). */
  clientOptions?: Omit<DERPClientOptions, 'privateKey' | 'logger'>;
  /** Packets held while no region can take them. Default DEFAULT_HELD_LIMIT. */
  heldLimit?: number;
  /** How long a PeerGone keeps a region off the peer's route. Default DEFAULT_PEER_ABSENT_TTL_MS. */
  peerAbsentTtlMs?: number;
  /** Retry of regions whose first connect failed, when fewer than K are up. Default DEFAULT_REGION_RETRY_MS. */
  retryMs?: number;
  /** Re-measurement run every REMEASURE_MIN_MS–REMEASURE_MAX_MS (results go into the selector). */
  measure?: (signal: AbortSignal) => Promise<void>;
  /** Override the re-measure interval (ms); false = never. */
  remeasureMs?: number | false;
  logger?: Logger;
  now?: () => number;
}

export interface RegionUpEvent {
  regionId: number;
  regionCode: string;
  node: string;
  url: string;
  home: boolean;
  reconnected: boolean;
}
export interface RegionDownEvent {
  regionId: number;
  regionCode: string;
  node: string;
  reason: string;
  /** The region's client keeps reconnecting in the background. */
  retrying: boolean;
}
export interface HomeChangedEvent {
  from: number;
  to: number;
  reason: string;
}
export interface PeerRegionEvent {
  peer: string;
  /** 0 = unknown. */
  regionId: number;
  why: 'configured' | 'received' | 'home' | 'next-region' | 'peer-gone' | 'region-down';
}
export interface MultiPeerGoneEvent {
  peer: string;
  regionId: number;
  reason: PeerGoneEvent['reasonText'];
}
export interface MultiReceivedPacket extends ReceivedPacket {
  regionId: number;
}

export interface MultiRegionClientEvents {
  regionUp: [RegionUpEvent];
  regionDown: [RegionDownEvent];
  homeChanged: [HomeChangedEvent];
  peerRegion: [PeerRegionEvent];
  peerGone: [MultiPeerGoneEvent];
  /** Held packets went out after a region became available. */
  flushed: [{ count: number; regionId: number }];
  error: [DerpError];
}

type SlotState = 'connecting' | 'up' | 'down';

interface Slot {
  regionId: number;
  regionCode: string;
  server: DERPServer;
  client: DERPClient;
  state: SlotState;
  /** Packets sent per peer on this region since the peer was last heard here (resent on NotHere). */
  unconfirmed: Map<string, BoundedQueue<Buffer>>;
}

interface PeerState {
  key: Buffer;
  region: number;
  absent: Map<number, number>;
}

export class MultiRegionClient extends EventEmitter<MultiRegionClientEvents> {
  readonly publicKey: Buffer;
  private readonly key: NodePrivateKey;
  private readonly selector: ServerSelector;
  private readonly k: number;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly heldLimit: number;
  private readonly slots = new Map<number, Slot>();
  private readonly peers = new Map<string, PeerState>();
  private readonly held: BoundedQueue<{ peer: string; data: Buffer }>;
  private readonly recv: BoundedQueue<MultiReceivedPacket>;
  private home = 0;
  private closed = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private measureTimer: NodeJS.Timeout | undefined;
  private readonly stop$ = new AbortController();
  private startWaiter: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  private reconciling = false;
  private reconcileAgain = false;

  constructor(private readonly opts: MultiRegionClientOptions) {
    super();
    this.key = opts.privateKey ?? NodePrivateKey.generate();
    this.publicKey = this.key.publicKey;
    this.selector = opts.selector;
    this.k = Math.max(1, opts.k ?? DEFAULT_REGIONS_K);
    this.logger = opts.logger ?? silentLogger;
    this.now = opts.now ?? Date.now;
    this.heldLimit = opts.heldLimit ?? DEFAULT_HELD_LIMIT;
    this.held = new BoundedQueue(this.heldLimit);
    this.recv = new BoundedQueue(opts.clientOptions?.receiveQueueLimit ?? 4096);
  }

  publicText(): string {
    return formatNodePublic(this.publicKey);
  }

  /** The home region (0 before any region is up). */
  get homeRegion(): number {
    return this.home;
  }

  /** Regions with an open connection, home first. */
  get upRegions(): number[] {
    return this.orderedUp().map((s) => s.regionId);
  }

  /** Where packets to this peer go now (0 = unknown). */
  peerRegionOf(peer: string): number {
    return this.peers.get(formatNodePublic(parseNodePublic(peer)))?.region ?? 0;
  }

  /** Packets dropped from the held queue. */
  get heldDrops(): number {
    return this.held.dropped;
  }

  /** Connects; resolves once the first region is up, rejects with NoHealthyServerError when none can be. */
  start(signal?: AbortSignal): Promise<void> {
    if (this.startWaiter || this.slots.size > 0) return Promise.reject(new ClosedError('start() called twice'));
    const p = new Promise<void>((resolve, reject) => (this.startWaiter = { resolve, reject }));
    signal?.addEventListener('abort', () => this.settleStart(signal.reason), { once: true });
    this.reconcile();
    this.scheduleMeasure();
    return p;
  }

  private settleStart(err?: unknown): void {
    const w = this.startWaiter;
    if (!w) return;
    this.startWaiter = undefined;
    if (err === undefined) w.resolve();
    else w.reject(err);
  }

  private scheduleMeasure(): void {
    const measure = this.opts.measure;
    if (!measure || this.opts.remeasureMs === false || this.closed) return;
    const ms = this.opts.remeasureMs ?? REMEASURE_MIN_MS + Math.random() * (REMEASURE_MAX_MS - REMEASURE_MIN_MS);
    this.measureTimer = setTimeout(() => {
      this.measureTimer = undefined;
      measure(this.stop$.signal)
        .catch((err: unknown) => this.logger.log('warn', 're-measurement failed; keeping the previous results', { reason: describeError(err) }))
        .finally(() => {
          this.reconcile();
          this.scheduleMeasure();
        });
    }, ms);
  }

  private orderedUp(): Slot[] {
    const order = new Map(this.selector.rank().map((c, i) => [c.regionId, i] as const));
    return [...this.slots.values()]
      .filter((s) => s.state === 'up')
      .sort((a, b) => (a.regionId === this.home ? -1 : b.regionId === this.home ? 1 : (order.get(a.regionId) ?? 1e9) - (order.get(b.regionId) ?? 1e9) || a.regionId - b.regionId));
  }

  /** Brings the set of connections in line with the selector: home + best others, K in all. */
  private reconcile(): void {
    if (this.closed) return;
    if (this.reconciling) {
      this.reconcileAgain = true;
      return;
    }
    this.reconciling = true;
    try {
      do {
        this.reconcileAgain = false;
        this.reconcileOnce();
      } while (this.reconcileAgain && !this.closed);
    } finally {
      this.reconciling = false;
    }
  }

  private reconcileOnce(): void {
    const now = this.now();
    // A live connection is itself a fresh successful DERP connect.
    for (const s of this.slots.values()) if (s.state === 'up') this.selector.noteConnectResult(s.server.id, true, now);
    const desired = this.selector.pickRegions(this.k).map((c) => ({ regionId: c.regionId, server: c.server }));
    const pr = this.opts.peerRegion;
    if (pr && !desired.some((d) => d.regionId === pr)) {
      const region = this.selector.map.regions[pr];
      const server = this.tryServer(pr) ?? region?.nodes.find((n) => n.canRelay);
      if (server) desired.push({ regionId: pr, server });
    }
    for (const d of desired) if (!this.slots.has(d.regionId)) this.open(d.server);
    const want = new Set(desired.map((d) => d.regionId));
    const upWanted = [...this.slots.values()].filter((s) => s.state === 'up' && want.has(s.regionId)).length;
    if (upWanted >= Math.min(this.k, want.size) && want.size > 0) {
      for (const s of [...this.slots.values()]) {
        if (s.state === 'up' && !want.has(s.regionId) && s.regionId !== pr && this.upCount() > this.k) this.drop(s, 'no longer among the best regions');
      }
    }
    this.updateHome();
    const active = [...this.slots.values()].filter((s) => s.state !== 'down').length;
    if (active < this.k) this.scheduleRetry();
    if (this.slots.size === 0 && this.startWaiter) {
      const why = this.selector
        .rank()
        .slice(0, 8)
        .map((c) => `${c.node}: ${c.reason}`)
        .join('; ');
      this.settleStart(new NoHealthyServerError(`no region could be connected${why ? ` (${why})` : ''}`, { context: { k: this.k } }));
    }
  }

  private tryServer(regionId: number): DERPServer | undefined {
    try {
      return this.selector.selectServer(regionId);
    } catch (err) {
      if (err instanceof NoHealthyServerError) return undefined;
      throw err;
    }
  }

  private upCount(): number {
    return [...this.slots.values()].filter((s) => s.state === 'up').length;
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.closed) return;
      // Regions whose last connect failed get another chance, best latency first.
      const active = [...this.slots.values()].filter((s) => s.state !== 'down').length;
      let room = this.k - active;
      const tried = new Set<number>();
      for (const c of this.selector.rank()) {
        if (room <= 0) break;
        if (this.slots.has(c.regionId) || tried.has(c.regionId) || c.latencyMs === null || !c.reason.startsWith('last DERP connect failed')) continue;
        tried.add(c.regionId);
        this.open(c.server);
        room--;
      }
      this.reconcile();
    }, this.opts.retryMs ?? DEFAULT_REGION_RETRY_MS);
  }

  private updateHome(): void {
    const sel = this.selector.homeRegion();
    const selUp = this.slots.get(sel.regionId)?.state === 'up';
    let next = this.home;
    let reason = sel.reason;
    if (selUp) next = sel.regionId;
    else if (this.slots.get(this.home)?.state !== 'up') {
      const first = this.orderedUpExcludingHome()[0];
      next = first?.regionId ?? 0;
      reason = first ? 'best region that is up' : 'no region is up';
    }
    if (next === this.home) return;
    const from = this.home;
    this.slots.get(from)?.client.notePreferred(false);
    this.home = next;
    this.slots.get(next)?.client.notePreferred(true);
    this.logger.log('info', 'home region changed', { from, to: next, reason });
    this.emit('homeChanged', { from, to: next, reason });
  }

  private orderedUpExcludingHome(): Slot[] {
    return this.orderedUp().filter((s) => s.regionId !== this.home);
  }

  private open(server: DERPServer): void {
    const regionId = server.regionCode;
    const region = this.selector.map.regions[regionId]!;
    const client = new DERPClient({ ...this.opts.clientOptions, privateKey: this.key, logger: this.logger });
    const slot: Slot = { regionId, regionCode: region.regionCode, server, client, state: 'connecting', unconfirmed: new Map() };
    this.slots.set(regionId, slot);
    const base = { regionId, regionCode: region.regionCode, node: server.id };
    client.on('connected', (e) => {
      if (this.slots.get(regionId) !== slot) return;
      slot.state = 'up';
      this.selector.noteConnectResult(server.id, true, this.now());
      this.selector.noteActivity(regionId, this.now());
      client.notePreferred(regionId === this.home);
      this.logger.log('info', 'region up', { ...base, url: e.url });
      this.reconcile();
      this.emit('regionUp', { ...base, url: e.url, home: regionId === this.home, reconnected: e.reconnected });
      if (!this.home) this.updateHome();
      this.settleStart();
      this.flushHeld();
    });
    client.on('disconnected', (e) => {
      if (this.closed || this.slots.get(regionId) !== slot || slot.state !== 'up') return;
      slot.state = 'down';
      this.selector.noteConnectResult(server.id, false, this.now(), e.reason);
      for (const [peer, ps] of this.peers) {
        if (ps.region === regionId) this.setPeerRegion(peer, ps, 0, 'region-down');
      }
      if (!e.willReconnect) this.remove(slot);
      this.logger.log('warn', 'region down', { ...base, reason: e.reason });
      this.emit('regionDown', { ...base, reason: e.reason, retrying: e.willReconnect });
      this.reconcile();
    });
    client.on('error', (err) => {
      // A failed reconnect attempt: keeps the node marked unhealthy while it stays down.
      this.selector.noteConnectResult(server.id, false, this.now(), describeError(err));
    });
    client.on('peerGone', (e) => this.onPeerGone(slot, e));
    client.connect(server, this.stop$.signal).then(
      () => this.pump(slot),
      (err: unknown) => {
        if (this.slots.get(regionId) !== slot) return;
        const reason = describeError(err);
        this.selector.noteConnectResult(server.id, false, this.now(), reason);
        this.remove(slot);
        this.logger.log('warn', 'region connect failed', { ...base, reason });
        if (!this.closed) this.emit('regionDown', { ...base, reason, retrying: false });
        this.reconcile();
      },
    );
  }

  private pump(slot: Slot): void {
    void (async () => {
      for await (const pkt of slot.client.receive()) {
        this.selector.noteActivity(slot.regionId, this.now());
        const ps = this.peers.get(pkt.srcText);
        if (ps) {
          ps.absent.delete(slot.regionId);
          slot.unconfirmed.get(pkt.srcText)?.drain();
          if (ps.region !== slot.regionId && this.opts.peerRegion === undefined) this.setPeerRegion(pkt.srcText, ps, slot.regionId, 'received');
        } else {
          this.peers.set(pkt.srcText, { key: Buffer.from(pkt.src), region: slot.regionId, absent: new Map() });
          this.emit('peerRegion', { peer: pkt.srcText, regionId: slot.regionId, why: 'received' });
        }
        this.recv.push({ ...pkt, regionId: slot.regionId });
      }
    })().catch((err: unknown) => this.logger.log('warn', 'receive loop ended', { region: slot.regionId, reason: describeError(err) }));
  }

  private remove(slot: Slot): void {
    if (this.slots.get(slot.regionId) === slot) this.slots.delete(slot.regionId);
    void slot.client.disconnect();
  }

  private drop(slot: Slot, reason: string): void {
    this.remove(slot);
    for (const [peer, ps] of this.peers) if (ps.region === slot.regionId) this.setPeerRegion(peer, ps, 0, 'region-down');
    this.logger.log('info', 'region closed', { region: slot.regionId, reason });
    this.emit('regionDown', { regionId: slot.regionId, regionCode: slot.regionCode, node: slot.server.id, reason, retrying: false });
  }

  private setPeerRegion(peer: string, ps: PeerState, regionId: number, why: PeerRegionEvent['why']): void {
    if (ps.region === regionId) return;
    ps.region = regionId;
    this.emit('peerRegion', { peer, regionId, why });
  }

  private onPeerGone(slot: Slot, e: PeerGoneEvent): void {
    const ps = this.peerState(e.peerKey);
    ps.absent.set(slot.regionId, this.now() + (this.opts.peerAbsentTtlMs ?? DEFAULT_PEER_ABSENT_TTL_MS));
    this.emit('peerGone', { peer: e.peer, regionId: slot.regionId, reason: e.reasonText });
    const resend = slot.unconfirmed.get(e.peer)?.drain() ?? [];
    if (ps.region === slot.regionId || ps.region === 0) this.setPeerRegion(e.peer, ps, 0, 'peer-gone');
    // NotHere: the relay dropped what we sent there since the peer was last heard; try the next region.
    if (e.reasonText === 'not-here') for (const data of resend) this.sendNow(e.peer, ps, data);
  }

  private peerState(key: Buffer): PeerState {
    const text = formatNodePublic(key);
    let ps = this.peers.get(text);
    if (!ps) {
      ps = { key: Buffer.from(key), region: 0, absent: new Map() };
      this.peers.set(text, ps);
    }
    return ps;
  }

  /** The slot to send to this peer through, or undefined to hold the packet. */
  private route(peer: string, ps: PeerState): Slot | undefined {
    const now = this.now();
    for (const [r, until] of ps.absent) if (until <= now) ps.absent.delete(r);
    const pr = this.opts.peerRegion;
    if (pr) {
      const s = this.slots.get(pr);
      if (s?.state === 'up') {
        if (ps.region !== pr) this.setPeerRegion(peer, ps, pr, 'configured');
        return s;
      }
    }
    const cur = this.slots.get(ps.region);
    if (cur?.state === 'up' && !ps.absent.has(ps.region)) return cur;
    const up = this.orderedUp();
    const next = up.find((s) => !ps.absent.has(s.regionId));
    if (next) {
      this.setPeerRegion(peer, ps, next.regionId, next.regionId === this.home && ps.absent.size === 0 ? 'home' : 'next-region');
      return next;
    }
    // Every open region said the peer is absent: wait for a region that is still connecting, else retry the stalest "absent".
    if ([...this.slots.values()].some((s) => s.state === 'connecting')) return undefined;
    const oldest = up.sort((a, b) => ps.absent.get(a.regionId)! - ps.absent.get(b.regionId)!)[0];
    if (oldest) this.setPeerRegion(peer, ps, oldest.regionId, 'next-region');
    return oldest;
  }

  private sendNow(peer: string, ps: PeerState, data: Buffer): Promise<void> | undefined {
    const slot = this.route(peer, ps);
    if (!slot) {
      this.held.push({ peer, data });
      return undefined;
    }
    let ring = slot.unconfirmed.get(peer);
    if (!ring) {
      ring = new BoundedQueue(this.heldLimit);
      slot.unconfirmed.set(peer, ring);
    }
    ring.push(data);
    return slot.client.send(ps.key, data).catch((err: unknown) => {
      // Best effort like UDP: the packet is lost; surface why.
      const e = err instanceof DerpError ? err : new ClosedError(describeError(err), { cause: err });
      this.logger.log('warn', 'send failed', { region: slot.regionId, reason: describeError(e) });
      if (this.listenerCount('error') > 0) this.emit('error', e);
    });
  }

  private flushHeld(): void {
    const items = this.held.drain();
    if (items.length === 0) return;
    let regionId = 0;
    for (const { peer, data } of items) {
      const ps = this.peers.get(peer)!;
      this.sendNow(peer, ps, data);
      regionId = ps.region;
    }
    this.emit('flushed', { count: items.length, regionId });
  }

  /** Sends one packet to a peer through its best region; held (bounded) while no region can take it. */
  async send(dst: Buffer | Uint8Array | string, data: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (this.closed) throw new ClosedError('multi-region client closed');
    signal?.throwIfAborted();
    const key = typeof dst === 'string' ? parseNodePublic(dst) : Buffer.from(dst.buffer, dst.byteOffset, dst.byteLength);
    if (key.length !== KEY_LEN) throw new ClosedError(`destination key must be ${KEY_LEN} bytes`);
    const ps = this.peerState(key);
    await this.sendNow(formatNodePublic(key), ps, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  /** Packets from every region, in arrival order, tagged with the region. Ends on close(). */
  receive(signal?: AbortSignal): AsyncIterableIterator<MultiReceivedPacket> {
    return this.recv.iterate(signal);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stop$.abort(new ClosedError('multi-region client closed'));
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.measureTimer) clearTimeout(this.measureTimer);
    this.settleStart(new ClosedError('closed before any region came up'));
    const slots = [...this.slots.values()];
    this.slots.clear();
    await Promise.all(slots.map((s) => s.client.disconnect()));
    this.held.drain();
    this.recv.end();
  }
}
