/**
 * One DERP connection, client side: dial, upgrade, handshake (ServerKey → ClientInfo → ServerInfo),
 * then framed reads with a liveness timer and batched writes. Reconnecting is the client's job.
 */
import { ClosedError, DerpError, HandshakeError, ProtocolError, TimeoutError } from '../errors.js';
import { FrameType, MAX_CLIENT_FRAME_LEN, MAX_SERVER_KEY_LEN, MIN_SERVER_KEY_LEN, PROTOCOL_VERSION, frameTypeName } from '../protocol/constants.js';
import { FrameReader, decodeFrame, type Frame } from '../protocol/frames.js';
import { buildClientInfoFrame, openServerInfo, type ClientInfo, type ServerInfo } from '../protocol/handshake.js';
import type { NodePrivateKey } from '../protocol/keys.js';
import type { Logger } from '../util/logger.js';
import { dialSocket } from './dial.js';
import type { DialTarget } from './target.js';
import { upgradeDerp, upgradeWebSocket, type Transport, type TransportKind } from './transport.js';

/** Above this many pending bytes a batch is flushed at once instead of at the end of the tick. */
const FLUSH_THRESHOLD_BYTES = 256 << 10;
/** Size of the buffer frames are written into in place (reserve); bigger frames get their own. */
const BATCH_BYTES = 64 << 10;

export interface ConnectionOptions {
  target: DialTarget;
  transport: TransportKind;
  key: NodePrivateKey;
  clientInfo: Omit<ClientInfo, 'version'>;
  /** Aborts the whole connect (caller combines timeout, user signal and shutdown). */
  signal: AbortSignal;
  readTimeoutMs: number;
  logger: Logger;
  /** Every frame after ServerInfo, in order, including those that arrive in the handshake's last chunk. */
  onFrame: (frame: Frame, conn: DerpConnection) => void;
  /** Called once when an established connection ends; `err` is undefined for a local close(). */
  onClose: (conn: DerpConnection, err: DerpError | undefined) => void;
}

function asDerpError(err: unknown, fallback: string): DerpError {
  if (err instanceof DerpError) return err;
  return new ClosedError(err instanceof Error ? `${fallback}: ${err.message}` : fallback, { cause: err });
}

export class DerpConnection {
  serverKey!: Buffer;
  serverInfo!: ServerInfo;
  private transport!: Transport;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  // Frames written in place (reserve): batch[batchStart, batchUsed) is not yet in `pending`.
  private batch: Buffer | null = null;
  private batchStart = 0;
  private batchUsed = 0;
  private flushScheduled = false;
  private writableWaiters: (() => void)[] = [];
  private drainHooked = false;
  private lastReadAt = 0;
  private readTimer: NodeJS.Timeout | undefined;
  private closing = false;
  private ended = false;
  private localClose = false;
  /** Frames received on this connection (handshake included). */
  framesIn = 0;

  private constructor(private readonly o: ConnectionOptions) {}

  get closed(): boolean {
    return this.ended || this.closing;
  }

  /** Dials, upgrades and completes the handshake; resolves once ServerInfo has been opened. */
  static async open(o: ConnectionOptions): Promise<DerpConnection> {
    const c = new DerpConnection(o);
    const sock = await dialSocket(o.target, o.signal);
    const { transport, leftover } = await (o.transport === 'websocket' ? upgradeWebSocket(sock, o.target, o.signal) : upgradeDerp(sock, o.target, o.signal));
    c.transport = transport;
    await c.handshake(leftover);
    return c;
  }

  private handshake(leftover: Buffer): Promise<void> {
    const { o } = this;
    return new Promise<void>((resolve, reject) => {
      let state: 'serverKey' | 'serverInfo' | 'ready' = 'serverKey';
      const fail = (err: unknown) => {
        if (state === 'ready') {
          this.destroy(asDerpError(err, 'connection failed'));
          return;
        }
        state = 'ready';
        o.signal.removeEventListener('abort', onAbort);
        this.ended = true;
        this.transport.destroy();
        reject(err);
      };
      // The reason is the caller's own (their signal), a TimeoutError or a ClosedError (disconnect()).
      const onAbort = () => fail(o.signal.reason ?? new TimeoutError('connect aborted'));
      o.signal.addEventListener('abort', onAbort, { once: true });
      if (o.signal.aborted) {
        onAbort();
        return;
      }
      const reader = new FrameReader(
        (type) => (state === 'serverKey' && type === FrameType.ServerKey ? MAX_SERVER_KEY_LEN : MAX_CLIENT_FRAME_LEN),
        (type, payload) => {
          this.framesIn++;
          this.lastReadAt = performance.now();
          if (state === 'ready') {
            this.dispatch(type, payload);
            return;
          }
          if (state === 'serverKey') {
            if (type !== FrameType.ServerKey) throw new HandshakeError(`expected ServerKey as the first frame, got ${frameTypeName(type)}`);
            if (payload.length < MIN_SERVER_KEY_LEN) throw new HandshakeError(`ServerKey payload of ${payload.length} bytes is shorter than ${MIN_SERVER_KEY_LEN}`);
            let f: Frame;
            try {
              f = decodeFrame(type, payload);
            } catch (cause) {
              throw new HandshakeError(`bad ServerKey frame: ${(cause as Error).message}`, { cause });
            }
            if (f.type !== 'ServerKey') throw new HandshakeError('ServerKey frame did not decode');
            this.serverKey = Buffer.from(f.serverKey);
            const info: ClientInfo = { ...o.clientInfo, version: PROTOCOL_VERSION };
            this.transport.write(buildClientInfoFrame(o.key.keyObject, o.key.publicKey, this.serverKey, info));
            state = 'serverInfo';
            return;
          }
          // derpprobe treats anything but ServerInfo right after ServerKey as a failure (prober/derp.go).
          if (type !== FrameType.ServerInfo) throw new HandshakeError(`expected ServerInfo after ServerKey, got ${frameTypeName(type)}`);
          this.serverInfo = openServerInfo(o.key.keyObject, this.serverKey, payload);
          state = 'ready';
          o.signal.removeEventListener('abort', onAbort);
          this.startReadTimer();
          resolve();
        },
      );
      const onData = (chunk: Buffer) => {
        if (this.ended) return;
        try {
          reader.push(chunk);
        } catch (err) {
          fail(err instanceof DerpError ? err : new ProtocolError(`bad frame from server: ${(err as Error).message}`, { cause: err }));
        }
      };
      this.transport.start(onData, (err) => {
        if (state !== 'ready') {
          fail(err instanceof DerpError ? err : new HandshakeError(`server closed the connection during the handshake${err ? `: ${err.message}` : ''}`, { cause: err }));
          return;
        }
        this.finish(err === undefined ? undefined : asDerpError(err, 'connection lost'));
      });
      if (leftover.length) onData(leftover);
    });
  }

  private dispatch(type: number, payload: Buffer): void {
    let f: Frame;
    try {
      f = decodeFrame(type, payload);
    } catch (err) {
      // The Go client drops malformed (short) frames and keeps reading (derp_client.go: recvTimeout).
      this.o.logger.log('warn', 'dropping malformed frame', { frameType: frameTypeName(type), len: payload.length, reason: (err as Error).message });
      return;
    }
    this.o.onFrame(f, this);
  }

  private startReadTimer(): void {
    const ms = this.o.readTimeoutMs;
    if (!(ms > 0) || !Number.isFinite(ms)) return;
    // One timer re-armed lazily: cheaper than resetting a timer on every frame.
    const check = () => {
      if (this.ended) return;
      const idle = performance.now() - this.lastReadAt;
      if (idle >= ms) {
        this.destroy(new TimeoutError(`no frame from the server for ${ms} ms`, { context: { readTimeoutMs: ms } }));
        return;
      }
      this.readTimer = setTimeout(check, ms - idle);
      this.readTimer.unref();
    };
    this.readTimer = setTimeout(check, ms);
    this.readTimer.unref();
  }

  /** Queues a whole frame; frames queued in the same tick go out in one write. */
  enqueue(frame: Buffer): void {
    if (this.closed) return;
    this.sealBatch();
    this.pending.push(frame);
    this.pendingBytes += frame.length;
    this.afterQueue();
  }

  /**
   * Room for an `n`-byte frame written in place (no buffer per frame): returns the buffer and offset to
   * write it at, valid until the next call. Frames keep their order with enqueue()d ones.
   */
  reserve(n: number): { buf: Buffer; off: number } {
    // A flush only before the frame is reserved: after it, the caller has not written it yet.
    if (this.pendingBytes >= FLUSH_THRESHOLD_BYTES) this.flush();
    let b = this.batch;
    if (b === null || this.batchUsed + n > b.length) {
      this.sealBatch();
      b = this.batch = Buffer.allocUnsafe(Math.max(BATCH_BYTES, n));
      this.batchUsed = this.batchStart = 0;
    }
    const off = this.batchUsed;
    this.batchUsed += n;
    this.pendingBytes += n;
    this.scheduleFlush();
    return { buf: b, off };
  }

  /** The in-place batch joins the queue (before a whole frame, or when full). */
  private sealBatch(): void {
    const b = this.batch;
    if (b === null) return;
    if (this.batchUsed > 0) this.pending.push(b.subarray(this.batchStart, this.batchUsed));
    if (this.batchUsed + 64 > b.length) {
      this.batch = null;
      this.batchUsed = this.batchStart = 0;
    } else this.batchStart = this.batchUsed;
  }

  private afterQueue(): void {
    if (this.pendingBytes >= FLUSH_THRESHOLD_BYTES) {
      this.flush();
      return;
    }
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
  }

  flush(): void {
    if (this.ended) return;
    this.sealBatch();
    // What was written in place is the socket's now: the next frames get a fresh batch.
    this.batch = null;
    this.batchUsed = this.batchStart = 0;
    if (this.pending.length === 0) return;
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    this.transport.write(data);
    this.wakeWriters();
  }

  /** Bytes queued here or in the socket, not yet taken by the kernel. */
  get bufferedBytes(): number {
    return this.ended ? 0 : this.pendingBytes + this.transport.bufferedBytes;
  }

  /** True when the caller should wait (`waitWritable`) before queueing more. */
  get backlogged(): boolean {
    return !this.ended && this.transport.needsDrain;
  }

  /** Resolves when the socket has room again, or the connection ended (queued frames are then lost). */
  waitWritable(signal?: AbortSignal): Promise<void> {
    if (!this.backlogged) return Promise.resolve();
    signal?.throwIfAborted();
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.writableWaiters = this.writableWaiters.filter((w) => w !== waiter);
        reject(signal!.reason);
      };
      const waiter = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.writableWaiters.push(waiter);
      this.wakeWriters();
    });
  }

  private wakeWriters(): void {
    if (this.writableWaiters.length === 0) return;
    if (this.backlogged) {
      if (!this.drainHooked) {
        this.drainHooked = true;
        this.transport.onDrain(() => {
          this.drainHooked = false;
          this.wakeWriters();
        });
      }
      return;
    }
    for (const w of this.writableWaiters.splice(0)) w();
  }

  /** Flushes queued frames and closes the connection. */
  close(): Promise<void> {
    if (this.ended) return Promise.resolve();
    this.localClose = true;
    return new Promise<void>((resolve) => {
      this.closeWaiters.push(resolve);
      if (this.closing) return;
      this.closing = true;
      this.flush();
      this.transport.close();
    });
  }

  private closeWaiters: (() => void)[] = [];

  /** Drops the connection now. */
  destroy(err?: DerpError): void {
    if (this.ended) return;
    this.transport.destroy();
    this.finish(err ?? new ClosedError('connection destroyed'));
  }

  private finish(err: DerpError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    if (this.readTimer) clearTimeout(this.readTimer);
    this.pending = [];
    this.pendingBytes = 0;
    this.batch = null;
    this.batchUsed = this.batchStart = 0;
    for (const w of this.writableWaiters.splice(0)) w();
    for (const w of this.closeWaiters.splice(0)) w();
    this.o.onClose(this, this.localClose ? undefined : (err ?? new ClosedError('server closed the connection')));
  }
}
