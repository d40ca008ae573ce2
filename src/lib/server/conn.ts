/**
 * One client connection on the relay: frame parsing straight off the socket, the handshake, and the
 * write side (a per-turn batch buffer plus Go-style bounded per-kind queues while the peer is slow).
 *
 * Memory matters here (tens of thousands of idle clients): no per-connection timers or preallocated
 * buffers, and raw sockets share module-level listener functions instead of per-connection closures.
 */
import type { Socket } from 'node:net';
import type { WebSocket, RawData } from 'ws';
import { describeError, HandshakeError } from '../errors.js';
import {
  FRAME_HEADER_LEN,
  FrameType,
  KEY_LEN,
  MAX_CLIENT_INFO_LEN,
  MAX_PACKET_SIZE,
  MAX_PING_LEN,
  MIN_CLIENT_INFO_LEN,
  PEER_GONE_NOT_HERE_BURST,
  PEER_GONE_NOT_HERE_RATE_PER_SEC,
  PING_LEN,
  PeerGoneReason,
  frameTypeName,
  isKnownFrameType,
} from '../protocol/constants.js';
import { encode } from '../protocol/frames.js';
import type { ClientInfo } from '../protocol/handshake.js';
import { formatNodePublic, shortKey } from '../protocol/keys.js';
import type { LogFields, LogLevel } from '../util/logger.js';
import { isPooled, releaseBatch, takeBatch } from './bufpool.js';
import { acceptClientInfo, acceptOpened, serverInfoForPayload, type AcceptedClient, type OpenedClientInfo } from './handshake.js';
import type { AdmitDecision, PacketForwarder } from './hooks.js';
import type { ByteRate } from './limits.js';
import { readIntoSharedBuffer } from './readbuf.js';
import { ADMISSION_HOLD_BYTES, BATCH_INITIAL_BYTES, HALF_CLOSE_LINGER_MS, BATCH_MAX_HINT_BYTES, CONTROL_QUEUE_MAX, READ_YIELD_BYTES, READ_YIELD_FRAMES, WRITE_BLOCK_THRESHOLD, WS_CLOSE_GOING_AWAY, WS_CLOSE_UNSUPPORTED_DATA } from './constants.js';
import type { Hub } from './hub.js';
import type { HandshakeResult } from './observer.js';
import type { DropReason } from './stats.js';

export type Transport = 'derp' | 'websocket';

/** What `RelayServer.acceptClient()` yields for each registered connection. */
export interface ClientConnInfo {
  key: Buffer;
  keyText: string;
  /** The client's address: the TCP peer's, or from X-Forwarded-For when that peer is a trusted proxy. */
  remoteAddress: string;
  /** The TCP peer's port; 0 when the address came from X-Forwarded-For (a proxy does not say). */
  remotePort: number;
  /** The trusted proxy the connection came through (only when `remoteAddress` came from X-Forwarded-For). */
  proxyAddress?: string;
  proxyPort?: number;
  transport: Transport;
  tls: boolean;
  info: ClientInfo;
}

const enum State {
  Handshake,
  Active,
  Closed,
}

// onHeader results.
const HANDLE = 0;
const SKIP = 1;
const CLOSED = 2;
/** Reading is paused (admission pending): the header goes back in front of the held bytes. */
const HOLD = 3;

const RECV_HEADER_LEN = FRAME_HEADER_LEN + KEY_LEN;
const PONG_FRAME_LEN = FRAME_HEADER_LEN + PING_LEN;
const PING_FRAME_LEN = PONG_FRAME_LEN;
const KEEPALIVE_FRAME = encode.keepAlive();
const EMPTY = Buffer.alloc(0);
const WS_SEND_OPTS = { binary: true } as const;

/** A connection whose client address a trusted proxy reported (X-Forwarded-For). */
export interface Forwarded {
  address: string;
  proxyAddress: string;
  proxyPort: number;
}

/** looksLikeDisco on a region of a buffer without slicing it ("TS💬", ≥ 62 bytes; disco/disco.go). */
function isDiscoAt(b: Buffer, off: number, len: number): boolean {
  return len >= 62 && b[off] === 0x54 && b[off + 1] === 0x53 && b[off + 2] === 0xf0 && b[off + 3] === 0x9f && b[off + 4] === 0x92 && b[off + 5] === 0xac;
}

/** a[0, n) equals b[off, off + n) (the route caches' key compare; no slicing). */
function eqAt(a: Buffer, b: Buffer, off: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[i] !== b[off + i]) return false;
  return true;
}

const CONN = Symbol('derp.conn');
type ConnSocket = Socket & { [CONN]?: ClientConn };

// Shared listeners: `this` is the socket, the connection hangs off it.
function onSockData(this: ConnSocket, chunk: Buffer): void {
  const c = this[CONN]!;
  c.onData(chunk, chunk.length);
  c.noteRead(chunk.length);
}
function onSockSharedRead(this: ConnSocket, nread: number, buf: Buffer): void {
  const c = this[CONN]!;
  c.onData(buf, nread);
  c.noteRead(nread);
}
function onSockEnd(this: ConnSocket): void {
  this[CONN]!.onEnd();
}
function onSockError(this: ConnSocket, err: Error): void {
  this[CONN]!.onTransportError(err);
}
function onSockClose(this: ConnSocket): void {
  this[CONN]!.onTransportClosed();
}
function onSockDrain(this: ConnSocket): void {
  this[CONN]!.onWritable();
}
function onSockLingerTimeout(this: Socket): void {
  this.destroy();
}
/** The rate-limit timer (one per throttled connection, no closure). */
function onRateTimer(c: ClientConn): void {
  c.onRateTimer();
}
/** The end of a read yield (setImmediate, no closure). */
function onYieldEnd(c: ClientConn): void {
  c.resumeTransport();
}
/** The end of a packet-count yield: the held frames are replayed (setImmediate, no closure). */
function onFrameYieldEnd(c: ClientConn): void {
  c.endFrameYield();
}

function isThenable<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

export class ClientConn {
  // Identity (set by the handshake).
  key: Buffer | null = null;
  keyStr = '';
  info: ClientInfo | null = null;
  /** Authenticated with the region's mesh key (spec §10.1): exempt from admission and limits, may forward. */
  mesh = false;
  /** A mesh peer that sent WatchConns (the hub streams PeerPresent / PeerGone to it). */
  watching = false;
  /** Came in on the private listener for the host's other workers (RelayServer meshListen). */
  sibling = false;
  isDup = false;
  preferred = false;
  /** Keys (latin1) whose sentTo map points at this connection; the hub prunes them when it closes. */
  sentFrom: Set<string> | null = null;
  state = State.Handshake;
  /** Handshake deadline, then next keepalive time (ms since epoch). */
  deadline = 0;
  /** The hub's keepalive wheel slot (DueWheel), -1 when in none. */
  wheelSlot = -1;
  private keepAliveMs = 0;
  connectedAt = 0;
  /** performance.now() at the accept (handshake duration). */
  acceptedAt = 0;

  // Server pings (RTT): next due time (ms since epoch, 0 = never), the outstanding one's sequence and send time.
  private pingAt = 0;
  private pingIntervalMs = 0;
  private pingSeq = 0;
  private pingSentAt = 0;

  // Reader.
  private hdr: Buffer | null = null;
  private hdrLen = 0;
  private body: Buffer | null = null;
  private bodyLen = 0;
  private bodyType = 0;
  private skip = 0;

  // Writer.
  private batch: Buffer | null = null;
  private used = 0;
  /** Capacity for the next batch: 0 = exactly what the first frame needs (idle clients hold no big buffer), else a pooled batch at least this big. */
  private batchHint = 0;
  // Packets in this turn's batch, counted as sent only once the batch reaches the transport (dropped if it never does).
  private batchPkts = 0;
  private batchBytes = 0;
  private batchDiscoPkts = 0;
  private batchDiscoBytes = 0;
  dirty = false;
  blocked = false;
  blockedSince = 0;
  private qDisco: Buffer[] | null = null;
  private qOther: Buffer[] | null = null;
  private ctrlQ: Buffer[] | null = null;
  private pongPending = false;

  // One-entry destination cache, valid while hub.gen is unchanged.
  private cacheKey: Buffer | null = null;
  private cacheConn: ClientConn | null = null;
  /** Set instead of cacheConn when the last destination is reached through a mesh link. */
  private cacheFwd: PacketForwarder | null = null;
  private cacheGen = -1;
  // Mesh peers: the last ForwardPacket's (src ‖ dst) and its local destination, valid while hub.gen is unchanged.
  private fwdPair: Buffer | null = null;
  private fwdConn: ClientConn | null = null;
  private fwdGen = -1;

  // NotHere rate limiter (token bucket, lazily started).
  private notHereTokens = 0;
  private notHereAt = 0;

  /** An admission decision is pending (reading paused; still counted as a pending handshake). */
  admitting = false;
  /** ClientInfo is being opened on the crypto thread (reading paused, as while admitting). */
  private opening = false;
  /** The thread's answer, waiting for a handshake turn (resumeHandshake). */
  private opened: OpenedClientInfo | HandshakeError | null = null;
  // Reading paused (admission, rate limit): bytes already read wait here, copied, and are replayed on resume.
  private readPaused = false;
  /** The transport itself is paused too (rate limit at once; admission once ADMISSION_HOLD_BYTES are held). */
  private transportPaused = false;
  /** Bytes read since this connection last yielded the event loop (noteRead). */
  private readSinceYield = 0;
  /** Packet frames taken in the turn `frameTurn` (hub.turn), against READ_YIELD_FRAMES. */
  private framesThisTurn = 0;
  private frameTurn = -1;
  /** A packet-count yield is waiting for its turn (onFrameYieldEnd). */
  private frameYieldPending = false;
  private held: Buffer | null = null;
  /** The held buffer being replayed (ours, not the shared read buffer), while resumeReading runs it. */
  private replaying: Buffer | null = null;
  // Client rate limit (spec §9): bytes/s (0 = unlimited), burst, tokens (negative = debt), last refill (performance.now()).
  private rateBps = 0;
  private rateBurst = 0;
  private tokens = 0;
  private tokensAt = 0;
  /** The held frame header was already charged (replayed after a rate wait). */
  private prepaid = false;
  private rateTimer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly hub: Hub,
    private readonly sock: ConnSocket | null,
    private readonly ws: WebSocket | null,
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly tls: boolean,
    /** The trusted proxy's address and port when `remoteAddress` came from X-Forwarded-For, else null. */
    readonly proxy: { address: string; port: number } | null,
  ) {}

  get transport(): Transport {
    return this.ws === null ? 'derp' : 'websocket';
  }

  get active(): boolean {
    return this.state === State.Active;
  }

  get closed(): boolean {
    return this.state === State.Closed;
  }

  /** The peer is the TCP peer, or the client a trusted proxy named (its port unknown). */
  private static create(hub: Hub, sock: Socket | null, ws: WebSocket | null, address: string, port: number, tls: boolean, fwd: Forwarded | undefined): ClientConn {
    return fwd === undefined
      ? new ClientConn(hub, sock, ws, address, port, tls, null)
      : new ClientConn(hub, sock, ws, fwd.address, 0, tls, { address: fwd.proxyAddress, port: fwd.proxyPort });
  }

  /** A raw DERP connection on an upgraded (or fast-started) socket; `greeting` is written first. */
  static fromSocket(hub: Hub, sock: Socket, tls: boolean, greeting: Buffer, head: Buffer, fwd?: Forwarded): ClientConn {
    const c = ClientConn.create(hub, sock, null, sock.remoteAddress ?? '', sock.remotePort ?? 0, tls, fwd);
    const s = sock as ConnSocket;
    s[CONN] = c;
    sock.setNoDelay(true);
    if (!readIntoSharedBuffer(sock, onSockSharedRead)) sock.on('data', onSockData);
    sock.on('end', onSockEnd);
    sock.on('error', onSockError);
    sock.on('close', onSockClose);
    sock.on('drain', onSockDrain);
    hub.addPending(c);
    sock.write(greeting);
    if (head.length > 0) c.onData(head, head.length);
    return c;
  }

  /** A DERP connection carried in binary WebSocket messages (spec §3.6). */
  static fromWebSocket(hub: Hub, ws: WebSocket, remoteAddress: string, remotePort: number, tls: boolean, serverKeyFrame: Buffer, fwd?: Forwarded): ClientConn {
    const c = ClientConn.create(hub, null, ws, remoteAddress, remotePort, tls, fwd);
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (!isBinary) {
        c.fail('text WebSocket message (DERP needs binary messages)', WS_CLOSE_UNSUPPORTED_DATA);
        return;
      }
      const b = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      c.onData(b, b.length);
      c.noteRead(b.length);
    });
    // ws reports a malformed frame (bad opcode, mask, length, UTF-8…) as an error with a WS_ERR_ code: a violation, counted.
    ws.on('error', (err: Error & { code?: string }) => {
      if (err.code?.startsWith('WS_ERR_') === true) c.fail(`WebSocket protocol error: ${err.message}`);
      else c.onTransportError(err);
    });
    ws.on('close', () => c.onTransportClosed());
    hub.addPending(c);
    c.writeOut(serverKeyFrame);
    return c;
  }

  // ---------------------------------------------------------------- reading

  /**
   * The first `n` bytes of `chunk`. Raw sockets pass the shared read buffer (readbuf.ts): nothing here
   * may keep a view of `chunk` past this call (partial frames are copied, packets are copied out).
   */
  onData(chunk: Buffer, n: number): void {
    let off = 0;
    // A WebSocket closing gracefully still delivers what it had parsed: nothing to do with it.
    if (this.state === State.Closed) return;
    if (this.readPaused) {
      // In flight when the transport was paused (a WebSocket's parsed messages, say).
      this.hold(chunk, 0, n);
      return;
    }
    const turn = this.hub.turn();
    if (turn !== this.frameTurn) {
      this.frameTurn = turn;
      this.framesThisTurn = 0;
    }
    while (off < n) {
      if ((this.state as State) === State.Closed) return;
      if (this.skip > 0) {
        const k = Math.min(this.skip, n - off);
        this.skip -= k;
        off += k;
        continue;
      }
      const body = this.body;
      if (body !== null) {
        const k = Math.min(body.length - this.bodyLen, n - off);
        chunk.copy(body, this.bodyLen, off, off + k);
        this.bodyLen += k;
        off += k;
        if (this.bodyLen === body.length) {
          this.body = null;
          this.onFrame(this.bodyType, body, 0, body.length);
        }
        continue;
      }
      let type: number;
      let len: number;
      if (this.hdrLen === 0 && n - off >= FRAME_HEADER_LEN) {
        type = chunk[off]!;
        len = chunk.readUInt32BE(off + 1);
        off += FRAME_HEADER_LEN;
      } else {
        // Not from the pool: kept for the connection's life, a pool slice would pin a 64 KiB slab.
        const hdr = (this.hdr ??= Buffer.allocUnsafeSlow(FRAME_HEADER_LEN));
        const k = Math.min(FRAME_HEADER_LEN - this.hdrLen, n - off);
        chunk.copy(hdr, this.hdrLen, off, off + k);
        this.hdrLen += k;
        off += k;
        if (this.hdrLen < FRAME_HEADER_LEN) return;
        this.hdrLen = 0;
        this.hdr = null;
        type = hdr[0]!;
        len = hdr.readUInt32BE(1);
      }
      const act = this.onHeader(type, len);
      if (act >= CLOSED) {
        if (act === HOLD) this.holdFrame(type, len, chunk, off, n);
        return;
      }
      // Before the payload is read (spec §9): a client in debt waits, and TCP pushes back on it.
      if (this.rateBps !== 0 && this.waitForTokens(type, len, chunk, off, n)) return;
      if (act === SKIP) {
        this.skip = len;
        continue;
      }
      if (len === 0) this.onFrame(type, EMPTY, 0, 0);
      else if (n - off >= len) {
        this.onFrame(type, chunk, off, len);
        off += len;
      } else {
        this.body = Buffer.allocUnsafe(len);
        this.bodyLen = 0;
        this.bodyType = type;
      }
    }
  }

  /** Size and permission rules, applied before any payload is buffered (spec §4, §5.1). */
  private onHeader(type: number, len: number): number {
    if (this.state === State.Handshake) {
      if (this.admitting || this.opening) return HOLD;
      if (type !== FrameType.ClientInfo) return this.fail(`first frame is ${frameTypeName(type)}, not ClientInfo`, undefined, 'rejected');
      if (len < MIN_CLIENT_INFO_LEN || len > MAX_CLIENT_INFO_LEN) {
        return this.fail(`ClientInfo frame of ${len} bytes is outside ${MIN_CLIENT_INFO_LEN}..${MAX_CLIENT_INFO_LEN}`, undefined, 'rejected');
      }
      // With the crypto thread, posting a frame there is cheap: its turn is taken when the answer is finished.
      if (this.hub.cryptoThread === null && !this.hub.takeHandshakeTurn()) {
        // Enough handshakes this turn: the frame waits, held, for a later one (hub.nextHandshakeTurn).
        this.pauseReading(true);
        this.hub.deferHandshake(this);
        return HOLD;
      }
      return HANDLE;
    }
    switch (type) {
      case FrameType.SendPacket:
        if (len < KEY_LEN) return this.fail(`short SendPacket frame of ${len} bytes`);
        if (len > KEY_LEN + MAX_PACKET_SIZE) return this.fail(`SendPacket frame of ${len} bytes exceeds ${KEY_LEN + MAX_PACKET_SIZE}`);
        return ++this.framesThisTurn > READ_YIELD_FRAMES ? this.yieldFrames() : HANDLE;
      case FrameType.NotePreferred:
        if (len !== 1) return this.fail(`NotePreferred frame of ${len} bytes (must be 1)`);
        return HANDLE;
      case FrameType.Ping:
        if (len < PING_LEN || len > MAX_PING_LEN) return this.fail(`Ping frame of ${len} bytes is outside ${PING_LEN}..${MAX_PING_LEN}`);
        return HANDLE;
      case FrameType.Pong:
        // Only an answer to our outstanding Ping is read; any other Pong is skipped as before.
        return this.pingSentAt !== 0 && len === PING_LEN ? HANDLE : SKIP;
      case FrameType.ForwardPacket:
        if (!this.mesh) return this.denyMesh(type);
        if (len < 2 * KEY_LEN) return this.fail(`short ForwardPacket frame of ${len} bytes`);
        if (len > 2 * KEY_LEN + MAX_PACKET_SIZE) return this.fail(`ForwardPacket frame of ${len} bytes exceeds ${2 * KEY_LEN + MAX_PACKET_SIZE}`);
        return ++this.framesThisTurn > READ_YIELD_FRAMES ? this.yieldFrames() : HANDLE;
      case FrameType.WatchConns:
        if (!this.mesh) return this.denyMesh(type);
        if (len !== 0) return this.fail(`WatchConns frame of ${len} bytes (must be empty)`);
        return HANDLE;
      case FrameType.ClosePeer:
        if (!this.mesh) return this.denyMesh(type);
        if (len !== KEY_LEN) return this.fail(`ClosePeer frame of ${len} bytes (must be ${KEY_LEN})`);
        return HANDLE;
      default:
        // Unknown types and frames only a server sends are read and discarded (derpserver.go: handleUnknownFrame).
        if (!isKnownFrameType(type)) this.hub.stats.unknownFrames++;
        return SKIP;
    }
  }

  /** A privileged frame from a client without the mesh key: that connection only is closed (spec §10.1). */
  private denyMesh(type: number): typeof CLOSED {
    this.hub.stats.meshPermissionDenied++;
    return this.fail(`insufficient permissions: ${frameTypeName(type)} from a client without the mesh key`);
  }

  private onFrame(type: number, buf: Buffer, off: number, len: number): void {
    if (this.state === State.Handshake) {
      // Timed only under a handshake share (hub.setHandshakeShare): what it spends is what it measured.
      const t0 = this.hub.handshakeShareOn ? performance.now() : -1;
      this.handleClientInfo(buf.subarray(off, off + len));
      if (t0 >= 0) this.hub.spendOnHandshake(performance.now() - t0);
      return;
    }
    if (this.isDup) this.hub.noteActivity(this);
    switch (type) {
      case FrameType.SendPacket:
        this.handleSendPacket(buf, off, len);
        return;
      case FrameType.NotePreferred:
        this.hub.setPreferred(this, buf[off] !== 0);
        return;
      case FrameType.Ping:
        this.handlePing(buf, off);
        return;
      case FrameType.Pong:
        this.handlePong(buf, off);
        return;
      case FrameType.ForwardPacket:
        this.handleForwardPacket(buf, off, len);
        return;
      case FrameType.WatchConns:
        this.hub.addWatcher(this);
        return;
      case FrameType.ClosePeer:
        this.hub.closePeer(buf.toString('latin1', off, off + KEY_LEN));
        return;
    }
  }

  private handleClientInfo(payload: Buffer): void {
    const hub = this.hub;
    const thread = hub.cryptoThread;
    if (thread !== null) {
      // Opened on the crypto thread; frames after ClientInfo wait, held, as for an admission decision.
      this.opening = true;
      hub.stats.handshakesOnThread++;
      this.pauseReading(false);
      thread.accept(payload, serverInfoForPayload(payload, hub.serverInfoFor), this.onClientInfoOpened);
      return;
    }
    let accepted: AcceptedClient;
    try {
      accepted = acceptClientInfo(hub.privateKey, payload, hub.serverInfoFor);
    } catch (err) {
      this.fail(`bad ClientInfo: ${describeError(err)}`, undefined, 'rejected');
      return;
    }
    this.admitClient(accepted);
  }

  private readonly onClientInfoOpened = (r: OpenedClientInfo | HandshakeError): void => {
    // Closed while the thread worked (the deadline, EOF, stop).
    if (!this.opening) return;
    // A batch of answers is finished HANDSHAKES_PER_TURN per turn, as inline ClientInfo frames are.
    if (!this.hub.takeHandshakeTurn()) {
      this.opened = r;
      this.hub.deferHandshake(this);
      return;
    }
    this.finishOpened(r);
  };

  /** The crypto thread's answer, in this connection's turn: its JSON parsed, then refused, or admitted and registered. */
  private finishOpened(r: OpenedClientInfo | HandshakeError): void {
    this.opening = false;
    const t0 = this.hub.handshakeShareOn ? performance.now() : -1;
    let accepted: AcceptedClient;
    try {
      if (r instanceof HandshakeError) throw r;
      accepted = acceptOpened(r);
    } catch (err) {
      this.fail(`bad ClientInfo: ${describeError(err)}`, undefined, 'rejected');
      return;
    }
    this.admitClient(accepted);
    if (t0 >= 0) this.hub.spendOnHandshake(performance.now() - t0);
    // Admitted: frames the client sent right after ClientInfo, in order (a pending admission resumes them itself).
    if (!this.admitting) this.resumeReading();
  }

  /** After ClientInfo opened: mesh key, bans and admission, then ServerInfo. */
  private admitClient(accepted: AcceptedClient): void {
    const hub = this.hub;
    this.key = accepted.clientKey;
    this.keyStr = accepted.clientKey.toString('latin1');
    this.info = accepted.info;
    if (accepted.info.meshKey !== undefined) {
      this.mesh = hub.isMeshKey(accepted.info.meshKey);
      if (!this.mesh) {
        // derper treats it as a plain client; we also count and log it (never the key itself).
        hub.stats.meshKeyMismatches++;
        hub.logger.log('warn', hub.meshEnabled ? 'ClientInfo carried a mesh key that is not ours' : 'ClientInfo carried a mesh key, but this node has none', { key: shortKey(this.key), remote: this.remoteText() });
      } else {
        // Mesh peers skip bans and admission (spec §10.1, §11).
        this.finishHandshake(accepted);
        return;
      }
    }
    if (hub.isBanned !== null && hub.banned(this.remoteAddress, this.key)) {
      this.refuse({ allow: false, source: 'ban', reason: 'banned' });
      return;
    }
    const admit = hub.admit;
    if (admit !== null) {
      // Spec §11: after ClientInfo, before ServerInfo (and before registering).
      let d: AdmitDecision | Promise<AdmitDecision>;
      try {
        d = admit({ key: this.key, keyText: formatNodePublic(this.key), remoteAddress: this.remoteAddress, mesh: this.mesh });
      } catch (err) {
        d = { allow: false, source: 'admission', reason: `admission check threw: ${describeError(err)}` };
      }
      if (isThenable(d)) {
        this.admitting = true;
        hub.stats.admissionPending++;
        // Bytes are held but the transport still reads, so a client that leaves is noticed at once.
        this.pauseReading(false);
        d.then(
          (x) => this.onAdmitDecision(x, accepted),
          (err: unknown) => this.onAdmitDecision({ allow: false, source: 'admission', reason: `admission check failed: ${describeError(err)}` }, accepted),
        );
        return;
      }
      if (!isAllow(d)) {
        this.refuse(d);
        return;
      }
      hub.stats.admissionAllowed++;
    }
    this.finishHandshake(accepted);
  }

  private onAdmitDecision(d: AdmitDecision, accepted: AcceptedClient): void {
    // Closed while pending (close() already settled the counters).
    if (!this.admitting) return;
    this.admitting = false;
    this.hub.stats.admissionPending--;
    if (!isAllow(d)) {
      this.refuse(d);
      return;
    }
    this.hub.stats.admissionAllowed++;
    this.finishHandshake(accepted);
    // Frames the client sent right after ClientInfo, in order.
    this.resumeReading();
  }

  /** Refused admission (or banned): closed without ServerInfo, as derper does (spec §11). */
  private refuse(d: AdmitDecision | null | undefined): void {
    const hub = this.hub;
    hub.stats.admissionRefused++;
    hub.noteHandshake(this, 'rejected');
    const source = typeof d?.source === 'string' ? d.source : 'admission';
    const reason = typeof d?.reason === 'string' ? d.reason : 'no valid decision';
    hub.logger.log('warn', 'client refused', { key: formatNodePublic(this.key!), remote: this.remoteText(), source, reason });
    hub.abuse('admission_refused', this.remoteAddress, this.key);
    this.close(`refused by ${source}: ${reason}`, 'debug');
  }

  private finishHandshake(accepted: AcceptedClient): void {
    this.state = State.Active;
    this.connectedAt = Date.now();
    this.keepAliveMs = this.hub.keepAliveIntervalMs();
    this.deadline = this.connectedAt + this.keepAliveMs;
    if (accepted.info.canAckPings) {
      this.pingIntervalMs = this.hub.pingIntervalMs(this.keepAliveMs);
      if (this.pingIntervalMs > 0) this.pingAt = this.connectedAt + this.pingIntervalMs;
    }
    this.applyRate(this.hub.limits.forKey(this.keyStr, this.mesh));
    this.hub.noteHandshake(this, 'ok');
    // derpserver.go: accept — register, then ServerInfo.
    this.hub.register(this);
    this.appendFrame(accepted.serverInfoFrame);
  }

  // ---------------------------------------------------------------- pausing and the rate limit

  /** Holds further bytes; `transport` also stops reading from the transport (TCP back-pressure). */
  private pauseReading(transport: boolean): void {
    this.readPaused = true;
    if (transport) this.pauseTransport();
  }

  private pauseTransport(): void {
    if (this.transportPaused) return;
    this.transportPaused = true;
    if (this.ws !== null) this.ws.pause();
    else this.sock!.pause();
  }

  /**
   * After each transport read. libuv reads one stream up to 32 times (64 KiB each) before it polls the
   * others, so one heavy sender could hold the event loop for tens of milliseconds (2 MiB of 64-byte
   * packets) while every other client's packets wait. Past READ_YIELD_BYTES since it last yielded, a
   * connection stops reading until the next turn; the bytes wait in the kernel, nothing is dropped.
   */
  noteRead(n: number): void {
    if ((this.readSinceYield += n) < READ_YIELD_BYTES || this.transportPaused || this.state === State.Closed) return;
    this.readSinceYield = 0;
    this.hub.stats.readYields++;
    this.pauseTransport();
    setImmediate(onYieldEnd, this);
  }

  /**
   * Past READ_YIELD_FRAMES packets in this turn: this frame and the rest of the read are held and
   * replayed in the next turn (noteRead's yield counts bytes; small packets reach this count first).
   */
  private yieldFrames(): number {
    this.hub.stats.readYields++;
    this.readSinceYield = 0;
    this.pauseReading(true);
    this.frameYieldPending = true;
    setImmediate(onFrameYieldEnd, this);
    return HOLD;
  }

  endFrameYield(): void {
    if (!this.frameYieldPending) return;
    this.frameYieldPending = false;
    this.resumeReading();
  }

  /** Lets the transport read again, unless reading is still paused (rate limit, admission: that resumes it) or closed. */
  resumeTransport(): void {
    if (this.readPaused || this.state === State.Closed || !this.transportPaused) return;
    this.transportPaused = false;
    if (this.ws !== null) this.ws.resume();
    else this.sock!.resume();
  }

  /** The hub gives a deferred ClientInfo its turn: replay it (a closed connection ignores this). */
  resumeHandshake(): void {
    const r = this.opened;
    if (r === null) {
      this.resumeReading();
      return;
    }
    // A closed connection takes no turn (close cleared `opened`; this is belt and braces).
    if (!this.opening) return;
    this.opened = null;
    this.onClientInfoOpened(r);
  }

  /** Replays what was held (which may pause again), then lets the transport read. */
  private resumeReading(): void {
    if (!this.readPaused || this.state === State.Closed) return;
    this.readPaused = false;
    const h = this.held;
    this.held = null;
    if (h !== null) {
      this.replaying = h;
      this.onData(h, h.length);
      this.replaying = null;
    }
    // The replay may have paused again or closed the connection.
    this.resumeTransport();
  }

  /** Keeps chunk[off, n) (copied: a raw socket's chunk is the shared read buffer) for the replay. */
  private hold(chunk: Buffer, off: number, n: number): void {
    if (off >= n) return;
    const h = this.held;
    const next = h === null ? Buffer.from(chunk.subarray(off, n)) : Buffer.concat([h, chunk.subarray(off, n)]);
    this.held = next;
    if (next.length > ADMISSION_HOLD_BYTES) this.pauseTransport();
  }

  /** A frame whose header was read but whose payload must wait: the header goes back in front. */
  private holdFrame(type: number, len: number, chunk: Buffer, off: number, n: number): void {
    const prev = this.held;
    // Paused again while replaying our own copy: its rest, header still in place, is kept as it is.
    // (Copying it each time cost a buffer of up to a read per pause: at a few MB/s, tens of MB/s of
    // garbage that kept the old generation collecting.)
    if (prev === null && chunk === this.replaying && off >= FRAME_HEADER_LEN && chunk[off - FRAME_HEADER_LEN] === type && chunk.readUInt32BE(off - FRAME_HEADER_LEN + 1) === len) {
      this.held = chunk.subarray(off - FRAME_HEADER_LEN, n);
      return;
    }
    const h = Buffer.allocUnsafe(FRAME_HEADER_LEN + (n - off) + (prev?.length ?? 0));
    h[0] = type;
    h.writeUInt32BE(len, 1);
    chunk.copy(h, FRAME_HEADER_LEN, off, n);
    if (prev !== null) prev.copy(h, FRAME_HEADER_LEN + (n - off));
    this.held = h;
  }

  /**
   * Charges one frame (its header included) to the bucket; true when that leaves the client in debt:
   * then reading pauses (one timer) until the debt is paid, and the frame is read after it.
   */
  private waitForTokens(type: number, len: number, chunk: Buffer, off: number, n: number): boolean {
    if (this.prepaid) {
      this.prepaid = false;
      return false;
    }
    this.refillTokens();
    this.tokens -= FRAME_HEADER_LEN + len;
    if (this.tokens >= 0) return false;
    this.prepaid = true;
    this.pauseReading(true);
    this.holdFrame(type, len, chunk, off, n);
    const st = this.hub.stats;
    st.rateLimitWaits++;
    st.rateLimitedConnections++;
    this.armRateTimer();
    return true;
  }

  /** Adds what the rate earned since the last refill, up to the burst. */
  private refillTokens(): void {
    const now = performance.now();
    this.tokens = Math.min(this.rateBurst, this.tokens + ((now - this.tokensAt) * this.rateBps) / 1000);
    this.tokensAt = now;
  }

  /** Wakes reading once the debt (negative tokens) is paid at the current rate. */
  private armRateTimer(): void {
    this.rateTimer = setTimeout(onRateTimer, Math.ceil((-this.tokens * 1000) / this.rateBps), this);
  }

  /** The debt is paid: read on. */
  onRateTimer(): void {
    if (this.rateTimer === null) return;
    this.rateTimer = null;
    this.hub.stats.rateLimitedConnections--;
    this.resumeReading();
  }

  /** Sets this connection's bucket (at registration and on setClientLimits); mesh peers get none. */
  applyRate(r: ByteRate): void {
    if (r.bytesPerSecond === this.rateBps && r.burstBytes === this.rateBurst) return;
    const wasLimited = this.rateBps !== 0;
    this.rateBps = r.bytesPerSecond;
    this.rateBurst = r.burstBytes;
    if (!wasLimited) {
      this.tokens = r.burstBytes;
      this.tokensAt = performance.now();
      this.prepaid = false;
    } else this.tokens = Math.min(this.tokens, r.burstBytes);
    if (this.rateTimer === null) return;
    // Waiting under the old rate: wait under the new one (or not at all).
    clearTimeout(this.rateTimer);
    if (this.rateBps === 0) {
      this.tokens = 0;
      this.onRateTimer();
      return;
    }
    this.refillTokens();
    if (this.tokens >= 0) this.onRateTimer();
    else this.armRateTimer();
  }

  /** The bucket in force ({0, 0} = unlimited), for tests and /debug. */
  get rateLimit(): ByteRate {
    return { bytesPerSecond: this.rateBps, burstBytes: this.rateBurst };
  }

  private handleSendPacket(buf: Buffer, off: number, len: number): void {
    const hub = this.hub;
    const st = hub.stats;
    const dataOff = off + KEY_LEN;
    const dataLen = len - KEY_LEN;
    st.packetsReceived++;
    st.bytesReceived += dataLen;
    const disco = isDiscoAt(buf, dataOff, dataLen);
    if (disco) st.packetsReceivedDisco++;
    else st.packetsReceivedOther++;
    let dst: ClientConn | null;
    if (this.cacheGen === hub.gen && this.cacheKey !== null && eqAt(this.cacheKey, buf, off, KEY_LEN)) {
      if (this.cacheFwd !== null) {
        hub.forwardVia(this.cacheFwd, this.key!, buf, off, dataLen, disco);
        return;
      }
      dst = this.cacheConn;
    } else {
      const dstStr = buf.toString('latin1', off, dataOff);
      dst = hub.lookup(dstStr);
      if (dst === null) {
        const f = hub.routeElsewhere(this, dstStr, buf, off, dataLen, disco);
        if (f !== null) this.cacheRoute(buf, off, null, f);
        return;
      }
      this.cacheRoute(buf, off, dst, null);
      // A destination this sender had not reached before: the abuse detectors' fan-out.
      if (hub.noteSentTo(this.keyStr, dstStr, dst)) hub.abuse('fanout', this.remoteAddress, this.key);
    }
    dst!.deliver(this.key!, buf, dataOff, dataLen, disco);
  }

  /** Remembers the route to the destination key at buf[off, +32) until hub.gen changes. */
  private cacheRoute(buf: Buffer, off: number, dst: ClientConn | null, fwd: PacketForwarder | null): void {
    // Once per connection, and not from the pool (kept for its life: see hdr).
    if (this.cacheKey === null) this.cacheKey = Buffer.allocUnsafeSlow(KEY_LEN);
    buf.copy(this.cacheKey, 0, off, off + KEY_LEN);
    this.cacheConn = dst;
    this.cacheFwd = fwd;
    this.cacheGen = this.hub.gen;
  }

  /** From a mesh peer: src(32) ‖ dst(32) ‖ data, delivered here or dropped, never forwarded again (spec §10.3). */
  private handleForwardPacket(buf: Buffer, off: number, len: number): void {
    const hub = this.hub;
    hub.stats.packetsForwardedIn++;
    const dstOff = off + KEY_LEN;
    const dataOff = dstOff + KEY_LEN;
    const dataLen = len - 2 * KEY_LEN;
    const disco = isDiscoAt(buf, dataOff, dataLen);
    let dst: ClientConn | null;
    // A link carries runs of one pair's packets: the last (src, dst) pair's route is kept until hub.gen changes.
    if (this.fwdGen === hub.gen && this.fwdPair !== null && eqAt(this.fwdPair, buf, off, 2 * KEY_LEN)) dst = this.fwdConn;
    else {
      const dstStr = buf.toString('latin1', dstOff, dataOff);
      dst = hub.lookup(dstStr);
      if (dst === null) {
        // From the region for a key another worker of this host holds: one more hop, over the sibling link.
        if (!this.sibling && hub.forwardToSibling(buf.subarray(off, dstOff), dstStr, buf, dstOff, dataLen, disco)) return;
        hub.dropForwarded(this, dstStr, buf.subarray(dstOff, dataOff), dataLen, disco);
        return;
      }
      hub.noteSentTo(buf.toString('latin1', off, dstOff), dstStr, dst);
      if (this.fwdPair === null) this.fwdPair = Buffer.allocUnsafeSlow(2 * KEY_LEN);
      buf.copy(this.fwdPair, 0, off, dataOff);
      this.fwdConn = dst;
      this.fwdGen = hub.gen;
    }
    dst!.deliver(buf.subarray(off, dstOff), buf, dataOff, dataLen, disco);
  }

  private handlePing(buf: Buffer, off: number): void {
    const st = this.hub.stats;
    st.gotPing++;
    if (this.blocked) {
      // One pending Pong at most; further Pings are ignored until it is written (derpserver.go: handleFramePing).
      if (this.pongPending) return;
      this.pongPending = true;
      this.pushControl(encode.pong(buf.subarray(off, off + PING_LEN)));
      return;
    }
    const pos = this.reserve(PONG_FRAME_LEN);
    const b = this.batch!;
    b[pos] = FrameType.Pong;
    b.writeUInt32BE(PING_LEN, pos + 1);
    buf.copy(b, pos + FRAME_HEADER_LEN, off, off + PING_LEN);
    st.sentPong++;
  }

  /** A Pong to the relay's Ping: the client's round trip, for the RTT histogram. */
  private handlePong(buf: Buffer, off: number): void {
    if (buf.readUInt32BE(off) !== 0 || buf.readUInt32BE(off + 4) !== this.pingSeq) return;
    const rtt = (performance.now() - this.pingSentAt) / 1000;
    this.pingSentAt = 0;
    this.hub.stats.serverPongsReceived++;
    this.hub.observer?.rtt(rtt);
  }

  /** NotHere token bucket: 1/s, burst 3, per sender connection. */
  allowNotHere(now: number): boolean {
    if (this.notHereAt === 0) this.notHereTokens = PEER_GONE_NOT_HERE_BURST;
    else this.notHereTokens = Math.min(PEER_GONE_NOT_HERE_BURST, this.notHereTokens + ((now - this.notHereAt) / 1000) * PEER_GONE_NOT_HERE_RATE_PER_SEC);
    this.notHereAt = now;
    if (this.notHereTokens < 1) return false;
    this.notHereTokens -= 1;
    return true;
  }

  onEnd(): void {
    if (this.state === State.Closed) return;
    const midFrame = this.hdrLen > 0 || this.body !== null || this.skip > 0;
    if (midFrame) this.fail('EOF in the middle of a frame (truncated frame)');
    else if (this.state === State.Handshake) this.fail(this.admitting ? 'EOF while the admission decision was pending' : this.opening ? 'EOF while ClientInfo was being opened' : 'EOF before ClientInfo', undefined, 'closed', 'info');
    // A raw client that half-closed between frames still reads: what is already written reaches it.
    else if (this.ws === null && this.state === State.Active) this.shutdown(null, 'client disconnected', HALF_CLOSE_LINGER_MS);
    else this.close('client disconnected', 'debug');
  }

  onTransportError(err: Error): void {
    if (this.state === State.Closed) return;
    if ((err as NodeJS.ErrnoException).code === 'ETIMEDOUT') this.hub.stats.deadPeers++;
    this.close(`transport error: ${describeError(err)}`, 'info');
  }

  onTransportClosed(): void {
    if (this.state === State.Closed) return;
    if (this.state === State.Handshake) {
      this.hub.stats.handshakeFailures++;
      this.hub.noteHandshake(this, 'closed');
    }
    this.close('connection closed', 'debug');
  }

  // ---------------------------------------------------------------- writing

  /** Queues one RecvPacket(src, data) to this connection (src is the sender's key). */
  deliver(src: Buffer, buf: Buffer, off: number, len: number, disco: boolean): void {
    if (this.state !== State.Active) {
      this.hub.drop('gone_disconnected', len, disco);
      return;
    }
    if (this.blocked) {
      this.enqueue(src, buf, off, len, disco);
      return;
    }
    const pos = this.reserve(RECV_HEADER_LEN + len);
    const b = this.batch!;
    b[pos] = FrameType.RecvPacket;
    b.writeUInt32BE(KEY_LEN + len, pos + 1);
    src.copy(b, pos + FRAME_HEADER_LEN);
    buf.copy(b, pos + RECV_HEADER_LEN, off, off + len);
    this.batchPkts++;
    this.batchBytes += len;
    if (disco) {
      this.batchDiscoPkts++;
      this.batchDiscoBytes += len;
    }
  }

  /** Slow receiver: keep the newest `sendQueueDepth` packets per kind, dropping the oldest (queue_head). */
  private enqueue(src: Buffer, buf: Buffer, off: number, len: number, disco: boolean): void {
    const frame = Buffer.allocUnsafe(RECV_HEADER_LEN + len);
    frame[0] = FrameType.RecvPacket;
    frame.writeUInt32BE(KEY_LEN + len, 1);
    src.copy(frame, FRAME_HEADER_LEN);
    buf.copy(frame, RECV_HEADER_LEN, off, off + len);
    const q = disco ? (this.qDisco ??= []) : (this.qOther ??= []);
    if (q.length >= this.hub.sendQueueDepth) {
      const old = q.shift()!;
      this.hub.drop('queue_head', old.length - RECV_HEADER_LEN, disco);
    }
    q.push(frame);
  }

  /** A whole control frame (PeerGone, KeepAlive, Restarting, ServerInfo). */
  appendFrame(frame: Buffer): void {
    if (this.state === State.Closed) return;
    if (this.blocked) {
      this.pushControl(frame);
      return;
    }
    const pos = this.reserve(frame.length);
    frame.copy(this.batch!, pos);
  }

  sendPeerGone(peer: Buffer, reason: number): void {
    if (reason === PeerGoneReason.NotHere) this.hub.stats.peerGoneNotHereFrames++;
    else this.hub.stats.peerGoneDisconnectedFrames++;
    this.appendFrame(encode.peerGone(peer, reason));
  }

  /** When keepAliveIfDue has something to send next (a keepalive, or a server Ping). */
  nextKeepAliveAt(): number {
    return this.pingAt !== 0 && this.pingAt < this.deadline ? this.pingAt : this.deadline;
  }

  /** Called by the hub's ticker: a KeepAlive every interval (+ this connection's fixed jitter). */
  keepAliveIfDue(now: number): void {
    if (this.state !== State.Active) return;
    if (this.pingAt !== 0 && now >= this.pingAt) this.serverPing(now);
    if (now < this.deadline) return;
    this.deadline = now + this.keepAliveMs;
    this.hub.stats.keepAlivesSent++;
    this.appendFrame(KEEPALIVE_FRAME);
  }

  /**
   * A Ping timed to its Pong (new: derper sends none). Only with an observer to report to, and not to a
   * blocked receiver (the RTT would be its queue). An unanswered Ping is simply replaced by the next.
   */
  private serverPing(now: number): void {
    this.pingAt = now + this.pingIntervalMs;
    if (this.hub.observer === null || this.blocked) return;
    const pos = this.reserve(PING_FRAME_LEN);
    const b = this.batch!;
    b[pos] = FrameType.Ping;
    b.writeUInt32BE(PING_LEN, pos + 1);
    this.pingSeq = (this.pingSeq + 1) >>> 0;
    b.writeUInt32BE(0, pos + FRAME_HEADER_LEN);
    b.writeUInt32BE(this.pingSeq, pos + FRAME_HEADER_LEN + 4);
    this.pingSentAt = performance.now();
    this.hub.stats.serverPingsSent++;
  }

  /** Packets waiting in this connection's slow-receiver queues (scrape time only). */
  queuedPackets(): number {
    return (this.qDisco?.length ?? 0) + (this.qOther?.length ?? 0);
  }

  private pushControl(frame: Buffer): void {
    const q = (this.ctrlQ ??= []);
    // A mesh watcher must hear every PeerPresent / PeerGone (its routing depends on them); its write timeout bounds the queue.
    if (q.length >= CONTROL_QUEUE_MAX && !this.mesh) {
      this.hub.logger.log('debug', 'control frame dropped for blocked client', { remote: this.remoteText(), frame: frameTypeName(frame[0]!) });
      return;
    }
    q.push(frame);
  }

  /** Space for `n` more bytes in this turn's batch; schedules the flush. Returns the write offset. */
  private reserve(n: number): number {
    const b = this.batch;
    const pos = this.used;
    if (b === null) {
      // A lone small frame (keepalive, the odd packet) gets an exact-size slice of Node's shared slab;
      // a destination that had several frames last turn gets a pooled batch.
      this.batch = this.batchHint === 0 && n < BATCH_INITIAL_BYTES ? Buffer.allocUnsafe(n) : takeBatch(Math.max(n, this.batchHint));
      this.used = n;
      if (!this.dirty) this.hub.markDirty(this);
      return 0;
    }
    if (pos + n > b.length) {
      const nb = takeBatch(Math.max(BATCH_INITIAL_BYTES, b.length * 2, pos + n));
      b.copy(nb, 0, 0, pos);
      releaseBatch(b);
      this.batch = nb;
    }
    this.used = pos + n;
    return pos;
  }

  /** Hands this turn's batch to the transport (one write for everything queued this turn). */
  flush(): void {
    this.dirty = false;
    const b = this.batch;
    if (b === null) return;
    const used = this.used;
    this.batch = null;
    this.used = 0;
    const pooled = isPooled(b);
    // A busy destination gets a pooled batch sized to its last turn; a quiet one goes back to exact-size batches.
    this.batchHint = pooled ? Math.min(BATCH_MAX_HINT_BYTES, Math.max(BATCH_INITIAL_BYTES, used + (used >>> 2))) : 0;
    if (this.state === State.Closed) {
      this.dropBatch();
      releaseBatch(b);
      return;
    }
    if (this.batchPkts !== 0) {
      const st = this.hub.stats;
      st.packetsSent += this.batchPkts;
      st.bytesSent += this.batchBytes;
      this.batchPkts = this.batchBytes = this.batchDiscoPkts = this.batchDiscoBytes = 0;
    }
    this.writeOut(used === b.length ? b : b.subarray(0, used), pooled ? b : null);
  }

  /** `pooled`: the batch behind `buf`, given back to the pool once the transport is done with it. */
  private writeOut(buf: Buffer, pooled: Buffer | null = null): void {
    if (this.ws !== null) {
      const onSent = pooled === null ? this.onWsSent : (err?: Error) => (releaseBatch(pooled), this.onWsSent(err));
      this.ws.send(buf, WS_SEND_OPTS, onSent);
      if (this.ws.bufferedAmount > WRITE_BLOCK_THRESHOLD) this.block();
      return;
    }
    const s = this.sock!;
    // The write callback runs once the socket no longer needs the bytes (written, or the write failed).
    if (pooled === null) s.write(buf);
    else s.write(buf, () => releaseBatch(pooled));
    // Count only what was already pending before this write: a TLS socket reports its whole latest
    // write as pending until the next turn even when the kernel takes it at once, so counting it would
    // mark every bursty TLS receiver slow (and drop) where the reference's kernel buffer absorbs it.
    if (s.writableLength - buf.length > WRITE_BLOCK_THRESHOLD) this.block();
  }

  private readonly onWsSent = (err?: Error): void => {
    if (err) {
      if (this.state !== State.Closed) this.close(`WebSocket write failed: ${describeError(err)}`, 'info');
      return;
    }
    if (this.blocked && this.ws !== null && this.ws.bufferedAmount === 0) this.onWritable();
  };

  private block(): void {
    if (this.blocked) return;
    this.blocked = true;
    this.blockedSince = Date.now();
    this.hub.blocked.add(this);
  }

  /** The transport drained: write what piled up while blocked (control first, then disco, then other). */
  onWritable(): void {
    if (!this.blocked || this.state === State.Closed) return;
    this.blocked = false;
    this.hub.blocked.delete(this);
    const st = this.hub.stats;
    const ctrl = this.ctrlQ;
    this.ctrlQ = null;
    if (ctrl !== null) {
      for (const f of ctrl) {
        if (f[0] === FrameType.Pong) st.sentPong++;
        const pos = this.reserve(f.length);
        f.copy(this.batch!, pos);
      }
      this.pongPending = false;
    }
    if (this.hub.observer !== null && (this.qDisco !== null || this.qOther !== null)) this.hub.observer.queueWait((Date.now() - this.blockedSince) / 1000);
    const qd = this.qDisco;
    if (qd !== null) {
      for (const f of qd) {
        const pos = this.reserve(f.length);
        f.copy(this.batch!, pos);
        this.batchPkts++;
        this.batchDiscoPkts++;
        this.batchBytes += f.length - RECV_HEADER_LEN;
        this.batchDiscoBytes += f.length - RECV_HEADER_LEN;
      }
    }
    const qo = this.qOther;
    if (qo !== null) {
      for (const f of qo) {
        const pos = this.reserve(f.length);
        f.copy(this.batch!, pos);
        this.batchPkts++;
        this.batchBytes += f.length - RECV_HEADER_LEN;
      }
    }
    this.qDisco = null;
    this.qOther = null;
  }

  // ---------------------------------------------------------------- closing

  /** Closes for a violation: logged with the remote address; only this connection is affected. */
  fail(reason: string, wsCode?: number, phase: Exclude<HandshakeResult, 'ok'> | 'steady' = 'steady', level: LogLevel = 'warn'): typeof CLOSED {
    if (this.state === State.Closed) return CLOSED;
    if (phase !== 'steady' || this.state === State.Handshake) {
      this.hub.stats.handshakeFailures++;
      this.hub.noteHandshake(this, phase === 'steady' ? 'rejected' : phase);
      if (phase !== 'closed') this.hub.abuse('handshake_failure', this.remoteAddress, this.key);
    } else {
      this.hub.stats.protocolErrors++;
      this.hub.abuse('protocol_violation', this.remoteAddress, this.key);
    }
    this.close(reason, level, wsCode);
    return CLOSED;
  }

  /** Closes now (the socket is destroyed; anything queued is dropped as gone_disconnected). */
  close(reason: string, level: LogLevel = 'warn', wsCode?: number): void {
    if (this.state === State.Closed) return;
    const wasActive = this.state === State.Active;
    this.state = State.Closed;
    const fields: LogFields = { remote: this.remoteText(), transport: this.transport, reason };
    if (this.key !== null) fields.key = shortKey(this.key);
    this.hub.logger.log(level, level === 'debug' ? 'connection closed' : 'closing connection', fields);
    this.dropQueued();
    this.dropBatch();
    this.stopReadState();
    if (this.batch !== null) releaseBatch(this.batch);
    this.batch = null;
    this.body = null;
    this.hdr = null;
    this.hub.onClosed(this, wasActive);
    if (this.ws !== null) {
      if (wsCode !== undefined) {
        // A graceful close waits for the peer's close frame (or its FIN): a transport paused for a
        // deferred handshake, admission or the rate limit must read again, or ws waits out its 30 s.
        this.readToEnd();
        this.ws.close(wsCode, reason.slice(0, 120));
      } else this.ws.terminate();
    } else this.sock!.destroy();
  }

  /**
   * Graceful stop: optional final frame (Restarting), flush, then close the transport. `lingerMs` > 0:
   * the socket is destroyed if the peer reads nothing for that long (the relay's stop has its own grace).
   */
  shutdown(finalFrame: Buffer | null, reason = 'server stopping', lingerMs = 0): void {
    if (this.state === State.Closed) return;
    const wasActive = this.state === State.Active;
    if (wasActive && finalFrame !== null) {
      // Bypass the blocked state: the socket buffers it behind whatever is pending.
      const pos = this.reserve(finalFrame.length);
      finalFrame.copy(this.batch!, pos);
    }
    this.flush();
    this.state = State.Closed;
    this.hub.logger.log('debug', 'connection closed', { remote: this.remoteText(), reason });
    this.dropQueued();
    this.stopReadState();
    this.hub.onClosed(this, wasActive);
    this.readToEnd();
    if (this.ws !== null) this.ws.close(WS_CLOSE_GOING_AWAY, 'server stopping');
    else {
      const s = this.sock!;
      if (lingerMs > 0) {
        s.setTimeout(lingerMs);
        s.on('timeout', onSockLingerTimeout);
      }
      // No destroy once our FIN is out: closing with the peer's bytes unread makes the kernel send RST and
      // discard what it still holds for the peer (the last packets, the Restarting frame). The socket
      // closes when the peer ends too (or at the stop's grace period, or the linger timeout).
      s.end();
    }
  }

  /**
   * A graceful close waits for the peer's FIN (or close frame): a transport paused for a read yield,
   * admission, the rate limit or a deferred handshake must read again (a closed connection discards what
   * it reads), or it never sees the FIN and the grace's destroy resets it with the peer's bytes unread.
   */
  private readToEnd(): void {
    if (!this.transportPaused) return;
    this.transportPaused = false;
    if (this.ws !== null) this.ws.resume();
    else this.sock!.resume();
  }

  /** Forced teardown after the stop grace period; false if the transport had closed already. */
  destroy(): boolean {
    if (this.ws !== null) {
      if (this.ws.readyState === this.ws.CLOSED) return false;
      this.ws.terminate();
    } else {
      if (this.sock!.destroyed) return false;
      this.sock!.destroy();
    }
    return true;
  }

  /** Closing: no rate timer, no pending admission, nothing held. */
  private stopReadState(): void {
    if (this.rateTimer !== null) {
      clearTimeout(this.rateTimer);
      this.rateTimer = null;
      this.hub.stats.rateLimitedConnections--;
    }
    if (this.admitting) {
      this.admitting = false;
      this.hub.stats.admissionPending--;
    }
    this.opening = false;
    this.opened = null;
    this.held = null;
    this.readPaused = false;
  }

  /** Packets delivered into this turn's batch that will never be written: the connection closed first. */
  private dropBatch(): void {
    if (this.batchPkts === 0) return;
    this.hub.dropBatch('gone_disconnected', this.batchPkts, this.batchBytes, this.batchDiscoPkts, this.batchDiscoBytes);
    this.batchPkts = this.batchBytes = this.batchDiscoPkts = this.batchDiscoBytes = 0;
  }

  private dropQueued(): void {
    for (const [q, disco] of [
      [this.qDisco, true],
      [this.qOther, false],
    ] as const) {
      if (q === null) continue;
      for (const f of q) this.hub.drop('gone_disconnected', f.length - RECV_HEADER_LEN, disco);
    }
    this.qDisco = null;
    this.qOther = null;
    this.ctrlQ = null;
  }

  /** For logs: "ip:port" of the peer, or "ip via proxy-ip:port" when a trusted proxy forwarded it. */
  remoteText(): string {
    if (this.proxy !== null) return `${this.remoteAddress} via ${hostPort(this.proxy.address, this.proxy.port)}`;
    return hostPort(this.remoteAddress, this.remotePort);
  }

  connInfo(): ClientConnInfo {
    return {
      key: this.key!,
      keyText: formatNodePublic(this.key!),
      remoteAddress: this.remoteAddress,
      remotePort: this.remotePort,
      transport: this.transport,
      tls: this.tls,
      info: this.info!,
      ...(this.proxy === null ? {} : { proxyAddress: this.proxy.address, proxyPort: this.proxy.port }),
    };
  }
}

/** Only an explicit `allow: true` admits (fail closed on anything else). */
function isAllow(d: AdmitDecision | null | undefined): boolean {
  return typeof d === 'object' && d !== null && d.allow === true;
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export type { DropReason };
