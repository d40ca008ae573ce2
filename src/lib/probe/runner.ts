/**
 * Runs the checks of a probe: every node × check (mesh: × peer) as one task, at most `concurrency`
 * at once, each under its own timeout and all under the run's deadline. A check that times out or
 * outlives the deadline is bad with the reason; its sockets are closed before the run ends.
 */
import type { DERPServer } from '../derpmap/types.js';
import { DerpError, describeError } from '../errors.js';
import type { NodePrivateKey } from '../protocol/keys.js';
import { bandwidth } from './checks/bandwidth.js';
import { derp } from './checks/derp.js';
import { http } from './checks/http.js';
import { mesh } from './checks/mesh.js';
import { packet } from './checks/packet.js';
import { stun4, stun6 } from './checks/stun.js';
import { tls } from './checks/tls.js';
import { ABORT_GRACE_MS, CAPTIVE_PORTAL_PORT, DEFAULT_CHECK_TIMEOUT_MS, DEFAULT_CONCURRENCY, DEFAULT_FAIL_DAYS, DEFAULT_PACKETS, DEFAULT_WARN_DAYS } from './constants.js';
import type { Check, CheckContext, CheckOutcome, ResolvedProbeOptions } from './context.js';
import {
  CHECK_NAMES,
  DEFAULT_CHECKS,
  PROBE_SCHEMA,
  type CheckName,
  type CheckResult,
  type CheckStatus,
  type NodeReport,
  type ProbeRegion,
  type ProbeReport,
  type ProbeSummary,
  type ProbeTarget,
  type ProbeTransport,
} from './types.js';
import { ConfigError } from '../errors.js';

export interface ProbeOptions {
  /** Default DEFAULT_CHECKS (bandwidth is opt-in). Run in CHECK_NAMES order whatever the order given. */
  checks?: readonly CheckName[];
  /** Default both. */
  transports?: readonly ProbeTransport[];
  /** `packet` check: packets exchanged (default 10). */
  packets?: number;
  /** `bandwidth` check: bytes to move (it is skipped without). */
  bandwidthBytes?: number;
  warnDays?: number;
  failDays?: number;
  /** Key of the probe's first client (derp check, senders). Default: a fresh key per client. */
  privateKey?: NodePrivateKey;
  /** Key of the receiving client of packet / mesh / bandwidth. Default: a fresh key per client. */
  peerPrivateKey?: NodePrivateKey;
  tls?: { caFile?: string; ca?: string | Buffer; insecure?: boolean };
  /** Checks running at once (default 8). */
  concurrency?: number;
  /** Every check's timeout (default 10 s). */
  checkTimeoutMs?: number;
  /** The whole run's deadline; checks not finished by then are bad ("run deadline"). Default none. */
  runTimeoutMs?: number;
  signal?: AbortSignal;
  /** Called as each result is final (progress). */
  onCheck?: (node: ProbeTarget, result: CheckResult) => void;
  /** For the report: the map's source or the --server URLs. */
  source?: ProbeReport['source'];
  /** derp's version, for the report. */
  version?: string;
  /** Port CanPort80 nodes answer plain HTTP on (default 80; tests). */
  port80?: number;
  /** Clock for certificate expiry (tests). */
  now?: () => number;
}

const CHECKS: Record<Exclude<CheckName, 'mesh'>, Check> = { stun4, stun6, tls, http, derp, packet, bandwidth };
/** Checks that hold DERP connections with the probe's keys. */
const KEYED: ReadonlySet<CheckName> = new Set(['derp', 'packet', 'mesh', 'bandwidth']);
const RANK: Record<Exclude<CheckStatus, 'skipped'>, number> = { good: 0, warn: 1, bad: 2 };

interface Task {
  target: ProbeTarget;
  region: ProbeRegion;
  check: CheckName;
  peer?: DERPServer;
  slot: CheckResult[];
  index: number;
}

function resolve(opts: ProbeOptions): ResolvedProbeOptions {
  const checks = opts.checks ?? DEFAULT_CHECKS;
  for (const c of checks) if (!CHECK_NAMES.includes(c)) throw new ConfigError(`unknown check ${JSON.stringify(c)} (checks: ${CHECK_NAMES.join(', ')})`);
  const transports = opts.transports ?? ['upgrade', 'websocket'];
  if (transports.length === 0) throw new ConfigError('at least one transport is needed (upgrade, websocket)');
  const positive = (name: string, v: number | undefined, dflt: number): number => {
    const x = v ?? dflt;
    if (!Number.isFinite(x) || x <= 0) throw new ConfigError(`${name} must be a positive number, got ${x}`);
    return x;
  };
  const warnDays = opts.warnDays ?? DEFAULT_WARN_DAYS;
  const failDays = opts.failDays ?? DEFAULT_FAIL_DAYS;
  if (!(warnDays >= 0 && failDays >= 0)) throw new ConfigError(`warn days (${warnDays}) and fail days (${failDays}) must be ≥ 0`);
  return {
    checks: CHECK_NAMES.filter((c) => checks.includes(c)),
    transports: (['upgrade', 'websocket'] as const).filter((t) => transports.includes(t)),
    packets: Math.floor(positive('packets', opts.packets, DEFAULT_PACKETS)),
    bandwidthBytes: opts.bandwidthBytes === undefined ? undefined : Math.floor(positive('bandwidth bytes', opts.bandwidthBytes, 1)),
    warnDays,
    failDays,
    privateKey: opts.privateKey,
    peerPrivateKey: opts.peerPrivateKey,
    tls: { ...(opts.tls?.ca !== undefined ? { ca: opts.tls.ca } : {}), ...(opts.tls?.caFile !== undefined ? { caFile: opts.tls.caFile } : {}), insecure: opts.tls?.insecure ?? false },
    port80: opts.port80 ?? CAPTIVE_PORTAL_PORT,
    now: opts.now ?? Date.now,
  };
}

/** Why a check stopped early: its timeout, the run deadline, or the caller's abort. */
class StopReason extends DerpError {
  constructor(readonly kind: 'timeout' | 'deadline' | 'aborted', message: string) {
    super(kind === 'aborted' ? 'DERP_ERR_CLOSED' : 'DERP_ERR_TIMEOUT', message);
  }
}

/** Resolves or rejects with `p`, or rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** A one-holder lock (checks that share a fixed key must not overlap). */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async acquire(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    return release;
  }
}

export async function runProbe(regions: ProbeRegion[], opts: ProbeOptions = {}): Promise<ProbeReport> {
  const o = resolve(opts);
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? DEFAULT_CONCURRENCY));
  const checkTimeoutMs = opts.checkTimeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS;
  if (!(checkTimeoutMs > 0)) throw new ConfigError(`check timeout must be > 0 ms, got ${checkTimeoutMs}`);
  if (opts.runTimeoutMs !== undefined && !(opts.runTimeoutMs > 0)) throw new ConfigError(`run timeout must be > 0 ms, got ${opts.runTimeoutMs}`);
  const startedAt = new Date();
  const t0 = performance.now();

  const run = new AbortController();
  const onAbort = (): void => run.abort(new StopReason('aborted', 'the probe was aborted before this check finished'));
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const deadline =
    opts.runTimeoutMs === undefined
      ? undefined
      : setTimeout(() => run.abort(new StopReason('deadline', `run deadline: the run's ${opts.runTimeoutMs} ms ran out before this check finished`)), opts.runTimeoutMs);

  const nodes: { report: NodeReport; target: ProbeTarget }[] = [];
  const tasks: Task[] = [];
  for (const region of regions) {
    for (const target of region.targets) {
      const slot: CheckResult[] = [];
      nodes.push({ target, report: { regionId: target.regionId, regionCode: target.regionCode, node: target.node.id, hostname: target.node.hostname, url: target.url, checks: slot, status: 'good' } });
      for (const check of o.checks) {
        if (check !== 'mesh') {
          tasks.push({ target, region, check, slot, index: slot.length });
          slot.length++;
          continue;
        }
        const peers = region.targets.filter((t) => t !== target);
        if (peers.length === 0) {
          const r: CheckResult = { check: 'mesh', status: 'skipped', message: `region ${region.regionCode} has one node: no pair to mesh`, durationMs: 0 };
          slot.push(r);
          opts.onCheck?.(target, r);
        }
        for (const p of peers) {
          tasks.push({ target, region, check, peer: p.node, slot, index: slot.length });
          slot.length++;
        }
      }
    }
  }

  const keyLock = o.privateKey || o.peerPrivateKey ? new Mutex() : undefined;
  const runTask = async (task: Task): Promise<void> => {
    const release = keyLock && KEYED.has(task.check) ? await keyLock.acquire() : undefined;
    try {
      task.slot[task.index] = await runOne(task);
    } finally {
      release?.();
    }
    opts.onCheck?.(task.target, task.slot[task.index]!);
  };

  const runOne = async (task: Task): Promise<CheckResult> => {
    const base = { check: task.check, ...(task.peer ? { peer: task.peer.id } : {}) };
    if (run.signal.aborted) {
      const reason = run.signal.reason as StopReason;
      return { ...base, status: 'bad', message: reason.kind === 'deadline' ? `run deadline: ${opts.runTimeoutMs} ms ran out before the check started` : 'the probe was aborted before this check started', durationMs: 0 };
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(new StopReason('timeout', `timed out after ${checkTimeoutMs} ms`)), checkTimeoutMs);
    const signal = AbortSignal.any([ctl.signal, run.signal]);
    const closers: (() => Promise<void> | void)[] = [];
    let closed = false;
    const ctx: CheckContext = {
      target: task.target,
      region: task.region,
      signal,
      budgetMs: checkTimeoutMs,
      opts: o,
      defer: (fn) => {
        if (closed) void Promise.resolve().then(fn);
        else closers.push(fn);
      },
    };
    const start = performance.now();
    let outcome: CheckOutcome;
    const running = task.check === 'mesh' ? mesh(ctx, task.peer!) : CHECKS[task.check](ctx);
    // After a stop the check still settles (its waits follow the signal); nothing is left to report.
    running.catch(() => undefined);
    try {
      outcome = await untilAborted(running, signal);
    } catch (err) {
      outcome = { status: 'bad', message: err instanceof StopReason ? err.message : `check failed: ${describeError(err)}` };
    } finally {
      clearTimeout(timer);
    }
    const durationMs = Math.round((performance.now() - start) * 100) / 100;
    closed = true;
    const closing = Promise.allSettled(closers.reverse().map(async (fn) => fn()));
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([closing, new Promise((r) => (grace = setTimeout(r, ABORT_GRACE_MS)))]);
    clearTimeout(grace);
    return { ...base, ...outcome, durationMs };
  };

  const queue = [...tasks];
  await Promise.all(
    Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
      for (let t = queue.shift(); t; t = queue.shift()) await runTask(t);
    }),
  );
  clearTimeout(deadline);
  opts.signal?.removeEventListener('abort', onAbort);

  const summary: ProbeSummary = { nodes: nodes.length, checks: 0, good: 0, warn: 0, bad: 0, skipped: 0 };
  let status: NodeReport['status'] = 'good';
  for (const { report } of nodes) {
    for (const c of report.checks) {
      summary.checks++;
      summary[c.status]++;
      if (c.status !== 'skipped' && RANK[c.status] > RANK[report.status]) report.status = c.status;
    }
    if (RANK[report.status] > RANK[status]) status = report.status;
  }
  const finishedAt = new Date();
  return {
    schema: PROBE_SCHEMA,
    version: opts.version ?? '0.0.0',
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationMs: Math.round((performance.now() - t0) * 100) / 100,
    source: opts.source ?? {},
    checks: o.checks,
    transports: o.transports,
    nodes: nodes.map((n) => n.report),
    summary,
    status,
  };
}
