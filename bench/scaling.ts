/**
 * The scaling stage of `npm run bench` (issue 10 §2): `derp serve --workers W` for W = 1 and W = N, each
 * with the generator sharing every core, then with the generator pinned to CPU 0 and the relay (all its
 * processes) to the others (`taskset`). Per cell: throughput, handshakes/s, and the relay's CPU per
 * packet and per handshake summed over the serve process and all its descendants.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { describeError } from '../src/lib/errors.js';
import { procTree, procTreeCpuSplitUs, runHandshakes, runThroughput, sleep, type HandshakeResult, type ThroughputResult, type Timing, type Worker } from '../src/lib/loadgen/index.js';
import { affinityOf, ownAffinity, parseCpuList, pin } from './placement.js';
import { relayArgs, startServer, type ServerHandle } from './procs.js';

/** Pairs of the throughput cell: enough that with N workers many pairs have their ends on different ones. */
export const SCALING_PAIRS = 32;
export const SCALING_SIZE = 1200;
/** Each cell's timing is the bench's, capped so the whole stage stays under ~2 minutes. */
const MAX_WARMUP_MS = 1000;
const MAX_DURATION_MS = 3000;
/** How long the bench waits for N processes to be listening after the parent's listening line. */
const WORKERS_WAIT_MS = 5000;
const POLL_MS = 100;

export type Placement = 'shared' | 'pinned';

export interface ScalingCell {
  placement: Placement;
  /** --workers asked of derp serve. */
  workers: number;
  /** Processes of the serve tree that hold a listening socket on the port (each accepts connections). */
  listening: number;
  /** All processes of the serve tree (the parent may supervise without listening). */
  processes: number;
  /** CPUs the relay and the generator were pinned to ('all' = not pinned). */
  relayCpus: string;
  generatorCpus: string;
  throughput: ThroughputResult | null;
  /** Pairs whose sender and receiver were accepted by different processes; null = could not tell. */
  crossed: { pairs: number; crossed: number; unknown: number } | null;
  handshakes: HandshakeResult | null;
  /** The relay processes' CPU affinity as taskset reads it after start (evidence of the pinning), e.g. ["1"]. */
  relayAffinity: string[];
  /** Each process's share of the relay CPU while measuring (the first is the serve process itself). */
  throughputByProcess: ProcessShare[];
  handshakesByProcess: ProcessShare[];
  error: string | null;
}

export interface ProcessShare {
  pid: number;
  /** Share of the tree's CPU in the interval, %. */
  pct: number;
}

type TreeCpu = ReturnType<typeof procTreeCpuSplitUs>;

/** Each process's share of the tree's CPU between two readings; a process in only one reading counts from 0. */
export function shareByProcess(a: TreeCpu | undefined, b: TreeCpu | undefined): ProcessShare[] {
  if (!a || !b) return [];
  const before = new Map(a.perPid.map((x) => [x.pid, x.us]));
  const total = b.user + b.sys - a.user - a.sys;
  if (total <= 0) return [];
  return b.perPid.map((x) => ({ pid: x.pid, pct: ((x.us - (before.get(x.pid) ?? 0)) / total) * 100 }));
}

export interface ScalingReport {
  /** W = N. */
  n: number;
  pairs: number;
  size: number;
  concurrency: number;
  timing: Timing;
  /** Rounds of each (placement, W) cell; the table shows the best round of each. */
  rounds: number;
  /** Whether `derp serve --help` lists --workers. */
  flag: boolean;
  /** False when --workers N ran fewer than two listening processes: no N-worker figure is printed. */
  workersAvailable: boolean;
  taskset: boolean;
  /** The CPUs the bench may use (its own affinity), e.g. "0,1"; null without taskset. */
  affinity: string | null;
  cells: ScalingCell[];
  notes: string[];
}

// ---------------------------------------------------------------- /proc sockets

export interface TcpSocket {
  localPort: number;
  remotePort: number;
  /** Kernel state, hex as in /proc (01 ESTABLISHED, 0A LISTEN). */
  state: string;
  inode: number;
}

export const TCP_ESTABLISHED = '01';
export const TCP_LISTEN = '0A';

/** Parses /proc/net/tcp or tcp6 (header line first; addresses are hex ip:port). */
export function parseProcNetTcp(text: string): TcpSocket[] {
  const out: TcpSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const port = (addr: string | undefined): number => parseInt(addr?.slice(addr.lastIndexOf(':') + 1) ?? '', 16);
    out.push({ localPort: port(f[1]), remotePort: port(f[2]), state: f[3]!, inode: Number(f[9]) });
  }
  return out;
}

/** Socket inodes a process holds open (its /proc/<pid>/fd links "socket:[N]"); empty if it is gone. */
export function socketInodes(pid: number): Set<number> {
  const out = new Set<number>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(Number(m[1]));
    } catch {
      // Closed since it was listed.
    }
  }
  return out;
}

function readNetTcp(): TcpSocket[] {
  const out: TcpSocket[] = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      out.push(...parseProcNetTcp(readFileSync(f, 'utf8')));
    } catch {
      // No IPv6 on this kernel.
    }
  }
  return out;
}

/** Which of `pids` holds each socket on `port`: its listeners, and its accepted connections by the client's port. */
export function portOwners(pids: number[], port: number, sockets: TcpSocket[] = readNetTcp()): { listeners: Map<number, number[]>; byClientPort: Map<number, number> } {
  const ownerOf = new Map<number, number[]>();
  for (const pid of pids) {
    for (const ino of socketInodes(pid)) {
      const list = ownerOf.get(ino) ?? [];
      list.push(pid);
      ownerOf.set(ino, list);
    }
  }
  const listeners = new Map<number, number[]>();
  const byClientPort = new Map<number, number>();
  for (const s of sockets) {
    if (s.localPort !== port) continue;
    const owners = ownerOf.get(s.inode);
    if (!owners) continue;
    if (s.state === TCP_LISTEN) for (const o of owners) listeners.set(o, [...(listeners.get(o) ?? []), s.inode]);
    else if (s.state === TCP_ESTABLISHED && owners.length === 1) byClientPort.set(s.remotePort, owners[0]!);
  }
  return { listeners, byClientPort };
}

/** Pairs whose two client ports were accepted by different processes (a port not found counts as unknown). */
export function crossedPairs(ports: [number, number][], byClientPort: Map<number, number>): { pairs: number; crossed: number; unknown: number } {
  let crossed = 0;
  let unknown = 0;
  for (const [tx, rx] of ports) {
    const a = byClientPort.get(tx);
    const b = byClientPort.get(rx);
    if (a === undefined || b === undefined) unknown++;
    else if (a !== b) crossed++;
  }
  return { pairs: ports.length, crossed, unknown };
}

/** Whether `derp serve --help` lists --workers. */
export function serveHasWorkersFlag(node: string, runJs: string, cwd: string): boolean {
  const r = spawnSync(node, [runJs, 'serve', '--help'], { cwd, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return /--workers\b/.test(r.stdout ?? '');
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((res, rej) => {
    s.once('error', rej);
    s.listen(0, '127.0.0.1', res);
  });
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((res) => s.close(() => res()));
  return port;
}

/** Polls until `want` processes of the tree listen on the port, or WORKERS_WAIT_MS passes; returns what it saw. */
async function waitListening(pid: number, port: number, want: number): Promise<{ listening: number; processes: number }> {
  const deadline = performance.now() + WORKERS_WAIT_MS;
  for (;;) {
    const tree = procTree(pid);
    const listening = portOwners(tree, port).listeners.size;
    if (listening >= want || performance.now() > deadline) return { listening, processes: tree.length };
    await sleep(POLL_MS);
  }
}

// ---------------------------------------------------------------- the stage

export interface ScalingOptions {
  n: number;
  timing: Timing;
  concurrency: number;
  serverArgs: string[];
  /** Generator workers (already forked); pinned and unpinned per cell. */
  workers: Worker[];
  rounds: number;
  flag: boolean;
  progress: (msg: string) => void;
}

async function runCell(o: ScalingOptions & { affinity: string | null }, w: number, placement: Placement): Promise<ScalingCell> {
  // Generator on the first CPU this process may use, the relay on the rest; unpinned = this process's own set.
  const all = o.affinity ?? '';
  const mine = o.affinity ? parseCpuList(o.affinity) : [];
  const relayCpus = placement === 'pinned' ? mine.slice(1).join(',') : 'all';
  const generatorCpus = placement === 'pinned' ? String(mine[0]) : 'all';
  const taskset = o.affinity !== null;
  const cell: ScalingCell = { placement, workers: w, listening: 0, processes: 0, relayCpus, generatorCpus, throughput: null, crossed: null, handshakes: null, relayAffinity: [], throughputByProcess: [], handshakesByProcess: [], error: null };
  const gens = [process.pid, ...o.workers.map((x) => x.pid).filter((p): p is number => p !== undefined)];
  let server: ServerHandle | null = null;
  let seen: number[] = [];
  try {
    if (taskset) for (const p of gens) pin(p, placement === 'pinned' ? generatorCpus : all);
    const port = await freePort();
    o.progress(`scaling: derp serve --workers ${w}, ${placement === 'pinned' ? `relay on CPU ${relayCpus}, generator on CPU ${generatorCpus}` : 'all cores shared'}`);
    server = await startServer(`derp serve --workers ${w} (${placement})`, relayArgs(['--workers', String(w), '--metrics-addr', 'none', ...o.serverArgs], `127.0.0.1:${port}`), {
      wrap: placement === 'pinned' ? ['taskset', '-c', relayCpus] : [],
    });
    const pid = server.pid!;
    const up = await waitListening(pid, port, w);
    cell.listening = up.listening;
    cell.processes = up.processes;
    seen = procTree(pid);
    if (taskset) cell.relayAffinity = [...new Set(seen.map(affinityOf).filter((a): a is string => a !== null))];
    if (w > 1 && up.listening < 2) {
      cell.error = `workers not available: derp serve --workers ${w} ran ${up.processes} process(es), ${up.listening} listening on the port`;
      return cell;
    }
    // runThroughput and runHandshakes each read the CPU twice, at the start and the end of their measurement.
    const reads: TreeCpu[] = [];
    const target: ServerHandle = {
      ...server,
      cpu: () => {
        const c = procTreeCpuSplitUs(pid);
        reads.push(c);
        return c;
      },
    };
    cell.throughput = await runThroughput(target, o.workers, SCALING_PAIRS, SCALING_SIZE, o.timing, 0, {
      onReady: (ports) => {
        cell.crossed = crossedPairs(ports, portOwners(procTree(pid), port).byClientPort);
      },
    });
    cell.throughputByProcess = shareByProcess(reads[0], reads[1]);
    cell.handshakes = await runHandshakes(target, o.workers, o.concurrency, o.timing.durationMs);
    cell.handshakesByProcess = shareByProcess(reads[2], reads[3]);
    seen = [...new Set([...seen, ...procTree(pid)])];
  } catch (err) {
    cell.error = describeError(err);
  } finally {
    await server?.stop();
    // A worker that outlived its supervisor is ours to end (by pid: only processes this cell started).
    for (const p of seen.slice(1)) {
      try {
        process.kill(p, 0);
        process.kill(p, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    if (taskset) for (const p of gens) {
      try {
        pin(p, all);
      } catch {
        // A generator worker that died is reported by the next stage that uses it.
      }
    }
  }
  return cell;
}

/** Cell order per placement: W=1, W=N, then (second round) W=N, W=1, so a drift in the machine's load hits both alike. */
export function cellOrder(n: number, rounds: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < rounds; r++) out.push(...(r % 2 === 0 ? [1, n] : [n, 1]));
  return out;
}

export async function runScaling(o: ScalingOptions): Promise<ScalingReport> {
  const timing = { warmupMs: Math.min(o.timing.warmupMs, MAX_WARMUP_MS), durationMs: Math.min(o.timing.durationMs, MAX_DURATION_MS) };
  const affinity = ownAffinity();
  const taskset = affinity !== null;
  const cpus = affinity ? parseCpuList(affinity).length : 1;
  const report: ScalingReport = {
    n: o.n,
    pairs: SCALING_PAIRS,
    size: SCALING_SIZE,
    concurrency: o.concurrency,
    timing,
    rounds: o.rounds,
    flag: o.flag,
    workersAvailable: false,
    taskset,
    affinity,
    cells: [],
    notes: [],
  };
  const opts = { ...o, timing, affinity };
  if (!o.flag) report.notes.push('derp serve --help does not list --workers: only the one-process figures are measured');
  if (!taskset) report.notes.push('taskset (util-linux) not found or not permitted: the pinned cells are skipped (apt-get install util-linux)');
  if (taskset && cpus < 2) report.notes.push(`this process may use one CPU (${affinity}): nothing to pin apart, the pinned cells are skipped`);
  const placements: Placement[] = taskset && cpus >= 2 ? ['shared', 'pinned'] : ['shared'];
  let unavailable = !o.flag;
  for (const placement of placements) {
    for (const w of cellOrder(o.n, o.rounds)) {
      // The flag parses but runs one process (the workers are not built yet): said once, W=1 still measured.
      if (w > 1 && unavailable) continue;
      const cell = await runCell(opts, w, placement);
      report.cells.push(cell);
      if (w === 1) continue;
      if (cell.listening >= 2) report.workersAvailable = true;
      else if (cell.error?.startsWith('workers not available')) {
        report.notes.push(cell.error);
        unavailable = true;
      }
    }
  }
  return report;
}

// ---------------------------------------------------------------- the table

const int = (n: number | null | undefined): string => (n === null || n === undefined || !Number.isFinite(n) ? '—' : Math.round(n).toLocaleString('en-US'));
const fix = (n: number | null | undefined, d: number): string => (n === null || n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(d));
const ratio = (a: number | null | undefined, b: number | null | undefined): string => (a != null && b != null && b > 0 && Number.isFinite(a) ? `${(a / b).toFixed(2)}×` : '—');

export const SCALING_HEAD = {
  throughput: ['relay', 'placement', 'procs (listening)', 'pkts/s', 'other rounds', 'Mbit/s', 'pairs crossed', 'relay µs/pkt', 'relay CPU %', 'gen CPU %', 'pkts/s per relay core', 'W=N / W=1', 'relay CPU by process'],
  handshakes: ['relay', 'placement', 'procs (listening)', 'handshakes/s', 'other rounds', 'relay µs/hs', 'hs/s per relay core', 'gen µs/hs', 'W=N / W=1', 'relay CPU by process'],
};

/** The figure of the rounds not shown (the spread the machine gave), e.g. "202,281"; "" with one round. */
function others(cells: ScalingCell[], shown: ScalingCell, f: (c: ScalingCell) => number | undefined): string {
  return cells
    .filter((c) => c !== shown && !c.error && f(c) !== undefined)
    .map((c) => int(f(c)))
    .join(', ');
}

/** "parent 1 %, 50 %, 49 %": the serve process first, then its descendants. */
export function sharesText(shares: ProcessShare[]): string {
  if (shares.length < 2) return shares.length === 1 ? 'one process' : '—';
  return shares.map((x, i) => `${i === 0 ? 'parent ' : ''}${x.pct.toFixed(0)} %`).join(', ');
}

function placementText(c: ScalingCell): string {
  return c.placement === 'pinned' ? `relay CPU ${c.relayCpus}, gen CPU ${c.generatorCpus}` : 'shared (all cores)';
}

interface Group {
  placement: Placement;
  workers: number;
  cells: ScalingCell[];
  /** The round with the most packets/s, and the one with the most handshakes/s (null: none measured). */
  throughput: ScalingCell | null;
  handshakes: ScalingCell | null;
  error: string | null;
}

/** The cells by (placement, W) in order of first appearance, with each group's best rounds. */
export function scalingGroups(r: ScalingReport): Group[] {
  const groups: Group[] = [];
  for (const c of r.cells) {
    let g = groups.find((x) => x.placement === c.placement && x.workers === c.workers);
    if (!g) {
      g = { placement: c.placement, workers: c.workers, cells: [], throughput: null, handshakes: null, error: null };
      groups.push(g);
    }
    g.cells.push(c);
  }
  for (const g of groups) {
    const best = (f: (c: ScalingCell) => number | undefined): ScalingCell | null =>
      g.cells.filter((c) => !c.error && f(c) !== undefined).reduce<ScalingCell | null>((a, c) => (a === null || f(c)! > f(a)! ? c : a), null);
    g.throughput = best((c) => c.throughput?.pps);
    g.handshakes = best((c) => c.handshakes?.perSec);
    g.error = g.cells.find((c) => c.error)?.error ?? null;
  }
  return groups;
}

/**
 * One row per (placement, W) and table, from its best round; the W=N rows carry their ratio to the W=1
 * row of the same placement, measured in the same run. A group without figures is a row of four: the
 * reason in place of them.
 */
export function scalingRows(r: ScalingReport): { throughput: string[][]; handshakes: string[][] } {
  const out = { throughput: [] as string[][], handshakes: [] as string[][] };
  const groups = scalingGroups(r);
  for (const g of groups) {
    const shown = g.throughput ?? g.handshakes ?? g.cells[0]!;
    const head = [`--workers ${g.workers}`, placementText(shown), `${shown.processes} (${shown.listening})`];
    const one = g.workers > 1 ? groups.find((x) => x.placement === g.placement && x.workers === 1) : undefined;
    const t = g.throughput?.throughput;
    if (!t) out.throughput.push([...head, g.error ?? 'no figures']);
    else {
      const crossed = g.throughput!.crossed;
      out.throughput.push([
        ...head,
        int(t.pps),
        others(g.cells, g.throughput!, (c) => c.throughput?.pps),
        int(t.mbps),
        crossed ? `${crossed.crossed} of ${crossed.pairs}${crossed.unknown ? ` (${crossed.unknown} unknown)` : ''}` : '—',
        fix(t.serverCpuUsPerPkt, 2),
        fix(t.serverCpuPct, 0),
        fix(t.genCpuPct, 0),
        // What one core of relay does at this cost per packet (the relay is CPU-bound; a bigger host adds cores).
        t.serverCpuUsPerPkt ? int(1e6 / t.serverCpuUsPerPkt) : '—',
        one ? ratio(t.pps, one.throughput?.throughput?.pps) : '',
        sharesText(g.throughput!.throughputByProcess),
      ]);
    }
    const h = g.handshakes?.handshakes;
    if (!h) out.handshakes.push([...head, g.error ?? 'no figures']);
    else {
      out.handshakes.push([
        ...head,
        int(h.perSec),
        others(g.cells, g.handshakes!, (c) => c.handshakes?.perSec),
        fix(h.serverCpuUsPerHandshake, 0),
        h.serverCpuUsPerHandshake ? int(1e6 / h.serverCpuUsPerHandshake) : '—',
        fix(h.genCpuUsPerHandshake, 0),
        one ? ratio(h.perSec, one.handshakes?.handshakes?.perSec) : '',
        sharesText(g.handshakes!.handshakesByProcess),
      ]);
    }
  }
  return out;
}

/**
 * Tailscale's derper handshakes/s, as measured elsewhere (no derper binary here): the README Performance
 * table's ≈ 4,300/s (the same kind of 2-core machine, independent generator), and issue 7's one run of
 * both servers with an independent generator, 64 concurrent: derp serve ≈ 2,900/s, derper ≈ 3,600/s.
 */
export const DERPER_HANDSHAKES = { readme: 4300, issue7: { derper: 3600, ours: 2900 } } as const;
export const HANDSHAKE_TARGET = 1.5;

/** Our best handshakes/s (W=N, all cores shared, as a deployment runs) against derper's figures and the ≥ 1.5× target. */
export function handshakeVerdict(r: ScalingReport): { ours: number; workers: number; vsReadme: number; vsIssue7: number; sameRunProxy: number | null } | null {
  const groups = scalingGroups(r).filter((g) => g.placement === 'shared');
  const best = groups.filter((g) => g.handshakes).sort((a, b) => b.handshakes!.handshakes!.perSec - a.handshakes!.handshakes!.perSec)[0];
  if (!best) return null;
  const ours = best.handshakes!.handshakes!.perSec;
  const one = groups.find((g) => g.workers === 1)?.handshakes?.handshakes?.perSec;
  // Without a derper here: derper ≈ (3,600 / 2,900) × our one process in the same conditions.
  const proxy = one ? ours / (one * (DERPER_HANDSHAKES.issue7.derper / DERPER_HANDSHAKES.issue7.ours)) : null;
  return { ours, workers: best.workers, vsReadme: ours / DERPER_HANDSHAKES.readme, vsIssue7: ours / DERPER_HANDSHAKES.issue7.derper, sameRunProxy: proxy };
}

export interface HostPrediction {
  cores: number;
  pktsPerSec: number;
  handshakesPerSec: number;
}

/**
 * What K cores of relay would do, one worker per core with the generator elsewhere, from the per-core
 * costs measured here (pinned cells when there are any, else shared): a packet costs c₁ (W=1) plus Δ
 * when its pair crosses workers, Δ = (c_N − c₁ at the nearest rate) / (share of pairs crossed at W=N), and with K random
 * workers a pair crosses with probability (K−1)/K; a handshake costs h₁ plus, per other worker, the
 * presence news it floods, (h_N − h₁) / (N − 1). Capacity = K × 10⁶ / cost. The W=N cells time-share
 * one core (pinned), so the context switches they pay make Δ, and the prediction, conservative.
 */
export function predictHost(r: ScalingReport, cores: number[]): { from: Placement; rows: HostPrediction[] } | null {
  const groups = scalingGroups(r);
  for (const from of ['pinned', 'shared'] as const) {
    const one = groups.find((g) => g.placement === from && g.workers === 1);
    const many = groups.find((g) => g.placement === from && g.workers === r.n && r.n > 1);
    const c1 = one?.throughput?.throughput?.serverCpuUsPerPkt;
    const cn = many?.throughput?.throughput?.serverCpuUsPerPkt;
    // Δ against the W=1 round nearest the W=N rate: a slower run pays more per packet (fewer packets per
    // write), which is not the mesh's cost.
    const rateN = many?.throughput?.throughput?.pps ?? 0;
    const near = one?.cells
      .filter((c) => !c.error && c.throughput?.serverCpuUsPerPkt)
      .sort((a, b) => Math.abs(a.throughput!.pps - rateN) - Math.abs(b.throughput!.pps - rateN))[0]?.throughput?.serverCpuUsPerPkt;
    const crossed = many?.throughput?.crossed;
    const h1 = one?.handshakes?.handshakes?.serverCpuUsPerHandshake;
    const hn = many?.handshakes?.handshakes?.serverCpuUsPerHandshake;
    if (!c1 || !cn || !crossed || crossed.crossed === 0 || !h1 || !hn) continue;
    const delta = Math.max(0, cn - (near ?? c1)) / (crossed.crossed / (crossed.pairs - crossed.unknown));
    const perPeer = Math.max(0, hn - h1) / (r.n - 1);
    return {
      from,
      rows: cores.map((k) => ({ cores: k, pktsPerSec: (k * 1e6) / (c1 + ((k - 1) / k) * delta), handshakesPerSec: (k * 1e6) / (h1 + (k - 1) * perPeer) })),
    };
  }
  return null;
}
