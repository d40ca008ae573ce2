/**
 * STUN Binding load, run inside a generator worker (worker.ts). Every socket keeps a window of
 * Tailscale-format requests (40 bytes: SOFTWARE + FINGERPRINT) in flight and sends the next one from the
 * reply handler. Requests are pre-built per ring slot; per request only the sequence number in the
 * transaction ID and the FINGERPRINT are rewritten, so every transaction ID is fresh (never a cache hit
 * on the server) and nothing is allocated by us.
 */
import * as dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { crc32 } from 'node:zlib';
import { describeError } from '../errors.js';
import { FINGERPRINT_XOR, MessageType, buildBindingRequest, parseMessage } from '../stun/message.js';
import { HIST_BUCKETS, HIST_BUCKET_US } from './histogram.js';
import type { WorkerCommand, WorkerEvent } from './messages.js';

/** Pre-built requests per socket; a power of two ≥ 2 × the largest window, so a slot is free when reused. */
const RING = 64;
/** Transaction ID layout: a random per-socket tag (message bytes 8..15), then the sequence number (16..19). */
const TAG_OFF = 8;
const SEQ_OFF = 16;
/** The FINGERPRINT value sits in the request's last 4 bytes and covers the 32 before its attribute header. */
const FP_COVERED = 32;
const FP_VALUE_OFF = 36;
/** A request unanswered this long on loopback is counted lost and its window slot reused. */
const LOSS_MS = 250;
const SWEEP_MS = 50;
/** How long `stop` waits for in-flight requests before counting them lost. */
const DRAIN_MS = 1000;
const LOOP_DELAY_RESOLUTION_MS = 5;
const MAX_ERRORS = 5;

interface Sock {
  socket: dgram.Socket;
  tag0: number;
  tag1: number;
  bufs: Buffer[];
  /** Views of each buffer's FINGERPRINT-covered bytes (made once: crc32 takes them without a new view). */
  covered: Buffer[];
  sentAt: Float64Array;
  seqAt: Uint32Array;
  nextSeq: number;
  inflight: number;
}

export class StunLoad {
  private sending = false;
  private recording = false;
  private marks = 0;
  private sent = 0;
  private received = 0;
  private lost = 0;
  private readonly hist = new Uint32Array(HIST_BUCKETS);
  private readonly errors: string[] = [];
  private sweep: NodeJS.Timeout | undefined;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });

  private constructor(
    private readonly socks: Sock[],
    private readonly window: number,
    private readonly emit: (ev: WorkerEvent) => void,
  ) {}

  static async open(c: Extract<WorkerCommand, { cmd: 'stun' }>, emit: (ev: WorkerEvent) => void): Promise<StunLoad> {
    if (c.window * 2 > RING) throw new RangeError(`STUN window ${c.window} exceeds ${RING / 2}`);
    const socks: Sock[] = [];
    const load = new StunLoad(socks, c.window, emit);
    for (let i = 0; i < c.sockets; i++) socks.push(await load.openSocket(c.host, c.port));
    return load;
  }

  private async openSocket(host: string, port: number): Promise<Sock> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => socket.connect(port, host, () => {
        socket.off('error', reject);
        resolve();
      }));
    });
    const tag = randomBytes(8);
    const bufs: Buffer[] = [];
    for (let i = 0; i < RING; i++) bufs.push(buildBindingRequest(Buffer.concat([tag, Buffer.alloc(4)])));
    const s: Sock = {
      socket,
      tag0: tag.readUInt32LE(0),
      tag1: tag.readUInt32LE(4),
      bufs,
      covered: bufs.map((b) => b.subarray(0, FP_COVERED)),
      sentAt: new Float64Array(RING),
      seqAt: new Uint32Array(RING),
      nextSeq: 0,
      inflight: 0,
    };
    socket.on('error', (err) => this.error(`socket error: ${describeError(err)}`));
    socket.on('message', (msg) => this.onReply(s, msg));
    // Our rewrite of sequence and FINGERPRINT must still be a request our own parser accepts.
    this.stamp(s, 0);
    const m = parseMessage(s.bufs[0]!);
    if (typeof m === 'string' || m.type !== MessageType.BindingRequest) throw new Error(`generator built a bad STUN request: ${String(m)}`);
    return s;
  }

  private error(msg: string): void {
    if (this.errors.length < MAX_ERRORS) this.errors.push(msg);
  }

  private stamp(s: Sock, seq: number): Buffer {
    const slot = seq & (RING - 1);
    const buf = s.bufs[slot]!;
    buf.writeUInt32BE(seq, SEQ_OFF);
    buf.writeUInt32BE((crc32(s.covered[slot]!) ^ FINGERPRINT_XOR) >>> 0, FP_VALUE_OFF);
    return buf;
  }

  private fill(s: Sock, now: number): void {
    while (s.inflight < this.window) {
      const seq = s.nextSeq;
      s.nextSeq = (seq + 1) >>> 0;
      const slot = seq & (RING - 1);
      s.sentAt[slot] = now;
      s.seqAt[slot] = seq;
      s.inflight++;
      this.sent++;
      s.socket.send(this.stamp(s, seq));
    }
  }

  private onReply(s: Sock, msg: Buffer): void {
    if (msg.length < 20 || msg.readUInt16BE(0) !== MessageType.BindingSuccess || msg.readUInt32LE(TAG_OFF) !== s.tag0 || msg.readUInt32LE(TAG_OFF + 4) !== s.tag1) {
      this.error(`unexpected ${msg.length}-byte reply (type 0x${msg.length >= 2 ? msg.readUInt16BE(0).toString(16) : '?'})`);
      return;
    }
    const seq = msg.readUInt32BE(SEQ_OFF);
    const slot = seq & (RING - 1);
    // Already counted lost (late reply) or a duplicate: not an answer to anything in flight.
    if (s.seqAt[slot] !== seq || s.sentAt[slot] === 0) return;
    const now = performance.now();
    if (this.recording) {
      const b = Math.floor(((now - s.sentAt[slot]) * 1000) / HIST_BUCKET_US);
      this.hist[b < HIST_BUCKETS ? b : HIST_BUCKETS - 1]!++;
    }
    s.sentAt[slot] = 0;
    s.inflight--;
    this.received++;
    if (this.sending) this.fill(s, now);
  }

  private expire(): void {
    const now = performance.now();
    for (const s of this.socks) {
      for (let i = 0; i < RING; i++) {
        const t = s.sentAt[i]!;
        if (t > 0 && now - t > LOSS_MS) {
          s.sentAt[i] = 0;
          s.inflight--;
          this.lost++;
        }
      }
      if (this.sending) this.fill(s, now);
    }
  }

  go(): void {
    this.sending = true;
    const now = performance.now();
    for (const s of this.socks) this.fill(s, now);
    this.sweep = setInterval(() => this.expire(), SWEEP_MS);
  }

  mark(): void {
    this.marks++;
    this.recording = this.marks === 1;
    if (this.recording) this.loopDelay.enable();
    else this.loopDelay.disable();
    const u = process.cpuUsage();
    this.emit({ ev: 'mark', t: performance.now(), sent: this.sent, received: this.received, cpuUs: u.user + u.system });
  }

  async stop(): Promise<void> {
    this.sending = false;
    const deadline = performance.now() + DRAIN_MS;
    while (this.socks.some((s) => s.inflight > 0) && performance.now() < deadline) await new Promise<void>((res) => setTimeout(res, 10));
    clearInterval(this.sweep);
    for (const s of this.socks) {
      this.lost += s.inflight;
      s.inflight = 0;
      s.socket.close();
    }
    const hist: [number, number][] = [];
    for (let i = 0; i < this.hist.length; i++) if (this.hist[i]! > 0) hist.push([i, this.hist[i]!]);
    const ld = this.loopDelay;
    this.emit({
      ev: 'done',
      sent: this.sent,
      received: this.received,
      gaps: this.lost,
      stalls: 0,
      hist,
      loopDelayP99Ms: ld.count > 0 ? Math.max(0, ld.percentile(99) / 1e6 - LOOP_DELAY_RESOLUTION_MS) : 0,
      loopDelayMaxMs: ld.count > 0 ? Math.max(0, ld.max / 1e6 - LOOP_DELAY_RESOLUTION_MS) : 0,
      errors: this.errors,
    });
  }
}
