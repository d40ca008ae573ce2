/**
 * One mesh link (spec §10.2–10.3): a DERP client connection to another node of the region with this
 * node's key and the mesh key, which sends WatchConns, turns the PeerPresent / PeerGone it hears into
 * the relay's forwarding table, and carries ForwardPacket for keys held there. Everything learned from
 * the link is forgotten the moment it drops and learned again on reconnect (derphttp/mesh_client.go).
 */
import { DERPClient, backoffDelay, reconnectPolicy, type ClientTlsOptions, type DisconnectedEvent, type PeerGoneEvent, type PeerPresentEvent, type ReconnectPolicy } from '../client/index.js';
import { describeError, type DerpError } from '../errors.js';
import { formatNodePublic, type NodePrivateKey } from '../protocol/keys.js';
import type { PacketForwarder } from '../server/index.js';
import type { Logger } from '../util/logger.js';
import { MESH_PING_INTERVAL_MS, MESH_READ_TIMEOUT_MS } from './constants.js';
import { endpointId } from './discovery.js';
import type { MeshEndpoint } from './types.js';

/** What a link needs of the relay: its forwarding table. */
export interface MeshRelay {
  addForwarder(key: Buffer, f: PacketForwarder): void;
  removeForwarder(key: Buffer, f: PacketForwarder): void;
}

export type MeshLinkState = 'connecting' | 'up' | 'down' | 'self' | 'stopped';

export interface MeshLinkInit {
  endpoint: MeshEndpoint;
  relay: MeshRelay;
  /** The key this link connects with: the node's own server key (derper), or a worker's link key. */
  privateKey: NodePrivateKey;
  /** This node's server key: a peer that presents it is this node itself (then the link stops). */
  serverPublicKey: Buffer;
  /** False for links between workers of one host (they share one server key). Default true. */
  detectSelf?: boolean;
  /** A link to another worker of this host (PacketForwarder.sibling). Default false. */
  sibling?: boolean;
  /** Called each time the link comes up (its first PeerPresent after a connect). */
  onUp?: () => void;
  meshKey: Buffer;
  /** https (default) or plain http (dev nodes, loopback links between workers). */
  secure: boolean;
  tls?: Omit<ClientTlsOptions, 'serverName'>;
  /** ForwardPacket is dropped (counted) while more than this many bytes wait for the link's socket. */
  maxBufferedBytes: number;
  reconnect: Partial<ReconnectPolicy>;
  /** Ping period while up, and the silence after which the link is dropped (default MESH_PING_INTERVAL_MS / MESH_READ_TIMEOUT_MS). */
  liveness?: { pingIntervalMs: number; readTimeoutMs: number };
  logger: Logger;
}

export interface MeshLinkStatus {
  id: string;
  host: string;
  state: MeshLinkState;
  /** The peer's server key once connected ("nodekey:…"). */
  serverKey: string | null;
  /** Keys the peer reported connected to it, right now. */
  keys: number;
  connects: number;
  /** Packets written to the link, and those dropped because it was down or backlogged. */
  forwarded: number;
  forwardDrops: number;
  /** Times the peer closed the link after WatchConns before reporting anything: it refused our mesh key. */
  refusals: number;
  /** Why the link is down, while it is. */
  lastError: string | null;
}

export class MeshLink implements PacketForwarder {
  readonly name: string;
  readonly sibling: boolean;
  private readonly client: DERPClient;
  private readonly learned = new Set<string>();
  private readonly ownKey: string;
  private stateNow: MeshLinkState = 'connecting';
  private peerKey: Buffer | null = null;
  /** WatchConns sent and nothing heard yet (a close now means the peer refused our mesh key). */
  private awaitingFlood = false;
  private counters = { connects: 0, forwarded: 0, forwardDrops: 0, refusals: 0 };
  private lastError: string | null = null;
  private pingTimer: NodeJS.Timeout | null = null;

  constructor(private readonly init: MeshLinkInit) {
    const ep = init.endpoint;
    this.name = `${ep.host} (${ep.id})`;
    this.sibling = init.sibling ?? false;
    this.ownKey = init.privateKey.publicKey.toString('latin1');
    this.client = new DERPClient({
      privateKey: init.privateKey,
      meshKey: init.meshKey,
      canAckPings: true,
      tls: { ...init.tls, serverName: ep.host },
      proxy: false,
      reconnect: init.reconnect,
      // The link reads no packets of its own; a few are kept so nothing piles up.
      receiveQueueLimit: 16,
      readTimeoutMs: init.liveness?.readTimeoutMs ?? MESH_READ_TIMEOUT_MS,
      appName: 'derp-mesh',
    });
    this.client.on('connected', (e) => this.onConnected(e.serverKey));
    this.client.on('disconnected', (e) => this.onDisconnected(e));
    this.client.on('peerPresent', (e) => this.onPresent(e));
    this.client.on('peerGone', (e) => this.onGone(e));
    this.client.on('error', (e) => this.noteError(e));
  }

  get state(): MeshLinkState {
    return this.stateNow;
  }

  /** Connects (and keeps reconnecting with backoff); resolves once the first attempt ended, either way. */
  async start(): Promise<void> {
    const ep = this.init.endpoint;
    const url = `${this.init.secure ? 'https' : 'http'}://${endpointId(ep.address, ep.port)}/derp`;
    try {
      await this.client.connect(url);
    } catch (err) {
      // The first attempt failed: keep trying on the same backoff as after a drop.
      this.noteError(err);
      this.init.logger.log('warn', 'mesh link could not connect; retrying', { peer: this.name, reason: describeError(err) });
      this.scheduleRetry();
    }
  }

  private retryTimer: NodeJS.Timeout | null = null;
  private attempt = 0;

  private scheduleRetry(): void {
    if (this.stateNow === 'stopped' || this.stateNow === 'self') return;
    this.stateNow = 'down';
    this.attempt++;
    const delay = backoffDelay(reconnectPolicy(this.init.reconnect), this.attempt);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.stateNow !== 'down') return;
      this.stateNow = 'connecting';
      void this.start();
    }, delay);
    this.retryTimer.unref();
  }

  private onConnected(serverKey: Buffer): void {
    this.attempt = 0;
    this.counters.connects++;
    this.lastError = null;
    this.peerKey = Buffer.from(serverKey);
    if ((this.init.detectSelf ?? true) && serverKey.equals(this.init.serverPublicKey)) {
      // derper's mesh client stops when the peer's key is its own: we dialed ourselves.
      this.stateNow = 'self';
      this.init.logger.log('info', 'mesh peer is this node itself; link stopped', { peer: this.name });
      void this.client.disconnect();
      return;
    }
    // Up only once the peer's flood shows it took us as a mesh peer (a wrong key connects, then is closed).
    this.stateNow = 'connecting';
    this.forgetAll();
    this.awaitingFlood = true;
    this.client.watchConnectionChanges();
    this.startPings();
  }

  /** Pongs keep the client's read timer fed; a peer that stops answering is dropped by that timer. */
  private startPings(): void {
    this.stopPings();
    const ms = this.init.liveness?.pingIntervalMs ?? MESH_PING_INTERVAL_MS;
    this.pingTimer = setInterval(() => {
      // A missing pong is not an error here: the read timeout decides.
      this.client.ping().catch(() => undefined);
    }, ms);
    this.pingTimer.unref();
  }

  private stopPings(): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  private onDisconnected(e: DisconnectedEvent): void {
    this.stopPings();
    const forgot = this.learned.size;
    this.forgetAll();
    if (this.stateNow === 'stopped' || this.stateNow === 'self') return;
    if (this.awaitingFlood) {
      // Our own connection is always in the peer's flood, so silence then a close is a refusal.
      this.counters.refusals++;
      this.lastError = 'the peer closed the link after WatchConns: it does not accept our mesh key';
      this.init.logger.log('error', 'mesh peer refused our mesh key (closed the link after WatchConns)', { peer: this.name });
    } else {
      this.lastError = e.reason;
      this.init.logger.log('warn', 'mesh link down; its keys are forgotten until it reconnects', { peer: this.name, keys: forgot, reason: e.reason });
    }
    this.awaitingFlood = false;
    this.stateNow = e.willReconnect ? 'connecting' : 'down';
    if (!e.willReconnect) this.scheduleRetry();
  }

  private onPresent(e: PeerPresentEvent): void {
    if (this.awaitingFlood) {
      this.awaitingFlood = false;
      if (this.stateNow === 'connecting') {
        this.stateNow = 'up';
        this.init.logger.log('info', 'mesh link up', { peer: this.name, server: this.peerKey === null ? undefined : formatNodePublic(this.peerKey) });
        this.init.onUp?.();
      }
    }
    if (this.stateNow !== 'up') return;
    const k = e.peerKey.toString('latin1');
    // Our own link connection is in the flood: packets for our key are not sent to the peer.
    if (k === this.ownKey || this.learned.has(k)) return;
    this.learned.add(k);
    this.init.relay.addForwarder(e.peerKey, this);
  }

  private onGone(e: PeerGoneEvent): void {
    const k = e.peerKey.toString('latin1');
    if (!this.learned.delete(k)) return;
    this.init.relay.removeForwarder(e.peerKey, this);
  }

  private forgetAll(): void {
    if (this.learned.size === 0) return;
    const keys = [...this.learned];
    this.learned.clear();
    for (const k of keys) this.init.relay.removeForwarder(Buffer.from(k, 'latin1'), this);
  }

  private noteError(err: unknown): void {
    this.lastError = describeError(err as DerpError);
  }

  forwardPacket(src: Buffer, buf: Buffer, dstOff: number, len: number): boolean {
    if (this.client.forwardPacket(src, buf, dstOff, len, this.init.maxBufferedBytes)) {
      this.counters.forwarded++;
      return true;
    }
    this.counters.forwardDrops++;
    return false;
  }

  /** Whether the peer reported `key` (for tests). */
  knows(key: Buffer): boolean {
    return this.learned.has(key.toString('latin1'));
  }

  status(): MeshLinkStatus {
    const ep = this.init.endpoint;
    return {
      id: ep.id,
      host: ep.host,
      state: this.stateNow,
      serverKey: this.peerKey === null ? null : formatNodePublic(this.peerKey),
      keys: this.learned.size,
      ...this.counters,
      lastError: this.stateNow === 'up' ? null : this.lastError,
    };
  }

  /** Closes the link and forgets everything it taught the relay. */
  async stop(): Promise<void> {
    const was = this.stateNow;
    this.stateNow = 'stopped';
    this.stopPings();
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.forgetAll();
    if (was !== 'self') await this.client.disconnect();
  }
}
