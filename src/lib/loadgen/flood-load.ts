/**
 * Worker side of the flood scenario (bench/flood.ts): the canary pair, and the attacks, each bounded by
 * a duration and a count. Runs inside a generator worker (worker.ts dispatches to it).
 */
import { connect as netConnect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { describeError } from '../errors.js';
import { FRAME_HEADER_LEN, FrameType, KEY_LEN, NodePrivateKey, buildUpgradeRequest, encode } from '../protocol/index.js';
import { randomBytes } from 'node:crypto';
import { BenchConn, clientInfoFor, parseTarget, type Target } from './conn.js';
import { HIST_BUCKETS, HIST_BUCKET_US } from './histogram.js';
import { sleep } from './proc.js';
import { MIN_PAYLOAD, SEQ_OFF, TS_OFF, type AttackKind, type AttackReport, type CanaryReport, type WorkerCommand, type WorkerEvent } from './messages.js';

/** Pacing tick (Node timers do not go below 1 ms). */
const PACE_TICK_MS = 1;
/** Credit a direction may bank after a late tick, ms of its rate. */
const PACE_MAX_CREDIT_MS = 20;
/** How long the final report waits for in-flight canary packets. */
const CANARY_DRAIN_MS = 2000;
/** Attack loops in flight (connection and handshake floods), and the slowloris opening concurrency. */
const ATTACK_CONCURRENCY = 64;
/** SendPacket frames per write of the blaster and the absent-key sender. */
const BLAST_BATCH = 32;
const BLAST_SIZE = 1200;
const ABSENT_SIZE = 64;
/** Per-connect budget of one attack connection: a relay that stops accepting must not hang the bench. */
const ATTACK_CONNECT_TIMEOUT_MS = 5000;
/** A refused probe tries again after this long. */
const PROBE_RETRY_MS = 50;
/** Distinct keys of the handshake flood. */
const THROWAWAY_KEYS = 4096;

interface Direction {
  tx: BenchConn;
  dst: Buffer;
  template: Buffer;
  tokens: number;
  nextSeq: number;
  expectSeq: number;
}

class Canary {
  private hist = new Uint32Array(HIST_BUCKETS);
  private sent = 0;
  private received = 0;
  private gaps = 0;
  private readonly errors: string[] = [];
  private last = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private lastSnap = { sent: 0, received: 0, gaps: 0 };

  private constructor(
    private readonly a: BenchConn,
    private readonly b: BenchConn,
    private readonly dirs: Direction[],
    private readonly ratePerMs: number,
  ) {}

  static async open(url: string, rate: number, size: number): Promise<Canary> {
    const target = parseTarget(url);
    const ka = NodePrivateKey.generate();
    const kb = NodePrivateKey.generate();
    const [a, b] = await Promise.all([BenchConn.dial(target, ka), BenchConn.dial(target, kb)]);
    const payload = Buffer.alloc(Math.max(MIN_PAYLOAD, size));
    const dirs: Direction[] = [
      { tx: a, dst: kb.publicKey, template: encode.sendPacket(kb.publicKey, payload), tokens: 0, nextSeq: 0, expectSeq: 0 },
      { tx: b, dst: ka.publicKey, template: encode.sendPacket(ka.publicKey, payload), tokens: 0, nextSeq: 0, expectSeq: 0 },
    ];
    const c = new Canary(a, b, dirs, rate / 1000);
    // a's packets arrive at b and the other way round.
    b.scanner.onFrame = (type, buf, off, len) => {
      if (type === FrameType.RecvPacket && len >= KEY_LEN + MIN_PAYLOAD) c.onReceive(dirs[0]!, buf, off);
    };
    a.scanner.onFrame = (type, buf, off, len) => {
      if (type === FrameType.RecvPacket && len >= KEY_LEN + MIN_PAYLOAD) c.onReceive(dirs[1]!, buf, off);
    };
    const lost = (which: string) => (err: Error | undefined) => {
      if (c.errors.length < 5) c.errors.push(`canary ${which} closed${err ? `: ${describeError(err)}` : ''}`);
    };
    a.onClose = lost('a');
    b.onClose = lost('b');
    c.timer = setInterval(() => c.tick(), PACE_TICK_MS);
    return c;
  }

  private tick(): void {
    const now = performance.now();
    const add = (now - this.last) * this.ratePerMs;
    this.last = now;
    for (const d of this.dirs) {
      d.tokens = Math.min(this.ratePerMs * PACE_MAX_CREDIT_MS, d.tokens + add);
      const n = Math.floor(d.tokens);
      if (n <= 0 || d.tx.isClosed) continue;
      d.tokens -= n;
      const fl = d.template.length;
      const buf = Buffer.allocUnsafe(n * fl);
      for (let i = 0, o = 0; i < n; i++, o += fl) {
        d.template.copy(buf, o);
        buf.writeDoubleLE(now, o + FRAME_HEADER_LEN + KEY_LEN + TS_OFF);
        buf.writeUInt32LE(d.nextSeq, o + FRAME_HEADER_LEN + KEY_LEN + SEQ_OFF);
        d.nextSeq = (d.nextSeq + 1) >>> 0;
      }
      this.sent += n;
      d.tx.write(buf);
    }
  }

  private onReceive(d: Direction, buf: Buffer, off: number): void {
    const p = off + KEY_LEN;
    const seq = buf.readUInt32LE(p + SEQ_OFF);
    if (seq !== d.expectSeq) {
      const skipped = (seq - d.expectSeq) >>> 0;
      if (skipped < 1 << 30) this.gaps += skipped;
    }
    d.expectSeq = (seq + 1) >>> 0;
    const b = Math.floor(((performance.now() - buf.readDoubleLE(p + TS_OFF)) * 1000) / HIST_BUCKET_US);
    this.hist[b < HIST_BUCKETS ? (b < 0 ? 0 : b) : HIST_BUCKETS - 1]!++;
    this.received++;
  }

  /** Counters and latency since the previous snapshot; `final` stops sending and waits for what is in flight. */
  async snapshot(final: boolean): Promise<CanaryReport> {
    if (final) {
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      const deadline = performance.now() + CANARY_DRAIN_MS;
      while (this.received + this.gaps < this.sent && performance.now() < deadline) await new Promise<void>((res) => setTimeout(res, 10));
    }
    const hist: [number, number][] = [];
    for (let i = 0; i < this.hist.length; i++) if (this.hist[i]! > 0) hist.push([i, this.hist[i]!]);
    this.hist = new Uint32Array(HIST_BUCKETS);
    const r: CanaryReport = {
      ev: 'canary',
      sent: this.sent - this.lastSnap.sent,
      received: this.received - this.lastSnap.received,
      gaps: this.gaps - this.lastSnap.gaps,
      // After the final drain whatever is still missing is lost.
      undelivered: final ? this.sent - this.received - this.gaps : 0,
      hist,
      errors: [...this.errors],
    };
    this.lastSnap = { sent: this.sent, received: this.received, gaps: this.gaps };
    if (final) {
      this.a.destroy();
      this.b.destroy();
    }
    return r;
  }
}

let canary: Canary | null = null;

export async function startCanary(c: Extract<WorkerCommand, { cmd: 'canary' }>): Promise<void> {
  canary = await Canary.open(c.url, c.rate, c.size);
}

export async function snapCanary(final: boolean): Promise<CanaryReport> {
  if (!canary) return { ev: 'canary', sent: 0, received: 0, gaps: 0, undelivered: 0, hist: [], errors: ['no canary running'] };
  const r = await canary.snapshot(final);
  if (final) canary = null;
  return r;
}

// ---------------------------------------------------------------- attacks

/**
 * Attackers connect from 127.0.0.2 when the target is on 127.0.0.1, so per-IP limits can tell them from
 * the canary (which stays on 127.0.0.1), as an attacker's address differs from its victims' on the internet.
 */
function attackerSource(t: Target): string | undefined {
  return t.host === '127.0.0.1' ? '127.0.0.2' : undefined;
}

/** A TCP connection to the target that resolves once connected (or rejects within the budget). */
function tcpConnect(t: Target): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: t.host, port: t.port, localAddress: attackerSource(t) });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect took over ${ATTACK_CONNECT_TIMEOUT_MS} ms`));
    }, ATTACK_CONNECT_TIMEOUT_MS);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

interface Tally {
  count: number;
  failed: number;
  firstError?: string;
  /** When the attack's clock started (after any preparation); its end is this + the duration. */
  started: number;
  /** Tells the orchestrator the clock started (it then starts the canary's window); idempotent. */
  announce: () => void;
}

function startClock(r: Tally, durationMs: number): number {
  r.started = performance.now();
  r.announce();
  return r.started + durationMs;
}

function fail(t: Tally, err: unknown): void {
  t.failed++;
  t.firstError ??= describeError(err);
}

async function loops(n: number, end: number, body: () => Promise<void>, t: Tally): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (performance.now() < end) {
        try {
          await body();
          t.count++;
        } catch (err) {
          fail(t, err);
        }
      }
    }),
  );
}

/** Connect, close, as fast as the loop allows, from 127.0.0.1. */
async function connectFlood(t: Target, durationMs: number, r: Tally): Promise<string> {
  const end = startClock(r, durationMs);
  await loops(
    ATTACK_CONCURRENCY,
    end,
    async () => {
      (await tcpConnect(t)).destroy();
    },
    r,
  );
  return `${ATTACK_CONCURRENCY} loops connect+close`;
}

/** `count` connections that send an unfinished HTTP head and hold until the end. */
async function slowloris(t: Target, durationMs: number, count: number, r: Tally): Promise<string> {
  const end = startClock(r, durationMs);
  const socks: Socket[] = [];
  let closedByServer = 0;
  let ending = false;
  let next = 0;
  const partial = buildUpgradeRequest({ host: `${t.host}:${t.port}`, path: t.path }).split('\r\n').slice(0, 2).join('\r\n') + '\r\n';
  await Promise.all(
    Array.from({ length: ATTACK_CONCURRENCY }, async () => {
      while (next < count && performance.now() < end) {
        next++;
        try {
          const s = await tcpConnect(t);
          s.on('error', () => undefined);
          s.on('close', () => {
            if (!ending) closedByServer++;
          });
          // Flowing, so the relay's 400 and FIN are read: a paused socket never sees the end, never closes.
          s.resume();
          s.write(partial);
          socks.push(s);
          r.count++;
        } catch (err) {
          fail(r, err);
        }
      }
    }),
  );
  const opened = socks.length;
  while (performance.now() < end) await new Promise<void>((res) => setTimeout(res, 50));
  const stillOpen = socks.length - closedByServer;
  ending = true;
  for (const s of socks.splice(0)) s.destroy();
  return `${opened} opened, each sent an unfinished GET /derp head; ${closedByServer} closed by the relay, ${stillOpen} still open at the end`;
}

/**
 * Full handshakes with throwaway keys: THROWAWAY_KEYS keys and their ClientInfo frames made before the
 * clock starts (a key pair and a seal cost the generator more than the handshake costs the relay), then
 * cycled, so the relay sees thousands of distinct keys and no key twice within THROWAWAY_KEYS handshakes.
 */
async function handshakeFlood(t: Target, durationMs: number, r: Tally): Promise<string> {
  const probe = await BenchConn.dial(t, NodePrivateKey.generate(), { timeoutMs: ATTACK_CONNECT_TIMEOUT_MS });
  const serverKey = probe.serverKey!;
  probe.destroy();
  const keys = Array.from({ length: THROWAWAY_KEYS }, () => {
    const key = NodePrivateKey.generate();
    return { key, frame: clientInfoFor(key, serverKey) };
  });
  const end = startClock(r, durationMs);
  let next = 0;
  await loops(
    ATTACK_CONCURRENCY,
    end,
    async () => {
      const k = keys[next++ % keys.length]!;
      const c = await BenchConn.dial(t, k.key, { verifyServerInfo: false, clientInfo: () => k.frame, timeoutMs: ATTACK_CONNECT_TIMEOUT_MS, localAddress: attackerSource(t) });
      c.destroy();
    },
    r,
  );
  return `${ATTACK_CONCURRENCY} loops over ${THROWAWAY_KEYS.toLocaleString('en-US')} throwaway keys (made before the clock started)`;
}

/** One client sending as fast as TCP allows, to a connected peer that never reads and to itself. */
async function blast(t: Target, durationMs: number, r: Tally): Promise<string> {
  const me = NodePrivateKey.generate();
  const sinkKey = NodePrivateKey.generate();
  const sink = await BenchConn.dial(t, sinkKey, { localAddress: attackerSource(t) });
  sink.pauseReading();
  const tx = await BenchConn.dial(t, me, { localAddress: attackerSource(t) });
  let echoed = 0;
  tx.scanner.onFrame = (type) => {
    if (type === FrameType.RecvPacket) echoed++;
  };
  const batch = (dst: Buffer): Buffer => {
    const f = encode.sendPacket(dst, Buffer.alloc(BLAST_SIZE));
    return Buffer.concat(Array.from({ length: BLAST_BATCH }, () => f));
  };
  const toSink = batch(sinkKey.publicKey);
  const toSelf = batch(me.publicKey);
  const end = startClock(r, durationMs);
  for (let i = 0; performance.now() < end && !tx.isClosed; i++) {
    await tx.writeBackpressured(i % 2 === 0 ? toSink : toSelf);
    r.count += BLAST_BATCH;
  }
  const closed = tx.isClosed;
  tx.destroy();
  sink.destroy();
  return `${BLAST_SIZE} B packets, half to a peer that does not read, half to itself (${echoed.toLocaleString('en-US')} came back)${closed ? '; the relay closed the blaster' : ''}`;
}

/** One client sending to `keys` keys nobody holds. */
async function absent(t: Target, durationMs: number, keys: number, r: Tally): Promise<string> {
  const tx = await BenchConn.dial(t, NodePrivateKey.generate(), { localAddress: attackerSource(t) });
  const frames = Array.from({ length: keys }, () => encode.sendPacket(randomBytes(KEY_LEN), Buffer.alloc(ABSENT_SIZE)));
  const end = startClock(r, durationMs);
  for (let i = 0; performance.now() < end && !tx.isClosed; i += BLAST_BATCH) {
    const parts: Buffer[] = [];
    for (let j = 0; j < BLAST_BATCH; j++) parts.push(frames[(i + j) % keys]!);
    await tx.writeBackpressured(Buffer.concat(parts));
    r.count += BLAST_BATCH;
  }
  const closed = tx.isClosed;
  tx.destroy();
  return `${keys.toLocaleString('en-US')} distinct absent keys, ${ABSENT_SIZE} B packets${closed ? '; the relay closed the sender' : ''}`;
}

/**
 * One ordinary handshake: is the relay still serving? A fresh client after an attack, as a real one behaves: it retries a refused or reset connection
 * (the relay may have closed its listener for the accept rate) until ATTACK_CONNECT_TIMEOUT_MS is up.
 */
async function probe(t: Target, r: Tally): Promise<string> {
  const t0 = performance.now();
  let attempts = 0;
  for (;;) {
    attempts++;
    const left = ATTACK_CONNECT_TIMEOUT_MS - (performance.now() - t0);
    try {
      const c = await BenchConn.dial(t, NodePrivateKey.generate(), { timeoutMs: Math.max(1, left), localAddress: attackerSource(t) });
      c.destroy();
      r.count++;
      break;
    } catch (err) {
      if (performance.now() - t0 + PROBE_RETRY_MS >= ATTACK_CONNECT_TIMEOUT_MS) {
        fail(r, err);
        break;
      }
      await sleep(PROBE_RETRY_MS);
    }
  }
  return `handshake in ${(performance.now() - t0).toFixed(1)} ms${attempts > 1 ? ` (${attempts} attempts)` : ''}`;
}

/**
 * Runs one attack. Except for 'probe', an 'attack-started' event goes out once its preparation (keys,
 * frames, connections) is done and the clock starts, always before the 'attack' report.
 */
export async function runAttack(c: Extract<WorkerCommand, { cmd: 'attack' }>, send: (ev: WorkerEvent) => void): Promise<AttackReport> {
  const t = parseTarget(c.url);
  let announced = c.kind === 'probe';
  const announce = (): void => {
    if (announced) return;
    announced = true;
    send({ ev: 'attack-started' });
  };
  const r: Tally = { count: 0, failed: 0, started: performance.now(), announce };
  const d = c.durationMs;
  const kind: AttackKind = c.kind;
  let detail: string;
  try {
    switch (kind) {
      case 'connect':
        detail = await connectFlood(t, d, r);
        break;
      case 'slowloris':
        detail = await slowloris(t, d, c.count, r);
        break;
      case 'handshake':
        detail = await handshakeFlood(t, d, r);
        break;
      case 'blast':
        detail = await blast(t, d, r);
        break;
      case 'absent':
        detail = await absent(t, d, c.count, r);
        break;
      case 'probe':
        detail = await probe(t, r);
        break;
    }
  } catch (err) {
    fail(r, err);
    detail = 'attack setup failed';
  }
  announce();
  return { ev: 'attack', kind, count: r.count, failed: r.failed, elapsedMs: performance.now() - r.started, detail, firstError: r.firstError };
}
