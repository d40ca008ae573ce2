/**
 * The flood scenario (issue 7 §3): a canary pair runs at a fixed rate in one generator worker while
 * another worker attacks the relay, one attack at a time, each for a bounded time. Per phase: the
 * canary's loss and p99 beside its quiet p99, the relay's RSS before, at peak, and after it settled
 * (polled, bounded), and whether a fresh client still gets a handshake. Loopback only.
 */
import { ConnectError } from '../src/lib/errors.js';
import { mallocTrim, percentile, procRssKiB, sleep, threadSchedStat, type SchedStat, type Worker, type AttackKind, type AttackReport, type CanaryReport } from '../src/lib/loadgen/index.js';
import { ownAffinity, parseCpuList, pin, pinHelpers, pinThread } from './placement.js';
import type { FloodAttack } from './options.js';
import { benchWorker, type ServerHandle } from './procs.js';

/** Canary rate each way and packet size: a busy interactive flow, far below what the relay carries. */
export const CANARY_RATE = 2000;
export const CANARY_SIZE = 256;
/** Slowloris connections, and keys nobody holds for the absent-key sender (the figures). */
export const SLOWLORIS_CONNS = 2000;
export const ABSENT_KEYS = 10_000;
/** Targets: canary p99 at most this times its quiet p99; RSS back within this of the quiet baseline. */
export const P99_FACTOR = 2;
export const RSS_SLACK_FRACTION = 0.1;
export const RSS_SLACK_MIN_KIB = 8 * 1024;
/** After a phase, RSS is polled this often, for at most this long, until it is back within the slack. */
const RSS_POLL_MS = 250;
const RSS_SETTLE_MAX_MS = 5000;
/** At the end, once every attack is over: V8's memory reducer returns heap pages after some idle seconds. */
const RSS_FINAL_SETTLE_MAX_MS = 15_000;
/** Canary warm-up before the quiet measurement (connections and JIT settle). */
const CANARY_WARMUP_MS = 1000;
/** After the handshake warm-up the accept bucket refills; a probe handshake is tried this often, at most this many times. */
const WARMUP_PROBE_MS = 250;
const WARMUP_PROBE_TRIES = 40;
/** One /metrics scrape for the heap figures. */
const METRICS_TIMEOUT_MS = 5000;

export interface FloodPhase {
  phase: string;
  kind: AttackKind | 'quiet';
  attack: AttackReport | null;
  canarySent: number;
  canaryReceived: number;
  /** Packets skipped in sequence (the relay lost them). */
  canaryLost: number;
  canaryP50Ms: number;
  canaryP99Ms: number;
  canaryErrors: string[];
  rssBeforeKiB: number;
  rssPeakKiB: number;
  /** After settling (polled up to RSS_SETTLE_MAX_MS). */
  rssAfterKiB: number;
  settleMs: number;
  /** V8 heap used + external memory after settling, KiB (null without the relay's /metrics). */
  heapAfterKiB: number | null;
  alive: boolean;
  probe: AttackReport | null;
  /** The relay's event loop (main thread) over the phase, ms: on its CPU, and runnable but waiting for it (schedstat); null without schedstat. */
  relayLoopCpuMs: number | null;
  relayLoopWaitMs: number | null;
}

export interface FloodResult {
  server: string;
  phaseMs: number;
  canaryRate: number;
  canarySize: number;
  quietP99Ms: number;
  /** RSS when the quiet phase began, and at its end (the baseline every later figure is judged against). */
  startRssKiB: number;
  baselineRssKiB: number;
  /** After the canary stopped, polled up to RSS_FINAL_SETTLE_MAX_MS (how long: finalSettleMs). */
  finalRssKiB: number;
  finalSettleMs: number;
  /** RSS right after glibc's malloc_trim(0) in the relay (through gdb), at the end; null when it cannot be called here. */
  finalTrimmedRssKiB: number | null;
  /** V8 heap used + external memory at the quiet baseline and at the end, KiB: RSS that stays up while these come back is memory V8/malloc keep, not a leak. */
  baselineHeapKiB: number | null;
  finalHeapKiB: number | null;
  /** Canary packets never delivered after the final drain. */
  canaryUndelivered: number;
  phases: FloodPhase[];
  serverArgs: string[];
  /** Where each process ran: split (the attacker on CPUs of its own) or shared (wherever the scheduler put it). */
  placement: FloodPlacement;
  /** --flood-decoy: the attacks went to a second relay, so the measured one carried the canary alone (a control). */
  decoy: boolean;
  /** The handshake warm-up before the canary (--flood-warmup): its length and what it did; null with none. */
  warmup: { ms: number; handshakes: number } | null;
}

/** CPU lists as taskset prints them (the canary shares the relay's); null where the scheduler placed them. */
export interface FloodPlacement {
  mode: 'split' | 'shared';
  relayCpus: string | null;
  attackerCpus: string | null;
  /** Why a split was asked for but not made (no taskset, one CPU). */
  note?: string;
}

const PHASES: { kind: FloodAttack; phase: string; count: number }[] = [
  { kind: 'connect', phase: 'connection flood from one IP (connect + close)', count: 0 },
  { kind: 'slowloris', phase: `slowloris: ${SLOWLORIS_CONNS.toLocaleString('en-US')} unfinished HTTP heads held`, count: SLOWLORIS_CONNS },
  { kind: 'handshake', phase: 'handshake flood, throwaway keys', count: 0 },
  { kind: 'blast', phase: 'one client blasting (to a peer that does not read, and to itself)', count: 0 },
  { kind: 'absent', phase: `one client sending to ${ABSENT_KEYS.toLocaleString('en-US')} absent keys`, count: ABSENT_KEYS },
];

/** One attack across flood rounds: each round's canary p99 over that round's quiet p99, and the median of those. */
export interface FloodPhaseAcrossRounds {
  kind: AttackKind;
  phase: string;
  /** One per round that reached the phase, in round order. */
  ratios: number[];
  median: number;
  /** Canary packets lost in the phase, over all rounds. */
  lost: number;
  /** Rounds after whose phase the relay was not alive. */
  deadRounds: number;
}

/** The middle value (the mean of the two middle ones for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Per attack, in the bench's order: what every round measured, for a verdict on the median rather than on one noisy run. */
export function acrossRounds(rounds: readonly FloodResult[]): FloodPhaseAcrossRounds[] {
  const out: FloodPhaseAcrossRounds[] = [];
  for (const ph of PHASES) {
    const seen = rounds.flatMap((r) => r.phases.filter((x) => x.kind === ph.kind).map((x) => ({ x, quiet: r.quietP99Ms })));
    if (seen.length === 0) continue;
    const ratios = seen.map(({ x, quiet }) => x.canaryP99Ms / quiet);
    out.push({
      kind: ph.kind,
      phase: ph.phase,
      ratios,
      median: median(ratios),
      lost: seen.reduce((n, { x }) => n + x.canaryLost, 0),
      deadRounds: seen.filter(({ x }) => !x.alive).length,
    });
  }
  return out;
}

export function rssSlackKiB(baselineKiB: number): number {
  return Math.max(RSS_SLACK_MIN_KIB, baselineKiB * RSS_SLACK_FRACTION);
}

/** The relay's V8 heap in use and external (Buffer) memory, KiB, from its /metrics (prom-client's default metrics); null without metrics. */
export async function relayHeapKiB(server: ServerHandle): Promise<{ heap: number; external: number } | null> {
  if (!server.metricsUrl) return null;
  try {
    const text = await (await fetch(server.metricsUrl, { signal: AbortSignal.timeout(METRICS_TIMEOUT_MS) })).text();
    const get = (name: string): number => {
      const m = new RegExp(`^${name} (\\S+)`, 'm').exec(text);
      return m ? Number(m[1]) / 1024 : NaN;
    };
    return { heap: get('nodejs_heap_size_used_bytes'), external: get('nodejs_external_memory_bytes') };
  } catch {
    return null;
  }
}

function p(rep: CanaryReport, q: number): number {
  const hist = new Map<number, number>(rep.hist);
  const total = rep.hist.reduce((s, [, c]) => s + c, 0);
  return total > 0 ? percentile(hist, total, q) : NaN;
}

/**
 * On the internet an attacker's CPU is not the relay's: with `split`, the relay's event loop and the
 * canary share the first CPU and the attacker gets the others, so the canary's tail shows the relay's
 * own work under attack rather than three busy processes time-sharing two cores.
 */
function placeFlood(mode: 'split' | 'shared', relayPid: number, canaryPid: number | undefined, attackerPid: number | undefined, decoyPid: number | undefined): FloodPlacement {
  const shared: FloodPlacement = { mode: 'shared', relayCpus: null, attackerCpus: null };
  if (mode === 'shared') return shared;
  const own = ownAffinity();
  const cpus = own ? parseCpuList(own) : [];
  if (cpus.length < 2 || canaryPid === undefined || attackerPid === undefined) {
    return { ...shared, note: own ? `split placement needs two CPUs; this process may use ${own}` : 'split placement needs taskset' };
  }
  const relayCpus = String(cpus[0]);
  const attackerCpus = cpus.slice(1).join(',');
  // The relay's and the canary's event loops share the first CPU; their V8 and libuv helper threads go
  // with the attacker (on a real host they have other cores), so no GC helper takes the relay's CPU.
  pinThread(relayPid, relayCpus);
  pinHelpers(relayPid, attackerCpus);
  pinThread(canaryPid, relayCpus);
  pinHelpers(canaryPid, attackerCpus);
  pin(attackerPid, attackerCpus);
  // The decoy stands for another host the attacker loads: all of it on the attacker's CPUs.
  if (decoyPid !== undefined) pin(decoyPid, attackerCpus);
  return { mode: 'split', relayCpus, attackerCpus };
}

/** Gives the generator workers back every CPU the bench may use (later stages reuse them). */
function unplace(p: FloodPlacement, pids: (number | undefined)[]): void {
  if (p.mode !== 'split') return;
  const own = ownAffinity();
  if (!own) return;
  for (const pid of pids) if (pid !== undefined) pin(pid, own);
}

interface FloodOptions {
  phaseMs: number;
  serverArgs?: string[];
  placement?: 'split' | 'shared';
  attacks?: readonly FloodAttack[];
  /** Attack this relay instead (placed with the attacker): the canary's relay does no attack work. */
  decoy?: ServerHandle;
  /** Handshakes against the attacked relay for this long before the canary starts (0 or absent: none). */
  warmupMs?: number;
}

export async function runFlood(server: ServerHandle, workers: Worker[], o: FloodOptions, progress: (m: string) => void): Promise<FloodResult> {
  const pid = server.pid;
  if (!pid) throw new ConnectError('the flood scenario needs the server pid (for RSS)');
  while (workers.length < 2) workers.push(benchWorker(workers.length));
  const canaryW = workers[0]!;
  const attackW = workers[1]!;
  const placement = placeFlood(o.placement ?? 'split', pid, canaryW.pid, attackW.pid, o.decoy?.pid);
  try {
    return await floodPhases(server, pid, canaryW, attackW, placement, o, progress);
  } finally {
    unplace(placement, [canaryW.pid, attackW.pid, o.decoy?.pid]);
  }
}

async function floodPhases(server: ServerHandle, pid: number, canaryW: Worker, attackW: Worker, placement: FloodPlacement, o: FloodOptions, progress: (m: string) => void): Promise<FloodResult> {
  const target = o.decoy ?? server;
  const warmup = (o.warmupMs ?? 0) > 0 ? await warmHandshakes(target, attackW, o.warmupMs!, progress) : null;
  progress(`flood: canary pair at ${CANARY_RATE} pkts/s each way`);
  const ready = await canaryW.request({ cmd: 'canary', url: server.url, rate: CANARY_RATE, size: CANARY_SIZE }, 'ready');
  if (ready.failed > 0) throw new ConnectError(`flood canary failed to connect: ${ready.firstError}`);
  await sleep(CANARY_WARMUP_MS);
  await canaryW.request({ cmd: 'canary-snap' }, 'canary');

  const rss = (): number => procRssKiB(pid);
  const phases: FloodPhase[] = [];
  const startRssKiB = rss();
  const loopAt = (): SchedStat | null => threadSchedStat(pid);
  const loopSince = (a: SchedStat | null): { relayLoopCpuMs: number | null; relayLoopWaitMs: number | null } => {
    const b = a && loopAt();
    return a && b ? { relayLoopCpuMs: (b.cpuNs - a.cpuNs) / 1e6, relayLoopWaitMs: (b.waitNs - a.waitNs) / 1e6 } : { relayLoopCpuMs: null, relayLoopWaitMs: null };
  };
  const quietLoop = loopAt();
  const heapSum = async (): Promise<number | null> => {
    const h = await relayHeapKiB(server);
    return h ? h.heap + h.external : null;
  };
  progress(`flood: quiet ${o.phaseMs / 1000} s`);
  await sleep(o.phaseMs);
  const quiet = await canaryW.request({ cmd: 'canary-snap' }, 'canary');
  const quietLoopUse = loopSince(quietLoop);
  const quietP99Ms = p(quiet, 0.99);
  // The baseline is the relay carrying the canary alone, at the end of the quiet phase: the first
  // seconds of any traffic make V8's young generation resident (~10 MiB here), attack or not.
  const baselineRssKiB = rss();
  const baselineHeapKiB = await heapSum();
  phases.push({
    phase: 'quiet (canary alone)',
    kind: 'quiet',
    attack: null,
    canarySent: quiet.sent,
    canaryReceived: quiet.received,
    canaryLost: quiet.gaps,
    canaryP50Ms: p(quiet, 0.5),
    canaryP99Ms: quietP99Ms,
    canaryErrors: quiet.errors,
    ...quietLoopUse,
    rssBeforeKiB: startRssKiB,
    rssPeakKiB: Math.max(startRssKiB, baselineRssKiB),
    rssAfterKiB: baselineRssKiB,
    settleMs: 0,
    heapAfterKiB: baselineHeapKiB,
    alive: true,
    probe: null,
  });
  const slack = rssSlackKiB(baselineRssKiB);

  for (const ph of PHASES) {
    if (o.attacks !== undefined && !o.attacks.includes(ph.kind)) continue;
    progress(`flood: ${ph.phase}, ${o.phaseMs / 1000} s`);
    attackW.send({ cmd: 'attack', kind: ph.kind, url: target.url, durationMs: o.phaseMs, count: ph.count });
    await attackW.next('attack-started');
    // The canary figures of a phase cover the attack only: not the previous phase's settling, nor the
    // attacker's preparation (keys, frames, connections).
    await canaryW.request({ cmd: 'canary-snap' }, 'canary');
    const before = rss();
    const phaseLoop = loopAt();
    let peak = before;
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, rss());
      } catch {
        // The relay died: the phase's probe reports it.
      }
    }, RSS_POLL_MS);
    const attack = await attackW.next('attack');
    // A relay that died meanwhile has no schedstat: null, and the phase's probe reports it.
    const loopUse = loopSince(phaseLoop);
    const c = await canaryW.request({ cmd: 'canary-snap' }, 'canary');
    clearInterval(sampler);
    let alive = true;
    try {
      server.check();
      peak = Math.max(peak, rss());
    } catch {
      alive = false;
    }
    const probe = alive ? await probeHandshake(attackW, server) : null;
    alive &&= probe !== null && probe.count === 1;
    // Back to baseline? Poll, bounded: Node frees memory lazily, so give it a few seconds.
    const t0 = performance.now();
    let after = alive ? rss() : NaN;
    while (alive && after > baselineRssKiB + slack && performance.now() - t0 < RSS_SETTLE_MAX_MS) {
      await sleep(RSS_POLL_MS);
      after = rss();
    }
    phases.push({
      phase: ph.phase,
      kind: ph.kind,
      attack,
      canarySent: c.sent,
      canaryReceived: c.received,
      canaryLost: c.gaps,
      canaryP50Ms: p(c, 0.5),
      canaryP99Ms: p(c, 0.99),
      canaryErrors: c.errors,
      ...loopUse,
      rssBeforeKiB: before,
      rssPeakKiB: peak,
      rssAfterKiB: after,
      settleMs: performance.now() - t0,
      heapAfterKiB: alive ? await heapSum() : null,
      alive,
      probe,
    });
    if (!alive) break;
  }
  const last = await canaryW.request({ cmd: 'canary-stop' }, 'canary');
  let finalRssKiB = NaN;
  let finalSettleMs = 0;
  let finalHeapKiB: number | null = null;
  let finalTrimmedRssKiB: number | null = null;
  try {
    server.check();
    const t0 = performance.now();
    finalRssKiB = rss();
    while (finalRssKiB > baselineRssKiB + slack && performance.now() - t0 < RSS_FINAL_SETTLE_MAX_MS) {
      await sleep(RSS_POLL_MS);
      finalRssKiB = rss();
    }
    finalSettleMs = performance.now() - t0;
    finalHeapKiB = await heapSum();
    // What of the rest is the allocator's free memory rather than the relay's (as the fuzzer judges it).
    if (finalRssKiB > baselineRssKiB + slack && (await mallocTrim(pid))) finalTrimmedRssKiB = rss();
  } catch {
    // Reported as not alive above.
  }
  return {
    server: server.label,
    phaseMs: o.phaseMs,
    canaryRate: CANARY_RATE,
    canarySize: CANARY_SIZE,
    quietP99Ms,
    startRssKiB,
    baselineRssKiB,
    finalRssKiB,
    finalSettleMs,
    finalTrimmedRssKiB,
    baselineHeapKiB,
    finalHeapKiB,
    canaryUndelivered: last.undelivered + last.gaps,
    phases,
    serverArgs: o.serverArgs ?? [],
    placement,
    decoy: o.decoy !== undefined,
    warmup,
  };
}

/** One fresh client's handshake from the attacker's worker (count 1: it completed, retrying a refused connect as a client does). */
function probeHandshake(attackW: Worker, target: ServerHandle): Promise<AttackReport> {
  return attackW.request({ cmd: 'attack', kind: 'probe', url: target.url, durationMs: 0, count: 1 }, 'attack');
}

/**
 * The handshake flood's own loops for `ms` before anything is measured: a fresh relay's handshake code
 * is still interpreted, and its first few hundred handshakes cost several times what they cost once
 * compiled, so an unwarmed first phase measures the JIT. Then waits until the relay admits again
 * (the accept rate may have closed its listener).
 */
async function warmHandshakes(target: ServerHandle, attackW: Worker, ms: number, progress: (m: string) => void): Promise<{ ms: number; handshakes: number }> {
  progress(`flood: warming the relay's handshake path, ${ms / 1000} s`);
  attackW.send({ cmd: 'attack', kind: 'handshake', url: target.url, durationMs: ms, count: 0 });
  await attackW.next('attack-started');
  const r = await attackW.next('attack');
  for (let i = 0; ; i++) {
    const probe = await probeHandshake(attackW, target);
    if (probe.count === 1) break;
    if (i + 1 >= WARMUP_PROBE_TRIES) throw new ConnectError(`flood warm-up: the relay admitted no handshake for ${(WARMUP_PROBE_TRIES * WARMUP_PROBE_MS) / 1000} s after it (${probe.firstError ?? 'no error given'})`);
    await sleep(WARMUP_PROBE_MS);
  }
  return { ms, handshakes: r.count };
}
