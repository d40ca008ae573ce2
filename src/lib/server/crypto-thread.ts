/**
 * Handshake crypto off the event loop. The X25519, the ClientInfo box and the ServerInfo seal are half
 * of what a handshake costs the relay, and run inline they hold every established client's packets for
 * as long. Here they run on one worker thread (crypto-thread-entry.ts). Requests made while a batch is
 * out go together in the next one, each batch one transferred buffer each way, so a burst of handshakes
 * costs the event loop a message per batch rather than the crypto. The answers come back opened but
 * not parsed: the connection parses the JSON in its own handshake turn, so a batch of answers is not
 * one long callback.
 *
 * Should the thread fail or exit, what it had is opened inline and so is everything after (logged
 * once): the relay goes on as it would without it.
 */
import type { KeyObject } from 'node:crypto';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describeError, HandshakeError } from '../errors.js';
import { KEY_LEN } from '../protocol/constants.js';
import type { Logger } from '../util/logger.js';
import { CRYPTO_BATCH_MIN_BYTES, CRYPTO_THREAD_YOUNG_MIB } from './constants.js';
import { openClientInfo, type OpenedClientInfo } from './handshake.js';

/**
 * The wire between the two threads. A request batch: per item id u32, payload length u32, ServerInfo
 * plaintext length u32 (NO_SERVER_INFO: derper's plain one), payload, plaintext. A reply batch: per
 * item id u32, status u8 (REPLY_OK, REPLY_ERROR), two lengths u32, then for OK the ClientInfo JSON and
 * the sealed ServerInfo frame, for ERROR the error text and nothing.
 */
export const ITEM_HEADER_LEN = 12;
export const REPLY_HEADER_LEN = 13;
export const NO_SERVER_INFO = 0xffffffff;
export const REPLY_OK = 0;
export const REPLY_ERROR = 1;

/** A batch of either direction: the buffer (transferred) and how much of it is used. */
export interface CryptoBatch {
  buf: ArrayBuffer;
  len: number;
}

export type AcceptCallback = (result: OpenedClientInfo | HandshakeError) => void;

const HERE = fileURLToPath(import.meta.url);
/** crypto-thread-entry.js beside this file in dist/; the .ts under tsx or vitest. */
export const CRYPTO_THREAD_ENTRY = join(dirname(HERE), `crypto-thread-entry${extname(HERE)}`);

interface Pending {
  /** Own copy: the read buffer it came from is reused, and a lost thread's work is redone inline. */
  payload: Buffer;
  serverInfo: Buffer | undefined;
  cb: AcceptCallback;
}

export interface CryptoThreadOptions {
  /** Another entry file (tests: one that fails). */
  entry?: string;
  /** Told when the thread fails or exits on its own (not on close()). */
  onLost?: () => void;
}

export class CryptoThread {
  private worker: Worker | null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Ids waiting for the next batch. */
  private queued: number[] = [];
  private batchOut = false;
  /** The buffer of the last answered batch, for the next request: the two travel back and forth. */
  private spare: ArrayBuffer | null = null;
  private readonly exited: Promise<void>;
  private readonly onLost: (() => void) | null;

  constructor(
    private readonly privateKey: KeyObject,
    private readonly logger: Logger,
    opts: CryptoThreadOptions = {},
  ) {
    const entry = opts.entry ?? CRYPTO_THREAD_ENTRY;
    this.onLost = opts.onLost ?? null;
    // Not the process's own node flags, which a thread refuses (the heap sizes); from source it needs tsx.
    const w = new Worker(entry, {
      workerData: { privateKey },
      execArgv: entry.endsWith('.ts') ? ['--import', 'tsx'] : [],
      // Its live data is one batch: without a cap its young generation grows as the relay's would (heap.ts).
      resourceLimits: { maxYoungGenerationSizeMb: CRYPTO_THREAD_YOUNG_MIB },
    });
    this.worker = w;
    // A relay that is never stopped must not keep its process alive for this.
    w.unref();
    w.on('message', this.onReplies);
    w.on('error', (err: Error) => this.lose(`the handshake crypto thread failed: ${describeError(err)}`));
    this.exited = new Promise((resolve) => w.once('exit', (code: number) => {
      this.lose(`the handshake crypto thread exited (code ${code})`);
      resolve();
    }));
  }

  /** Whether handshakes still go to the thread (false once it is lost or closed). */
  get running(): boolean {
    return this.worker !== null;
  }

  /** Handshakes sent to the thread and not answered yet. */
  get waiting(): number {
    return this.pending.size;
  }

  /**
   * Opens `payload` (client key ‖ nonce ‖ box) and seals `serverInfo` (undefined: derper's plain one) for
   * its key. `cb` runs in a later turn of this event loop; inline, at once, when the thread is gone.
   */
  accept(payload: Buffer, serverInfo: Buffer | undefined, cb: AcceptCallback): void {
    if (this.worker === null) {
      cb(this.inline(payload, serverInfo));
      return;
    }
    const id = this.nextId++;
    this.pending.set(id, { payload: Buffer.from(payload), serverInfo, cb });
    this.queued.push(id);
    if (!this.batchOut) this.post();
  }

  /** Ends the thread; what it had not answered is opened inline (its callbacks run before this resolves). */
  async close(): Promise<void> {
    const w = this.worker;
    if (w === null) return;
    this.lose(null);
    await w.terminate();
    await this.exited;
  }

  private post(): void {
    let len = 0;
    for (const id of this.queued) {
      const p = this.pending.get(id)!;
      len += ITEM_HEADER_LEN + p.payload.length + (p.serverInfo?.length ?? 0);
    }
    const spare = this.spare;
    this.spare = null;
    // Not from Node's pool: the whole ArrayBuffer is transferred.
    const buf = spare !== null && spare.byteLength >= len ? spare : new ArrayBuffer(Math.max(len, CRYPTO_BATCH_MIN_BYTES));
    const out = Buffer.from(buf, 0, len);
    let off = 0;
    for (const id of this.queued) {
      const p = this.pending.get(id)!;
      out.writeUInt32LE(id, off);
      out.writeUInt32LE(p.payload.length, off + 4);
      out.writeUInt32LE(p.serverInfo === undefined ? NO_SERVER_INFO : p.serverInfo.length, off + 8);
      off += ITEM_HEADER_LEN;
      off += p.payload.copy(out, off);
      if (p.serverInfo !== undefined) off += p.serverInfo.copy(out, off);
    }
    this.queued = [];
    this.batchOut = true;
    const batch: CryptoBatch = { buf, len };
    this.worker!.postMessage(batch, [buf]);
  }

  private readonly onReplies = (batch: CryptoBatch): void => {
    if (this.worker === null) return;
    this.batchOut = false;
    if (this.queued.length > 0) this.post();
    const b = Buffer.from(batch.buf, 0, batch.len);
    for (let off = 0; off < batch.len; ) {
      const id = b.readUInt32LE(off);
      const status = b[off + 4];
      const aLen = b.readUInt32LE(off + 5);
      const bLen = b.readUInt32LE(off + 9);
      off += REPLY_HEADER_LEN;
      // OK: the ClientInfo JSON, then the sealed ServerInfo frame; ERROR: the text alone.
      const body = b.subarray(off, off + aLen + bLen);
      off += aLen + bLen;
      const p = this.pending.get(id);
      if (p === undefined) continue;
      this.pending.delete(id);
      p.cb(status === REPLY_OK ? this.opened(p, body, aLen) : new HandshakeError(body.toString('utf8', 0, aLen)));
    }
    // Nothing refers to the batch any more (opened copies what it keeps).
    this.spare ??= batch.buf;
  };

  /** The thread's answer as openClientInfo returns it, copied out of the batch (which goes back to the thread). */
  private opened(p: Pending, body: Buffer, plainLen: number): OpenedClientInfo {
    const clientKey = Buffer.allocUnsafeSlow(KEY_LEN);
    p.payload.copy(clientKey, 0, 0, KEY_LEN);
    // One copy for both: the JSON is parsed in the connection's turn, the frame written then.
    const own = Buffer.from(body);
    return { clientKey, plain: own.subarray(0, plainLen), serverInfoFrame: own.subarray(plainLen) };
  }

  /** The thread is gone (why null: closed on purpose): what it had, and all that follows, is opened inline. */
  private lose(why: string | null): void {
    if (this.worker === null) return;
    this.worker = null;
    if (why !== null) {
      this.logger.log('error', `${why}; handshakes are opened on the event loop from now on`, { waiting: this.pending.size });
      this.onLost?.();
    }
    const left = [...this.pending.values()];
    this.pending.clear();
    this.queued = [];
    this.batchOut = false;
    for (const p of left) p.cb(this.inline(p.payload, p.serverInfo));
  }

  private inline(payload: Buffer, serverInfo: Buffer | undefined): OpenedClientInfo | HandshakeError {
    try {
      return openClientInfo(this.privateKey, payload, serverInfo);
    } catch (err) {
      return asHandshakeError(err);
    }
  }
}

function asHandshakeError(err: unknown): HandshakeError {
  return err instanceof HandshakeError ? err : new HandshakeError(describeError(err), { cause: err });
}
