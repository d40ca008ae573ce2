/**
 * The soak's hostile clients, each kept up for the whole run and each at a bounded rate (the soak looks
 * for slow leaks, not for what a flood costs: that is `npm run bench`'s flood scenario):
 * - slowloris: SLOWLORIS_CONNS connections that send half an upgrade head and wait; the relay closes
 *   them at its handshake deadline and each is reopened at once;
 * - absent: one client sending to ABSENT_KEYS keys nobody holds;
 * - non-reader: a client that stops reading while another sends to it; when the relay closes it (write
 *   deadline) the sender hears PeerGone and a new non-reader takes its place.
 * They reuse the load generator's connection (src/lib/loadgen/conn.ts).
 */
import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { describeError } from '../src/lib/errors.js';
import { BenchConn, parseTarget, sleep, type Target } from '../src/lib/loadgen/index.js';
import { FrameType, KEY_LEN, NodePrivateKey, buildUpgradeRequest, encode } from '../src/lib/protocol/index.js';

export const SLOWLORIS_CONNS = 20;
export const ABSENT_KEYS = 1000;
/** Packets per tick of the absent-key sender and of the non-reader's sender; one tick every TICK_MS. */
const ABSENT_PER_TICK = 5;
const NONREADER_PER_TICK = 5;
const TICK_MS = 10;
const ABSENT_SIZE = 64;
const NONREADER_SIZE = 1200;
/** Pause before reopening after a failure, so a refusing relay is not hammered in a tight loop. */
const RETRY_MS = 500;
/** Connections the hostile clients hold at most at one instant (for the descriptor bound). */
export const HOSTILE_MAX_CONNS = SLOWLORIS_CONNS + 1 + 2;

export interface HostileReport {
  slowloris: { opened: number; closedByRelay: number };
  absent: { sent: number; reconnects: number };
  nonReader: { sent: number; closedByRelay: number };
  errors: string[];
}

export class Hostile {
  private stopped = false;
  private readonly tasks: Promise<void>[] = [];
  private readonly open = new Set<{ destroy(): void }>();
  readonly report: HostileReport = { slowloris: { opened: 0, closedByRelay: 0 }, absent: { sent: 0, reconnects: 0 }, nonReader: { sent: 0, closedByRelay: 0 }, errors: [] };
  private readonly target: Target;

  constructor(url: string) {
    this.target = parseTarget(url, undefined, { insecure: true });
  }

  start(): void {
    for (let i = 0; i < SLOWLORIS_CONNS; i++) this.tasks.push(this.loop(() => this.slowloris()));
    this.tasks.push(this.loop(() => this.absent()));
    this.tasks.push(this.loop(() => this.nonReader()));
  }

  async stop(): Promise<HostileReport> {
    this.stopped = true;
    for (const c of this.open) c.destroy();
    await Promise.all(this.tasks);
    return this.report;
  }

  private note(err: unknown): void {
    if (this.report.errors.length < 5) this.report.errors.push(describeError(err));
  }

  private async loop(body: () => Promise<void>): Promise<void> {
    while (!this.stopped) {
      try {
        await body();
      } catch (err) {
        if (this.stopped) return;
        this.note(err);
        await sleep(RETRY_MS);
      }
    }
  }

  /** Resolves when the stop() is called or `until` resolves. */
  private hold(until: Promise<void>): Promise<void> {
    return new Promise<void>((res) => {
      const t = setInterval(() => {
        if (this.stopped) {
          clearInterval(t);
          res();
        }
      }, 100);
      void until.then(() => {
        clearInterval(t);
        res();
      });
    });
  }

  private async slowloris(): Promise<void> {
    const t = this.target;
    const head = buildUpgradeRequest({ host: `${t.host}:${t.port}`, path: t.path }).split('\r\n').slice(0, 2).join('\r\n') + '\r\n';
    const s: Socket = netConnect({ host: t.host, port: t.port });
    this.open.add(s);
    const closed = new Promise<void>((res) => s.once('close', () => res()));
    s.on('error', () => undefined);
    // Flowing, so the relay's close (its 400 and FIN) is seen: a paused socket never emits 'close'.
    s.resume();
    s.once('connect', () => {
      this.report.slowloris.opened++;
      s.write(head);
    });
    await this.hold(closed);
    this.open.delete(s);
    if (!this.stopped) this.report.slowloris.closedByRelay++;
    s.destroy();
  }

  private async absent(): Promise<void> {
    const c = await BenchConn.dial(this.target, NodePrivateKey.generate());
    this.open.add(c);
    const frames = Array.from({ length: ABSENT_KEYS }, () => encode.sendPacket(randomBytes(KEY_LEN), Buffer.alloc(ABSENT_SIZE)));
    let i = 0;
    while (!this.stopped && !c.isClosed) {
      const batch = Buffer.concat(Array.from({ length: ABSENT_PER_TICK }, () => frames[i++ % ABSENT_KEYS]!));
      await c.writeBackpressured(batch);
      this.report.absent.sent += ABSENT_PER_TICK;
      await sleep(TICK_MS);
    }
    this.open.delete(c);
    c.destroy();
    if (!this.stopped) this.report.absent.reconnects++;
  }

  private async nonReader(): Promise<void> {
    const sinkKey = NodePrivateKey.generate();
    const sink = await BenchConn.dial(this.target, sinkKey);
    sink.pauseReading();
    this.open.add(sink);
    let tx: BenchConn;
    try {
      tx = await BenchConn.dial(this.target, NodePrivateKey.generate());
    } catch (err) {
      this.open.delete(sink);
      sink.destroy();
      throw err;
    }
    this.open.add(tx);
    let gone = false;
    tx.scanner.onFrame = (type, buf, off, len) => {
      if (type === FrameType.PeerGone && len >= KEY_LEN && buf.compare(sinkKey.publicKey, 0, KEY_LEN, off, off + KEY_LEN) === 0) gone = true;
    };
    const frame = encode.sendPacket(sinkKey.publicKey, Buffer.alloc(NONREADER_SIZE));
    const batch = Buffer.concat(Array.from({ length: NONREADER_PER_TICK }, () => frame));
    while (!this.stopped && !gone && !tx.isClosed) {
      await tx.writeBackpressured(batch);
      this.report.nonReader.sent += NONREADER_PER_TICK;
      await sleep(TICK_MS);
    }
    if (gone) this.report.nonReader.closedByRelay++;
    for (const c of [sink, tx]) {
      this.open.delete(c);
      c.destroy();
    }
  }
}
