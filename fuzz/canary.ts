/** The well-behaved pair that relays through the fuzzing: A→B and B→A at a fixed rate, every packet numbered. */
import { BenchConn, parseTarget } from '../src/lib/loadgen/index.js';
import { FrameType, KEY_LEN, NodePrivateKey, encode } from '../src/lib/protocol/index.js';

const TAG = 0x434e5259; // "CNRY"
const PAYLOAD = 64;

export interface CanaryReport {
  sent: number;
  received: number;
  lost: number;
  /** Out of order or duplicated (by sequence number). */
  misordered: number;
  /** Packets from other senders (the fuzzer aims some at the canary): ignored, counted. */
  foreign: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The canary's connections closed under it. */
  disconnects: number;
}

class Side {
  sent = 0;
  received = 0;
  misordered = 0;
  foreign = 0;
  disconnects = 0;
  next = 0;
  readonly lat: number[] = [];
  constructor(
    readonly conn: BenchConn,
    readonly key: NodePrivateKey,
  ) {}
}

export class Canary {
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly a: Side,
    private readonly b: Side,
  ) {}

  get publicKey(): Buffer {
    return this.b.key.publicKey;
  }

  static async start(url: string, ratePerSecond: number): Promise<Canary> {
    const t = parseTarget(url);
    const ka = NodePrivateKey.generate();
    const kb = NodePrivateKey.generate();
    const [ca, cb] = await Promise.all([BenchConn.dial(t, ka), BenchConn.dial(t, kb)]);
    const c = new Canary(new Side(ca, ka), new Side(cb, kb));
    c.listen(c.a, c.b);
    c.listen(c.b, c.a);
    // Each side sends one packet per tick; 2 sides → ratePerSecond in total.
    c.timer = setInterval(() => {
      c.send(c.a, c.b);
      c.send(c.b, c.a);
    }, Math.max(1, Math.round(2000 / ratePerSecond)));
    return c;
  }

  private listen(me: Side, peer: Side): void {
    me.conn.onClose = () => me.disconnects++;
    me.conn.scanner.onFrame = (type, buf, off, len) => {
      if (type !== FrameType.RecvPacket) return;
      const ours = len === KEY_LEN + PAYLOAD && buf.compare(peer.key.publicKey, 0, KEY_LEN, off, off + KEY_LEN) === 0 && buf.readUInt32BE(off + KEY_LEN) === TAG;
      if (!ours) {
        me.foreign++;
        return;
      }
      const seq = buf.readUInt32BE(off + KEY_LEN + 4);
      const at = buf.readDoubleBE(off + KEY_LEN + 8);
      if (seq !== me.next) me.misordered++;
      me.next = seq + 1;
      me.received++;
      me.lat.push(performance.now() - at);
    };
  }

  private send(from: Side, to: Side): void {
    if (from.conn.isClosed) return;
    const p = Buffer.alloc(PAYLOAD);
    p.writeUInt32BE(TAG, 0);
    p.writeUInt32BE(from.sent, 4);
    p.writeDoubleBE(performance.now(), 8);
    from.sent++;
    from.conn.write(encode.sendPacket(to.key.publicKey, p));
  }

  /** Stops sending, waits (bounded) for what is in flight, closes, reports. */
  async stop(drainMs = 3000): Promise<CanaryReport> {
    if (this.timer !== null) clearInterval(this.timer);
    const deadline = Date.now() + drainMs;
    const done = (): boolean => this.b.received >= this.a.sent && this.a.received >= this.b.sent;
    while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.a.conn.destroy();
    this.b.conn.destroy();
    const lat = [...this.a.lat, ...this.b.lat].sort((x, y) => x - y);
    const q = (p: number): number => (lat.length === 0 ? 0 : lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!);
    const sent = this.a.sent + this.b.sent;
    const received = this.a.received + this.b.received;
    return {
      sent,
      received,
      lost: sent - received,
      misordered: this.a.misordered + this.b.misordered,
      foreign: this.a.foreign + this.b.foreign,
      p50Ms: round(q(0.5)),
      p99Ms: round(q(0.99)),
      maxMs: round(lat.at(-1) ?? 0),
      disconnects: this.a.disconnects + this.b.disconnects,
    };
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
