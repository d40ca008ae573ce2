/**
 * The live fuzzer: hostile cases against a running relay with bounded concurrency, a canary pair
 * relaying throughout, and the relay's own counters compared with what the fuzzer did.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { procAlive, procRssKiB } from '../src/lib/loadgen/index.js';
import { NodePrivateKey, PROTOCOL_VERSION, buildClientInfoFrame, parseNodePublic } from '../src/lib/protocol/index.js';
import { Canary, type CanaryReport } from './canary.js';
import { FAMILIES, makeCase, type CaseContext, type Family, type FuzzCase } from './cases.js';

export interface FuzzTarget {
  /** The relay's DERP URL (http://host:port/derp). */
  url: string;
  pid: number;
  publicKey: string;
  stunPort: number | null;
  /** Its /metrics; without it the counted-close checks are skipped (and say so). */
  metricsUrl: string | null;
  /** Error lines of the relay's log so far (a live array), when the fuzzer started it. */
  errors?: readonly string[];
  /** A full GC in the relay, when the fuzzer started it with its inspector: memory is judged after one. */
  gc?: () => Promise<void>;
  /** Returns the allocator's free memory to the OS (glibc malloc_trim); false when it cannot. */
  trim?: () => Promise<boolean>;
}

export interface FuzzOptions {
  cases: number;
  /** Stop launching cases after this long, whatever `cases` says. */
  seconds?: number;
  seed: number;
  concurrency?: number;
  families?: readonly Family[];
  /** Every n-th case runs alone with the counters read before and after it (0 = never). */
  auditEvery?: number;
  caseTimeoutMs?: number;
  /** How long a case without a probe waits for the relay before it half-closes. */
  quietMs?: number;
  canaryRate?: number;
  /** Wait after the run before RSS is read again. */
  settleMs?: number;
  onProgress?: (p: { done: number; elapsedMs: number; findings: number }) => void;
}

export type Outcome = 'relay-closed' | 'closed-after-fin' | 'goodbye' | 'tolerated' | 'timeout' | 'sent';

export interface Finding {
  kind: 'crash' | 'hang' | 'server-error-log' | 'canary-loss' | 'canary-disconnect' | 'uncounted-close' | 'no-trace' | 'accounting';
  detail: string;
  family?: Family;
  seed?: number;
  index?: number;
  /** Every write of the case, hex, in order (the WebSocket upgrade first when there is one). */
  hex?: string[];
}

export interface Memory {
  rssMiB: number;
  heapUsedMiB: number | null;
  externalMiB: number | null;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  elapsedMs: number;
  casesPerSecond: number;
  byFamily: Record<string, { cases: number; outcomes: Partial<Record<Outcome, number>> }>;
  audits: number;
  canary: CanaryReport;
  alive: boolean;
  /**
   * baseline and afterGc are taken after a full GC when the target offers one (else afterGc is null and
   * `after`, with whatever garbage V8 has not collected yet, is judged).
   */
  memory: {
    baseline: Memory;
    peakRssMiB: number;
    after: Memory;
    afterGc: Memory | null;
    /** After the GC and a malloc_trim(0) (baseline trimmed too), when the target could trim. */
    afterTrim: Memory | null;
    baselineTrimmed: Memory | null;
    /** V8 heap in use + external memory after the GC, minus the same at the baseline: what the relay references (≤ HELD_BOUND_MIB). */
    heldMiB: number | null;
    nearBaseline: boolean;
    bound: string;
  };
  /** Hostile TCP connections vs the relay's counted outcomes (null without /metrics). */
  accounting: Accounting | null;
  findings: Finding[];
}

export interface Accounting {
  connections: number;
  closedByRelay: number;
  /** Σ refused + HTTP errors + HTTP requests + DERP accepts: every connection must leave at least one. */
  traces: number;
  /** Σ refused + errors{handshake,protocol,http,write_timeout} + HTTP requests: each relay close needs one. */
  reasons: number;
  stunSent: number;
  stunCounted: number;
  /** UDP datagrams the kernel dropped meanwhile (all sockets; /proc/net/snmp RcvbufErrors). */
  udpKernelDrops: number;
  breakdown: Record<string, number>;
}

// ------------------------------------------------------------ metrics

type Samples = Map<string, number>;

export async function scrape(url: string): Promise<Samples> {
  const text = await (await fetch(url)).text();
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

function sum(s: Samples, name: string, label?: (labels: string) => boolean): number {
  let t = 0;
  for (const [k, v] of s) {
    const brace = k.indexOf('{');
    const n = brace < 0 ? k : k.slice(0, brace);
    if (n !== name) continue;
    if (label !== undefined && !label(brace < 0 ? '' : k.slice(brace))) continue;
    t += v;
  }
  return t;
}

const REASON_KINDS = ['handshake', 'protocol', 'http', 'write_timeout'];

function reasonsOf(s: Samples): number {
  return sum(s, 'derp_connections_refused_total') + sum(s, 'derp_errors_total', (l) => REASON_KINDS.some((k) => l.includes(`kind="${k}"`))) + sum(s, 'derp_http_requests_total');
}

function tracesOf(s: Samples): number {
  return sum(s, 'derp_connections_refused_total') + sum(s, 'derp_errors_total', (l) => l.includes('kind="http"')) + sum(s, 'derp_http_requests_total') + sum(s, 'derp_accepts_total');
}

function stunOf(s: Samples): number {
  return sum(s, 'derp_stun_requests_total');
}

function breakdownOf(a: Samples, b: Samples): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of b) {
    if (!/^derp_(connections_refused_total|errors_total|http_requests_total|accepts_total|websocket_accepts_total|handshakes_total|stun_requests_total)/.test(k)) continue;
    const d = v - (a.get(k) ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

function udpRcvbufErrors(): number {
  try {
    const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
    const [names, values] = [lines[0]!.split(/\s+/), lines[1]!.split(/\s+/)];
    return Number(values[names.indexOf('RcvbufErrors')] ?? 0);
  } catch {
    return 0;
  }
}

async function memory(pid: number, metricsUrl: string | null): Promise<Memory> {
  const rssMiB = procRssKiB(pid) / 1024;
  if (metricsUrl === null) return { rssMiB, heapUsedMiB: null, externalMiB: null };
  const s = await scrape(metricsUrl);
  const mib = (n: string): number | null => (s.has(n) ? s.get(n)! / 2 ** 20 : null);
  return { rssMiB, heapUsedMiB: mib('nodejs_heap_size_used_bytes'), externalMiB: mib('nodejs_external_memory_bytes') };
}

// ------------------------------------------------------------ running one case

interface CaseEnv {
  host: string;
  port: number;
  stunPort: number | null;
  udp: UdpSocket | null;
  caseTimeoutMs: number;
  quietMs: number;
}

const HEAD_END = Buffer.from('\r\n\r\n');
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function runUdp(c: FuzzCase, env: CaseEnv): Promise<Outcome> {
  return new Promise((resolve) => {
    if (env.udp === null || env.stunPort === null) return resolve('sent');
    env.udp.send(c.chunks[0]!, env.stunPort, env.host, () => resolve('sent'));
  });
}

function runTcp(c: FuzzCase, env: CaseEnv): Promise<Outcome> {
  return new Promise((resolve) => {
    const sock = connect({ host: env.host, port: env.port });
    sock.setNoDelay(true);
    let finSent = false;
    let outcome: Outcome | null = null;
    let seen = Buffer.alloc(0);
    let upgraded = c.upgrade === undefined;
    let quiet: NodeJS.Timeout | null = null;
    const finish = (o: Outcome): void => {
      outcome ??= o;
      sock.destroy();
    };
    const timer = setTimeout(() => finish('timeout'), env.caseTimeoutMs);
    const halfClose = (): void => {
      if (finSent || sock.destroyed) return;
      finSent = true;
      sock.end();
    };
    const sendBody = async (): Promise<void> => {
      for (const chunk of c.chunks) {
        if (sock.destroyed) return;
        sock.write(chunk);
        if (c.chunks.length > 1) await tick();
      }
      if (sock.destroyed) return;
      if (c.probe !== undefined) sock.write(c.probe);
      // With a probe the answer ends the case early; the timer is the fallback for a swallowed one.
      quiet = setTimeout(halfClose, c.probe !== undefined ? env.quietMs * 10 : env.quietMs);
    };
    sock.on('data', (d: Buffer) => {
      // A bounded tail is enough to find a marker or the end of a 101.
      seen = seen.length + d.length > 4096 ? Buffer.concat([seen, d]).subarray(-4096) : Buffer.concat([seen, d]);
      if (!upgraded) {
        const end = seen.indexOf(HEAD_END);
        if (end < 0) return;
        if (!seen.subarray(0, 13).toString('latin1').startsWith('HTTP/1.1 101')) return halfClose();
        upgraded = true;
        seen = seen.subarray(end + 4);
        void sendBody();
        return;
      }
      if (c.marker !== undefined && seen.includes(c.marker)) finish('tolerated');
    });
    sock.on('end', () => {
      if (!finSent) outcome ??= 'relay-closed';
    });
    sock.on('error', () => {
      if (!finSent) outcome ??= 'relay-closed';
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (quiet !== null) clearTimeout(quiet);
      const o = outcome ?? (finSent ? 'closed-after-fin' : 'relay-closed');
      resolve(o === 'relay-closed' && c.goodbye === true ? 'goodbye' : o);
    });
    sock.once('connect', () => {
      if (c.upgrade !== undefined) sock.write(c.upgrade);
      else void sendBody();
    });
  });
}

function hexOf(c: FuzzCase): string[] {
  return [...(c.upgrade ? [c.upgrade] : []), ...c.chunks, ...(c.probe ? [c.probe] : [])].map((b) => b.toString('hex'));
}

// ------------------------------------------------------------ the run

export async function runFuzz(target: FuzzTarget, o: FuzzOptions): Promise<FuzzReport> {
  const families = o.families ?? FAMILIES;
  const concurrency = o.concurrency ?? 64;
  const auditEvery = o.auditEvery ?? 0;
  const u = new URL(target.url);
  const env: CaseEnv = {
    host: u.hostname,
    port: Number(u.port),
    stunPort: target.stunPort,
    udp: null,
    caseTimeoutMs: o.caseTimeoutMs ?? 2000,
    quietMs: o.quietMs ?? 25,
  };
  if (target.stunPort !== null && families.includes('stun')) {
    const udp = createSocket('udp4');
    udp.on('message', () => undefined);
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    env.udp = udp;
  }
  const serverKey = parseNodePublic(target.publicKey);
  // One key per concurrent case, so a case never collides with a live one of its own.
  const infos = Array.from({ length: concurrency + 1 }, () => {
    const k = NodePrivateKey.generate();
    return buildClientInfoFrame(k.keyObject, k.publicKey, serverKey, { version: PROTOCOL_VERSION, canAckPings: false });
  });
  const freeInfo = infos.map((_, i) => i);

  const findings: Finding[] = [];
  const byFamily: FuzzReport['byFamily'] = {};
  for (const f of families) byFamily[f] = { cases: 0, outcomes: {} };
  let connections = 0;
  let closedByRelay = 0;
  let stunSent = 0;
  let audits = 0;

  const canary = await Canary.start(target.url, o.canaryRate ?? 200);
  const quiesce = async (): Promise<Samples | null> => {
    if (target.metricsUrl === null) return null;
    // The relay counts a close when it sees it: wait (bounded) until only the canary is open.
    const deadline = Date.now() + 3000;
    let s = await scrape(target.metricsUrl);
    while ((s.get('derp_open_connections') ?? 0) > 2 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
      s = await scrape(target.metricsUrl);
    }
    return s;
  };
  await new Promise((r) => setTimeout(r, 300));
  await target.gc?.();
  const baseline = await memory(target.pid, target.metricsUrl);
  // The baseline's own free allocator memory, so trimmed is compared with trimmed.
  const baselineTrimmed = target.trim !== undefined && (await target.trim()) ? await memory(target.pid, target.metricsUrl) : null;
  let peakRss = baseline.rssMiB;
  let running = true;
  const sampler = setInterval(() => {
    running = procAlive(target.pid);
    try {
      peakRss = Math.max(peakRss, procRssKiB(target.pid) / 1024);
    } catch {
      /* gone: reported below */
    }
  }, 200);
  const before = await quiesce();
  const udpDropsBefore = udpRcvbufErrors();

  const record = (c: FuzzCase, out: Outcome): void => {
    const f = byFamily[c.family]!;
    f.cases++;
    f.outcomes[out] = (f.outcomes[out] ?? 0) + 1;
    if (c.transport === 'udp') stunSent++;
    else {
      connections++;
      if (out === 'relay-closed') closedByRelay++;
    }
  };
  const runOne = async (index: number): Promise<{ c: FuzzCase; out: Outcome }> => {
    const slot = freeInfo.pop()!;
    const ctx: CaseContext = { host: `${env.host}:${env.port}`, serverKey, canaryKey: canary.publicKey, clientInfo: infos[slot]! };
    const c = makeCase(o.seed, index, families, ctx);
    try {
      const out = c.transport === 'udp' ? await runUdp(c, env) : await runTcp(c, env);
      if (out === 'timeout') findings.push({ kind: 'hang', detail: `case not finished within ${env.caseTimeoutMs} ms`, family: c.family, seed: o.seed, index, hex: hexOf(c) });
      record(c, out);
      return { c, out };
    } finally {
      freeInfo.push(slot);
    }
  };
  const audit = async (index: number): Promise<void> => {
    audits++;
    const a = (await quiesce())!;
    const dropsA = udpRcvbufErrors();
    const { c, out } = await runOne(index);
    // A datagram is counted when the relay reads it: poll (bounded) for it.
    let b = (await quiesce())!;
    for (let i = 0; c.transport === 'udp' && stunOf(b) === stunOf(a) && i < 50; i++) {
      await new Promise((r) => setTimeout(r, 10));
      b = await scrape(target.metricsUrl!);
    }
    const where = { family: c.family, seed: o.seed, index, hex: hexOf(c) };
    if (c.transport === 'udp') {
      if (stunOf(b) - stunOf(a) < 1 && udpRcvbufErrors() === dropsA) findings.push({ kind: 'uncounted-close', detail: 'STUN datagram left no count', ...where });
      return;
    }
    const d = JSON.stringify(breakdownOf(a, b));
    if (out === 'relay-closed' && reasonsOf(b) === reasonsOf(a)) findings.push({ kind: 'uncounted-close', detail: `relay closed the connection without a counted reason (deltas ${d})`, ...where });
    // Only blank lines, then FIN: HTTP allows leading CRLFs, so there was no request to count.
    else if (tracesOf(b) === tracesOf(a) && !/^[\r\n]*$/.test(Buffer.concat(c.chunks).toString('latin1'))) findings.push({ kind: 'no-trace', detail: `connection (${out}) left no counted outcome (deltas ${d})`, ...where });
  };

  const start = Date.now();
  const stopAt = o.seconds === undefined ? Infinity : start + o.seconds * 1000;
  let next = 0;
  let done = 0;
  let lastProgress = start;
  await new Promise<void>((resolveAll) => {
    let inFlight = 0;
    let auditing = false;
    const pump = (): void => {
      while (!auditing && inFlight < concurrency && next < o.cases && running && Date.now() < stopAt) {
        const index = next++;
        if (auditEvery > 0 && index % auditEvery === auditEvery - 1) {
          auditing = true;
          const waitIdle = (): void => {
            if (inFlight > 0) return void setTimeout(waitIdle, 2);
            void audit(index).then(() => {
              auditing = false;
              done++;
              pump();
            });
          };
          waitIdle();
          return;
        }
        inFlight++;
        void runOne(index).then(() => {
          inFlight--;
          done++;
          const now = Date.now();
          if (o.onProgress !== undefined && now - lastProgress >= 5000) {
            lastProgress = now;
            o.onProgress({ done, elapsedMs: now - start, findings: findings.length });
          }
          pump();
        });
      }
      if (inFlight === 0 && !auditing) resolveAll();
    };
    pump();
  });
  const elapsedMs = Date.now() - start;

  const alive = procAlive(target.pid);
  if (!alive) findings.push({ kind: 'crash', detail: `relay pid ${target.pid} is gone`, seed: o.seed });
  const after = alive ? await quiesce() : null;
  const canaryReport = await canary.stop();
  env.udp?.close();
  if (canaryReport.lost > 0 || canaryReport.misordered > 0) findings.push({ kind: 'canary-loss', detail: `canary lost ${canaryReport.lost}, misordered ${canaryReport.misordered} of ${canaryReport.sent}` });
  if (canaryReport.disconnects > 0) findings.push({ kind: 'canary-disconnect', detail: `canary connections closed ${canaryReport.disconnects} times` });
  for (const line of target.errors ?? []) findings.push({ kind: 'server-error-log', detail: line.slice(0, 2000) });

  let accounting: Accounting | null = null;
  if (before !== null && after !== null) {
    const drops = udpRcvbufErrors() - udpDropsBefore;
    accounting = {
      connections,
      closedByRelay,
      traces: tracesOf(after) - tracesOf(before),
      reasons: reasonsOf(after) - reasonsOf(before),
      stunSent,
      stunCounted: stunOf(after) - stunOf(before),
      udpKernelDrops: drops,
      breakdown: breakdownOf(before, after),
    };
    if (accounting.traces < connections) findings.push({ kind: 'accounting', detail: `${connections} hostile connections but only ${accounting.traces} counted outcomes` });
    if (accounting.reasons < closedByRelay) findings.push({ kind: 'accounting', detail: `relay closed ${closedByRelay} connections but counted only ${accounting.reasons} reasons` });
    if (accounting.stunCounted + drops < stunSent) findings.push({ kind: 'accounting', detail: `${stunSent} STUN datagrams, ${accounting.stunCounted} counted, ${drops} dropped by the kernel` });
  }

  if (o.settleMs !== undefined && o.settleMs > 0 && alive) await new Promise((r) => setTimeout(r, o.settleMs));
  clearInterval(sampler);
  const afterMem = alive ? await memory(target.pid, target.metricsUrl) : { rssMiB: 0, heapUsedMiB: null, externalMiB: null };
  let afterGc: Memory | null = null;
  let afterTrim: Memory | null = null;
  if (alive && target.gc) {
    await target.gc();
    afterGc = await memory(target.pid, target.metricsUrl);
    if (baselineTrimmed !== null && target.trim !== undefined && (await target.trim())) afterTrim = await memory(target.pid, target.metricsUrl);
  }
  const held = (m: Memory): number | null => (m.heapUsedMiB === null || m.externalMiB === null ? null : m.heapUsedMiB + m.externalMiB);
  const heldAfter = afterGc === null ? null : held(afterGc);
  const heldBase = held(baseline);
  const heldDelta = heldAfter === null || heldBase === null ? null : heldAfter - heldBase;
  // Trimmed against trimmed when both exist; RSS after the GC otherwise (glibc's free chunks count then).
  const [judged, base, what] = afterTrim !== null && baselineTrimmed !== null ? [afterTrim, baselineTrimmed, 'afterTrim'] : afterGc !== null ? [afterGc, baseline, 'afterGc'] : [afterMem, baseline, 'after'];
  // "Near": within 32 MiB or 25 % of the baseline, whichever is larger.
  const slack = Math.max(32, base.rssMiB * 0.25);
  return {
    seed: o.seed,
    cases: done,
    elapsedMs,
    casesPerSecond: Math.round((done / elapsedMs) * 1000),
    byFamily,
    audits,
    canary: canaryReport,
    alive,
    memory: {
      baseline,
      peakRssMiB: round1(peakRss),
      after: afterMem,
      afterGc,
      afterTrim,
      baselineTrimmed,
      heldMiB: heldDelta === null ? null : round1(heldDelta),
      nearBaseline: judged.rssMiB - base.rssMiB <= slack && (heldDelta === null || heldDelta <= HELD_BOUND_MIB),
      bound: `RSS ${what} − baseline${what === 'afterTrim' ? ' (trimmed)' : ''} ≤ max(32 MiB, 25 % of baseline) = ${round1(slack)} MiB${heldDelta === null ? '' : `, and heap + external after the GC − baseline ≤ ${HELD_BOUND_MIB} MiB`}`,
    },
    accounting,
    findings,
  };
}

/**
 * What the relay may still reference after the GC (V8 heap in use + external), above its baseline: the
 * STUN reply cache full at its cap (10,000 replies of their own 52–76 bytes, ~0.6 KiB each with key and
 * entry: ≤ 6 MiB, bounded in test/stun/server.test.ts), JIT code and lazily built tables (~2–3 MiB in
 * heap snapshots), with headroom. A leak that grows with the cases (a million left 65 MiB) exceeds it.
 */
export const HELD_BOUND_MIB = 16;

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
