/**
 * Load-generator worker, forked through pool.ts by `derp bench` and `npm run bench` (commands in
 * messages.ts). Each throughput
 * pair is a sender and a receiver connection in this same process, so the timestamp in the payload
 * and the receive time come from one clock. Per event-loop turn every sender gets at most one socket
 * write carrying all the frames its window allows; receiving allocates nothing per packet.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { describeError } from '../errors.js';
import { FRAME_HEADER_LEN, FrameType, KEY_LEN, NodePrivateKey, encode } from '../protocol/index.js';
import { BenchConn, clientInfoFor, parseTarget, type Target } from './conn.js';
import { HIST_BUCKETS, HIST_BUCKET_US } from './histogram.js';
import { MIN_PAYLOAD, SEQ_OFF, TS_OFF, type WorkerCommand, type WorkerEvent } from './messages.js';
import { procOpenFilesLimit } from './proc.js';
import { runAttack, snapCanary, startCanary } from './flood-load.js';
import { StunLoad } from './stun-load.js';

/** A pair whose window stays full this long without a delivery is declared stalled and its window reset. */
const STALL_MS = 1000;
/** How long `stop` waits for in-flight packets before counting them as dropped. */
const DRAIN_MS = 2000;
/** Pacing tick for rate-limited runs (Node timers do not go below 1 ms). */
const PACE_TICK_MS = 1;
/** Send credit a rate-limited pair may bank, in windows (the window still caps what is in flight). */
const PACE_BURST_WINDOWS = 4;
/** A handshake run that has failed this often without one success is pointed at nothing: it stops. */
const HANDSHAKE_GIVE_UP_FAILURES = 200;
/** Keys each handshake loop rotates through, so a reconnect never races its own previous connection. */
const KEYS_PER_LOOP = 4;
/** Sampling resolution of the event-loop lag monitor. */
const LOOP_DELAY_RESOLUTION_MS = 5;

function send(ev: WorkerEvent): void {
  process.send?.(ev);
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

// ---------------------------------------------------------------- throughput

interface Pair {
  tx: BenchConn;
  rx: BenchConn;
  /** One whole SendPacket frame addressed to rx. */
  template: Buffer;
  /** Write buffers of `window` template copies, reused once a write completes; only stamps change. */
  free: Buffer[];
  inflight: number;
  sent: number;
  received: number;
  nextSeq: number;
  expectSeq: number;
  tokens: number;
  lastProgress: number;
  queued: boolean;
}

interface Run {
  pairs: Pair[];
  window: number;
  ratePerMs: number;
  sending: boolean;
  recording: boolean;
  marks: number;
  hist: Uint32Array;
  sent: number;
  received: number;
  gaps: number;
  stalls: number;
  errors: string[];
  lastRefill: number;
  timers: NodeJS.Timeout[];
  /** This worker's event-loop lag while recording: latency the generator itself adds. */
  loopDelay: ReturnType<typeof monitorEventLoopDelay>;
}

let run: Run | null = null;
const dirty: Pair[] = [];
let flushScheduled = false;

function scheduleFlush(): void {
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

function queue(p: Pair): void {
  if (!p.queued) {
    p.queued = true;
    dirty.push(p);
  }
}

function flush(): void {
  flushScheduled = false;
  const r = run;
  if (!r || !r.sending) {
    for (const p of dirty) p.queued = false;
    dirty.length = 0;
    return;
  }
  const now = performance.now();
  if (r.ratePerMs > 0) {
    const add = (now - r.lastRefill) * r.ratePerMs;
    r.lastRefill = now;
    // Credit capped at a few windows: late timer ticks do not lose rate, a stalled pair does not flood.
    for (const p of r.pairs) p.tokens = Math.min(r.window * PACE_BURST_WINDOWS, p.tokens + add);
  }
  for (const p of dirty) {
    p.queued = false;
    let n = r.window - p.inflight;
    if (r.ratePerMs > 0) n = Math.min(n, Math.floor(p.tokens));
    if (n <= 0 || p.tx.isClosed) continue;
    if (r.ratePerMs > 0) p.tokens -= n;
    const fl = p.template.length;
    const buf = p.free.pop() ?? batchBuffer(p.template, r.window);
    const dataOff = FRAME_HEADER_LEN + KEY_LEN;
    for (let i = 0, o = 0; i < n; i++, o += fl) {
      buf.writeDoubleLE(now, o + dataOff + TS_OFF);
      buf.writeUInt32LE(p.nextSeq, o + dataOff + SEQ_OFF);
      p.nextSeq = (p.nextSeq + 1) >>> 0;
    }
    if (p.inflight === 0) p.lastProgress = now;
    p.inflight += n;
    p.sent += n;
    r.sent += n;
    p.tx.write(n * fl === buf.length ? buf : buf.subarray(0, n * fl), () => p.free.push(buf));
  }
  dirty.length = 0;
}

function batchBuffer(template: Buffer, frames: number): Buffer {
  const b = Buffer.allocUnsafeSlow(template.length * frames);
  for (let o = 0; o < b.length; o += template.length) template.copy(b, o);
  return b;
}

function onReceive(r: Run, p: Pair, buf: Buffer, off: number): void {
  const d = off + KEY_LEN;
  const seq = buf.readUInt32LE(d + SEQ_OFF);
  let n = 1;
  if (seq !== p.expectSeq) {
    // Packets between the expected and this one never came (one TCP stream: no reordering).
    const skipped = (seq - p.expectSeq) >>> 0;
    if (skipped < 1 << 30) {
      r.gaps += skipped;
      n += skipped;
    }
  }
  p.expectSeq = (seq + 1) >>> 0;
  const now = performance.now();
  if (r.recording) {
    const b = Math.floor(((now - buf.readDoubleLE(d + TS_OFF)) * 1000) / HIST_BUCKET_US);
    r.hist[b < HIST_BUCKETS ? (b < 0 ? 0 : b) : HIST_BUCKETS - 1]!++;
  }
  p.received++;
  r.received++;
  p.inflight = Math.max(0, p.inflight - n);
  p.lastProgress = now;
  queue(p);
  scheduleFlush();
}

async function startThroughput(c: Extract<WorkerCommand, { cmd: 'throughput' }>): Promise<void> {
  const target = parseTarget(c.url, c.transport, c.tls);
  const size = Math.max(MIN_PAYLOAD, c.size);
  const r: Run = {
    pairs: [],
    window: c.window,
    ratePerMs: c.ratePerPair / 1000,
    sending: false,
    recording: false,
    marks: 0,
    hist: new Uint32Array(HIST_BUCKETS),
    sent: 0,
    received: 0,
    gaps: 0,
    stalls: 0,
    errors: [],
    lastRefill: 0,
    timers: [],
    loopDelay: monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS }),
  };
  run = r;
  const dials: Promise<Pair>[] = [];
  for (let i = 0; i < c.pairs; i++) {
    dials.push(
      (async () => {
        const txKey = NodePrivateKey.generate();
        const rxKey = NodePrivateKey.generate();
        const [tx, rx] = await Promise.all([BenchConn.dial(target, txKey), BenchConn.dial(target, rxKey)]);
        const p: Pair = {
          tx,
          rx,
          template: encode.sendPacket(rxKey.publicKey, Buffer.alloc(size)),
          free: [],
          inflight: 0,
          sent: 0,
          received: 0,
          nextSeq: 0,
          expectSeq: 0,
          tokens: 0,
          lastProgress: 0,
          queued: false,
        };
        rx.scanner.onFrame = (type, buf, off, len) => {
          if (type === FrameType.RecvPacket && len >= KEY_LEN + MIN_PAYLOAD) onReceive(r, p, buf, off);
        };
        const lost = (which: string) => (err: Error | undefined) => {
          if (r.errors.length < 5) r.errors.push(`pair ${i} ${which} closed${err ? `: ${describeError(err)}` : ''}`);
        };
        tx.onClose = lost('sender');
        rx.onClose = lost('receiver');
        return p;
      })(),
    );
  }
  const settled = await Promise.allSettled(dials);
  for (const s of settled) if (s.status === 'fulfilled') r.pairs.push(s.value);
  const failed = settled.filter((s) => s.status === 'rejected');
  const firstError = failed.length > 0 ? describeError((failed[0] as PromiseRejectedResult).reason) : undefined;
  const ports = r.pairs.map((p): [number, number] => [p.tx.localPort ?? 0, p.rx.localPort ?? 0]);
  send({ ev: 'ready', opened: r.pairs.length, failed: failed.length, firstError, ports });
}

function go(r: Run): void {
  r.sending = true;
  r.lastRefill = performance.now();
  for (const p of r.pairs) {
    p.lastProgress = r.lastRefill;
    queue(p);
  }
  scheduleFlush();
  if (r.ratePerMs > 0) {
    r.timers.push(
      setInterval(() => {
        for (const p of r.pairs) queue(p);
        scheduleFlush();
      }, PACE_TICK_MS),
    );
  }
  r.timers.push(
    setInterval(() => {
      const now = performance.now();
      for (const p of r.pairs) {
        if (p.inflight > 0 && now - p.lastProgress > STALL_MS) {
          r.stalls++;
          p.inflight = 0;
          p.lastProgress = now;
          queue(p);
          scheduleFlush();
        }
      }
    }, STALL_MS / 4),
  );
}

function mark(r: Run): void {
  r.marks++;
  r.recording = r.marks === 1;
  if (r.recording) r.loopDelay.enable();
  else r.loopDelay.disable();
  peek(r);
}

function peek(r: Run): void {
  send({ ev: 'mark', t: performance.now(), sent: r.sent, received: r.received, cpuUs: cpuUs() });
}

async function stop(r: Run): Promise<void> {
  r.sending = false;
  for (const t of r.timers) clearInterval(t);
  const deadline = performance.now() + DRAIN_MS;
  while (r.received + r.gaps < r.sent && performance.now() < deadline) {
    await new Promise<void>((res) => setTimeout(res, 10));
  }
  for (const p of r.pairs) {
    p.tx.destroy();
    p.rx.destroy();
  }
  const hist: [number, number][] = [];
  for (let i = 0; i < r.hist.length; i++) if (r.hist[i]! > 0) hist.push([i, r.hist[i]!]);
  const ld = r.loopDelay;
  send({
    ev: 'done',
    sent: r.sent,
    received: r.received,
    gaps: r.gaps,
    stalls: r.stalls,
    hist,
    // The histogram records whole timer intervals; the lag is what exceeds the resolution.
    loopDelayP99Ms: ld.count > 0 ? Math.max(0, ld.percentile(99) / 1e6 - LOOP_DELAY_RESOLUTION_MS) : 0,
    loopDelayMaxMs: ld.count > 0 ? Math.max(0, ld.max / 1e6 - LOOP_DELAY_RESOLUTION_MS) : 0,
    errors: r.errors,
  });
  run = null;
}

// ---------------------------------------------------------------- idle connections

let idleConns: BenchConn[] = [];

async function openIdle(c: Extract<WorkerCommand, { cmd: 'idle' }>): Promise<void> {
  const target = parseTarget(c.url, c.transport, c.tls);
  let next = 0;
  let failed = 0;
  let firstError: string | undefined;
  // Fixed concurrency: the server's accept backlog is finite, and TLS handshakes are CPU-bound.
  const worker = async (): Promise<void> => {
    while (next < c.count) {
      next++;
      try {
        const conn = await BenchConn.dial(target, NodePrivateKey.generate(), { verifyServerInfo: false });
        idleConns.push(conn);
      } catch (err) {
        failed++;
        firstError ??= describeError(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(c.concurrency, c.count) }, worker));
  send({ ev: 'ready', opened: idleConns.length, failed, firstError, openFiles: procOpenFilesLimit('self') });
}

function closeIdle(): void {
  for (const c of idleConns) c.destroy();
  idleConns = [];
  send({ ev: 'closed' });
}

// ---------------------------------------------------------------- handshakes/s

async function handshakes(c: Extract<WorkerCommand, { cmd: 'handshakes' }>): Promise<void> {
  const target: Target = parseTarget(c.url, c.transport, c.tls);
  const maxCount = c.maxCount ?? Infinity;
  const cpu0 = cpuUs();
  const t0 = performance.now();
  const end = t0 + c.durationMs;
  let count = 0;
  let failed = 0;
  let firstError: string | undefined;
  // Attempts begun, so concurrent loops together stop at maxCount.
  let started = 0;
  const loop = async (): Promise<void> => {
    // ClientInfo frames are sealed once per key and reused, and ServerInfo is opened only on a key's
    // first use: the generator's CPU goes to connections, not to repeating its own crypto.
    const keys = Array.from({ length: KEYS_PER_LOOP }, () => ({ key: NodePrivateKey.generate(), frame: null as Buffer | null, serverKey: null as Buffer | null }));
    for (let i = 0; performance.now() < end && started < maxCount; i++) {
      if (count === 0 && failed >= HANDSHAKE_GIVE_UP_FAILURES) break;
      started++;
      const k = keys[i % KEYS_PER_LOOP]!;
      try {
        const conn = await BenchConn.dial(target, k.key, {
          verifyServerInfo: k.frame === null,
          clientInfo: (sk) => {
            if (!k.frame || !k.serverKey || !k.serverKey.equals(sk)) {
              k.frame = clientInfoFor(k.key, sk);
              k.serverKey = sk;
            }
            return k.frame;
          },
        });
        conn.destroy();
        count++;
      } catch (err) {
        failed++;
        firstError ??= describeError(err);
      }
    }
  };
  await Promise.all(Array.from({ length: c.concurrency }, loop));
  send({ ev: 'handshakes', count, failed, elapsedMs: performance.now() - t0, cpuUs: cpuUs() - cpu0, firstError });
}

// ---------------------------------------------------------------- STUN Binding load (stun-load.ts)

let stunLoad: StunLoad | null = null;

async function startStun(c: Extract<WorkerCommand, { cmd: 'stun' }>): Promise<void> {
  stunLoad = await StunLoad.open(c, send);
  send({ ev: 'ready', opened: c.sockets, failed: 0 });
}

// ---------------------------------------------------------------- dispatch

async function handle(c: WorkerCommand): Promise<void> {
  switch (c.cmd) {
    case 'throughput':
      return startThroughput(c);
    case 'go':
      if (run) go(run);
      else stunLoad?.go();
      return;
    case 'mark':
      if (run) mark(run);
      else stunLoad?.mark();
      return;
    case 'peek':
      if (run) peek(run);
      else send({ ev: 'error', message: 'peek without a throughput run' });
      return;
    case 'stop':
      if (run) await stop(run);
      else if (stunLoad) {
        const l = stunLoad;
        stunLoad = null;
        await l.stop();
      }
      return;
    case 'stun':
      return startStun(c);
    case 'idle':
      return openIdle(c);
    case 'close':
      return closeIdle();
    case 'handshakes':
      return handshakes(c);
    case 'canary':
      await startCanary(c);
      send({ ev: 'ready', opened: 2, failed: 0 });
      return;
    case 'canary-snap':
      send(await snapCanary(false));
      return;
    case 'canary-stop':
      send(await snapCanary(true));
      return;
    case 'attack':
      send(await runAttack(c, send));
      return;
    case 'exit':
      process.disconnect?.();
      process.exit(0);
  }
}

process.on('message', (m: WorkerCommand) => {
  handle(m).catch((err: unknown) => send({ ev: 'error', message: describeError(err) }));
});
