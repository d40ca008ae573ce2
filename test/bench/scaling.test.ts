// The scaling stage's pure parts (bench/scaling.ts, src/lib/loadgen/proc.ts): stat parsing, the process
// tree walk and its CPU sum, which process accepted which client, and the ratio table. The /proc parts
// read a real tree the test starts: a parent and two workers sharing a port with reusePort, as
// `derp serve --workers 2` is built.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cellOrder, crossedPairs, handshakeVerdict, predictHost, shareByProcess, sharesText, parseProcNetTcp, portOwners, scalingRows, TCP_LISTEN, type ScalingCell, type ScalingReport } from '../../bench/scaling.js';
import { parseProcStat, parseSchedStat, procChildren, procCpuSplitUs, procTree, procTreeCpuSplitUs, sumTreeCpuUs, threadSchedStat } from '../../src/lib/loadgen/index.js';
import type { HandshakeResult, ThroughputResult } from '../../src/lib/loadgen/index.js';
import { parseOptions } from '../../bench/options.js';
import { affinityOf, helperThreads, parseCpuList, pinHelpers } from '../../bench/placement.js';
import { NODE } from '../helpers/cli.js';

// Parent: forks two workers, prints their pids and the port, relays "accepted" lines, and on "end" on
// stdin stops the first worker and says "reaped" once Node has waited for it. Workers listen on the one
// port with reusePort and burn some CPU first, so their times are not zero.
const SCRIPT = `
import { fork } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
const [, self, role, portArg] = process.argv;
if (role === 'worker') {
  const until = performance.now() + 200;
  while (performance.now() < until);
  const srv = createServer((s) => { process.send({ accepted: s.remotePort }); s.on('error', () => {}); });
  srv.listen({ host: '127.0.0.1', port: Number(portArg), reusePort: true }, () => process.send({ listening: true }));
  process.on('message', (m) => { if (m === 'exit') process.exit(0); });
} else {
  const probe = createServer();
  probe.listen(0, '127.0.0.1', () => {
    const port = probe.address().port;
    probe.close(() => {
      const ws = [fork(self, ['worker', String(port)]), fork(self, ['worker', String(port)])];
      let up = 0;
      for (const w of ws) w.on('message', (m) => {
        if (m.listening && ++up === ws.length) console.log(JSON.stringify({ port, workers: ws.map((x) => x.pid) }));
        if (m.accepted) console.log(JSON.stringify({ accepted: m.accepted, by: w.pid }));
      });
      createInterface({ input: process.stdin }).on('line', (l) => {
        if (l !== 'end') return;
        ws[0].once('exit', () => console.log(JSON.stringify({ reaped: ws[0].pid })));
        ws[0].send('exit');
      });
      process.stdin.on('end', () => { for (const w of ws) w.kill(); process.exit(0); });
    });
  });
}
`;

interface Line {
  port?: number;
  workers?: number[];
  accepted?: number;
  by?: number;
  reaped?: number;
}

let proc: ChildProcess;
let port = 0;
let workers: number[] = [];
const lines: Line[] = [];
const waiters: (() => void)[] = [];

/** Resolves with the first line (seen or to come) that matches. */
function lineWhere(pred: (l: Line) => boolean): Promise<Line> {
  return new Promise((res) => {
    const look = (): void => {
      const l = lines.find(pred);
      if (l) res(l);
      else waiters.push(look);
    };
    look();
  });
}

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'scaling-'));
  const file = join(dir, 'tree.mjs');
  writeFileSync(file, SCRIPT);
  proc = spawn(NODE, [file], { stdio: ['pipe', 'pipe', 'inherit'] });
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    lines.push(JSON.parse(l) as Line);
    for (const w of waiters.splice(0)) w();
  });
  const first = await lineWhere((l) => l.workers !== undefined);
  port = first.port!;
  workers = first.workers!;
});

afterAll(async () => {
  if (proc.exitCode !== null) return;
  const gone = new Promise((res) => proc.once('exit', res));
  proc.stdin!.end();
  await gone;
});

describe('parseProcStat', () => {
  it('reads the fields after a command name holding spaces and parentheses', () => {
    // Fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime …
    const s = parseProcStat('4242 (node (a) b) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 40 7 3 20 0 11 0 999 1000 2000');
    expect(s).toEqual({ pid: 4242, comm: 'node (a) b', state: 'S', ppid: 17, utime: 250, stime: 40, cutime: 7, cstime: 3 });
  });

  it('refuses text that is not a stat line', () => {
    expect(() => parseProcStat('no parentheses here')).toThrow(/not a \/proc stat line/);
    expect(() => parseProcStat('1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 1 1 1')).toThrow(/field 14/);
  });

  it('reads a real child: its parent is the one that forked it', () => {
    const s = parseProcStat(readFileSync(`/proc/${workers[0]}/stat`, 'utf8'));
    expect(s.pid).toBe(workers[0]);
    expect(s.ppid).toBe(proc.pid);
  });
});

describe('schedstat', () => {
  it('reads a thread\'s time on a CPU and waiting for one, and says what was wrong with a bad line', () => {
    expect(parseSchedStat('1311927913 622510457 5617\n')).toEqual({ cpuNs: 1311927913, waitNs: 622510457, slices: 5617 });
    expect(() => parseSchedStat('1311927913 622510457')).toThrow(/not a schedstat line: "1311927913 622510457"/);
    expect(() => parseSchedStat('a b c')).toThrow(/not a schedstat line/);
    // This process's event loop has run; a pid that is gone has none.
    expect(threadSchedStat(process.pid)!.cpuNs).toBeGreaterThan(0);
    expect(threadSchedStat(2 ** 22 + 1)).toBeNull();
  });
});

describe('the process tree', () => {
  it('finds the parent and both workers, and nothing of the test runner', () => {
    expect(procChildren(proc.pid!).sort()).toEqual([...workers].sort());
    const tree = procTree(proc.pid!);
    expect(tree[0]).toBe(proc.pid);
    expect(tree.slice(1).sort()).toEqual([...workers].sort());
    expect(tree).not.toContain(process.pid);
  });

  it('sums the tree: at least each member read alone just before', () => {
    const alone = [proc.pid!, ...workers].map((p) => procCpuSplitUs(p));
    const tree = procTreeCpuSplitUs(proc.pid!);
    expect(tree.pids.sort()).toEqual([proc.pid!, ...workers].sort());
    const sum = alone.reduce((a, c) => a + c.user + c.sys, 0);
    // The workers burned CPU before listening, so the tree is more than its parent.
    expect(alone[1]!.user + alone[2]!.user).toBeGreaterThan(0);
    expect(tree.user + tree.sys).toBeGreaterThanOrEqual(sum);
  });

  it('counts reaped children through cutime/cstime', () => {
    const withKids = sumTreeCpuUs(
      [
        { pid: 1, comm: 'p', state: 'S', ppid: 0, utime: 10, stime: 5, cutime: 100, cstime: 20 },
        { pid: 2, comm: 'w', state: 'S', ppid: 1, utime: 30, stime: 6, cutime: 0, cstime: 0 },
      ],
      100,
    );
    expect(withKids).toEqual({ user: 1_400_000, sys: 310_000 });
  });

  it('does not drop when a worker exits and is reaped: its time moves to the parent', async () => {
    const before = procTreeCpuSplitUs(proc.pid!);
    const gone = procCpuSplitUs(workers[0]!);
    const parent0 = parseProcStat(readFileSync(`/proc/${proc.pid}/stat`, 'utf8'));
    proc.stdin!.write('end\n');
    await lineWhere((l) => l.reaped === workers[0]);
    const after = procTreeCpuSplitUs(proc.pid!);
    const parent1 = parseProcStat(readFileSync(`/proc/${proc.pid}/stat`, 'utf8'));
    expect(after.pids).not.toContain(workers[0]);
    expect(after.user + after.sys).toBeGreaterThanOrEqual(before.user + before.sys);
    // The kernel added at least what the worker had spent when it was last read.
    const hz = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
    const ticks = (parent1.cutime + parent1.cstime - parent0.cutime - parent0.cstime) * (1e6 / hz);
    expect(ticks).toBeGreaterThanOrEqual(gone.user + gone.sys);
  });
});

describe('pinning', () => {
  it('reads back the CPU a child was started on with taskset -c', async () => {
    const child = spawn('taskset', ['-c', '0', NODE, '-e', 'console.log("up"); process.stdin.resume()'], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      // Node's first line: taskset has set the mask and exec'd it.
      await new Promise<void>((res, rej) => {
        child.stdout!.once('data', () => res());
        child.once('error', rej);
      });
      // taskset sets the mask and execs node in the same process.
      expect(affinityOf(child.pid!)).toBe('0');
      expect(affinityOf(process.pid)).not.toBeNull();
    } finally {
      const gone = new Promise((res) => child.once('exit', res));
      child.stdin!.end();
      await gone;
    }
  });

  it('moves a process\'s helper threads to other CPUs and leaves its main thread where it was', async () => {
    const cpus = parseCpuList(affinityOf(process.pid)!);
    // The flood needs two CPUs for this; so does the test.
    expect(cpus.length).toBeGreaterThanOrEqual(2);
    const main = String(cpus[0]);
    const rest = cpus.slice(1).join(',');
    const child = spawn('taskset', ['-c', main, NODE, '-e', 'console.log("up"); process.stdin.resume()'], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((res, rej) => {
        child.stdout!.once('data', () => res());
        child.once('error', rej);
      });
      const helpers = helperThreads(child.pid!);
      // V8's platform workers at least.
      expect(helpers.length).toBeGreaterThan(0);
      expect(helpers).not.toContain(child.pid);
      pinHelpers(child.pid!, rest);
      expect(affinityOf(child.pid!)).toBe(main);
      for (const tid of helpers) expect(parseCpuList(affinityOf(tid)!)).toEqual(parseCpuList(rest));
    } finally {
      const gone = new Promise((res) => child.once('exit', res));
      child.stdin!.end();
      await gone;
    }
  });
});

describe('which process accepted which client', () => {
  it('finds the listeners and maps each client port to the worker that says it accepted it', async () => {
    const live = workers.slice(1).concat(procTree(proc.pid!).includes(workers[0]!) ? [workers[0]!] : []);
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        const s = connect(port, '127.0.0.1');
        sockets.push(s);
        await new Promise<void>((res, rej) => s.once('connect', res).once('error', rej));
      }
      const reports = await Promise.all(sockets.map((s) => lineWhere((l) => l.accepted === s.localPort)));
      const tree = procTree(proc.pid!);
      const { listeners, byClientPort } = portOwners(tree, port);
      expect([...listeners.keys()].sort()).toEqual([...live].sort());
      expect(listeners.has(proc.pid!)).toBe(false);
      for (const r of reports) expect(byClientPort.get(r.accepted!)).toBe(r.by);
      const ports = sockets.map((s) => s.localPort!);
      const pairs: [number, number][] = [[ports[0]!, ports[1]!], [ports[2]!, ports[3]!], [ports[4]!, ports[5]!], [ports[0]!, 1]];
      const by = new Map(reports.map((r) => [r.accepted!, r.by!]));
      const expected = pairs.slice(0, 3).filter(([a, b]) => by.get(a) !== by.get(b)).length;
      expect(crossedPairs(pairs, byClientPort)).toEqual({ pairs: 4, crossed: expected, unknown: 1 });
    } finally {
      for (const s of sockets) s.destroy();
    }
  });

  it('parses /proc/net/tcp: the listening socket is there, LISTEN, with an inode', () => {
    const rows = parseProcNetTcp(readFileSync('/proc/net/tcp', 'utf8')).filter((r) => r.localPort === port && r.state === TCP_LISTEN);
    expect(rows.length).toBeGreaterThanOrEqual(1);
    for (const r of rows) expect(r.inode).toBeGreaterThan(0);
  });
});

describe('the ratio table', () => {
  const tp = (pps: number, us: number): ThroughputResult => ({ pps, mbps: (pps * 1200 * 8) / 1e6, serverCpuUsPerPkt: us, serverCpuPct: 90, genCpuPct: 80 }) as ThroughputResult;
  const hs = (perSec: number, us: number): HandshakeResult => ({ perSec, serverCpuUsPerHandshake: us, genCpuUsPerHandshake: 150 }) as HandshakeResult;
  const cell = (workers: number, placement: 'shared' | 'pinned', t: ThroughputResult | null, h: HandshakeResult | null, error: string | null = null): ScalingCell => ({
    placement,
    workers,
    listening: error ? 1 : workers,
    processes: error ? 1 : workers + 1,
    relayCpus: placement === 'pinned' ? '1' : 'all',
    generatorCpus: placement === 'pinned' ? '0' : 'all',
    throughput: t,
    crossed: t ? { pairs: 32, crossed: workers > 1 ? 15 : 0, unknown: 0 } : null,
    handshakes: h,
    relayAffinity: [],
    throughputByProcess: [],
    handshakesByProcess: [],
    error,
  });
  const report = (cells: ScalingCell[]): ScalingReport => ({ n: 2, pairs: 32, size: 1200, concurrency: 64, timing: { warmupMs: 1000, durationMs: 3000 }, rounds: 2, flag: true, workersAvailable: true, taskset: true, affinity: '0,1', cells, notes: [] });

  it('divides each W=N row by the W=1 row of the same placement, from the same run', () => {
    const rows = scalingRows(
      report([cell(1, 'shared', tp(1_000_000, 0.8), hs(3000, 250)), cell(2, 'shared', tp(1_200_000, 1.0), hs(4500, 260)), cell(1, 'pinned', tp(500_000, 0.5), hs(2000, 200)), cell(2, 'pinned', tp(400_000, 0.625), hs(2200, 230))]),
    );
    expect(rows.throughput.map((r) => r.at(-2))).toEqual(['', '1.20×', '', '0.80×']);
    expect(rows.handshakes.map((r) => r.at(-2))).toEqual(['', '1.50×', '', '1.10×']);
    // Per relay core: 10⁶ / µs per packet.
    expect(rows.throughput[2]![10]).toBe('2,000,000');
    expect(rows.throughput[1]![6]).toBe('15 of 32');
    expect(rows.throughput[3]![1]).toBe('relay CPU 1, gen CPU 0');
    expect(rows.handshakes[0]![6]).toBe('4,000');
  });

  it('gives a cell without figures its reason and no ratio', () => {
    const why = 'workers not available: derp serve --workers 2 ran 1 process(es), 1 listening on the port';
    const rows = scalingRows(report([cell(1, 'shared', tp(1_000_000, 0.8), hs(3000, 250)), cell(2, 'shared', null, null, why), cell(1, 'pinned', tp(500_000, 0.5), hs(2000, 200))]));
    expect(rows.throughput[1]).toEqual(['--workers 2', 'shared (all cores)', '1 (1)', why]);
    expect(rows.handshakes[1]).toEqual(['--workers 2', 'shared (all cores)', '1 (1)', why]);
    expect(rows.throughput.flatMap((r) => r).some((x) => x.endsWith('×'))).toBe(false);
  });

  it('shows each (placement, W) by its best round, and the ratio best against best', () => {
    const r = report([
      cell(1, 'shared', tp(900_000, 0.9), hs(2500, 260)),
      cell(2, 'shared', tp(1_100_000, 1.0), hs(4000, 270)),
      cell(2, 'shared', tp(1_300_000, 0.95), hs(3900, 265)),
      cell(1, 'shared', tp(1_000_000, 0.8), hs(2000, 250)),
    ]);
    const rows = scalingRows(r);
    expect(rows.throughput.map((x) => x[3])).toEqual(['1,000,000', '1,300,000']);
    expect(rows.throughput[1]![7]).toBe('0.95');
    expect(rows.throughput.map((x) => x[4])).toEqual(['900,000', '1,100,000']);
    expect(rows.handshakes.map((x) => x[4])).toEqual(['2,000', '3,900']);
    expect(rows.throughput[1]!.at(-2)).toBe('1.30×');
    // Handshakes pick their own best round: 2,500 (W=1, round 1) and 4,000 (W=2, round 1).
    expect(rows.handshakes.map((x) => x[3])).toEqual(['2,500', '4,000']);
    expect(rows.handshakes[1]!.at(-2)).toBe('1.60×');
    const v = handshakeVerdict(r)!;
    expect(v.ours).toBe(4000);
    expect(v.workers).toBe(2);
    expect(v.vsIssue7).toBeCloseTo(4000 / 3600, 6);
    // derper ≈ 3,600 / 2,900 × our one process (2,500 here).
    expect(v.sameRunProxy).toBeCloseTo(4000 / (2500 * (3600 / 2900)), 6);
  });

  it('orders the rounds W=1, W=N, W=N, W=1', () => {
    expect(cellOrder(2, 1)).toEqual([1, 2]);
    expect(cellOrder(4, 2)).toEqual([1, 4, 4, 1]);
  });

  it('predicts K cores from the pinned costs: Δ per crossing pair and presence news per other worker', () => {
    // c₁ 0.5 µs; at W=2 half the pairs crossed and a packet cost 0.6 µs on average → Δ = 0.2 µs.
    // h₁ 200 µs; at W=2 220 µs → 20 µs per other worker.
    const r = report([cell(1, 'shared', tp(1, 9), hs(1, 999)), cell(1, 'pinned', tp(500_000, 0.5), hs(2000, 200)), cell(2, 'pinned', tp(400_000, 0.6), hs(2200, 220))]);
    r.cells[2]!.crossed = { pairs: 32, crossed: 16, unknown: 0 };
    const p = predictHost(r, [1, 4])!;
    expect(p.from).toBe('pinned');
    expect(p.rows[0]!.pktsPerSec).toBeCloseTo(2_000_000, 3);
    expect(p.rows[1]!.pktsPerSec).toBeCloseTo(4e6 / (0.5 + 0.75 * 0.2), 3);
    expect(p.rows[1]!.handshakesPerSec).toBeCloseTo(4e6 / (200 + 3 * 20), 3);
  });

  it('takes Δ against the W=1 round nearest the W=N rate, and c₁ from the best W=1 round', () => {
    // W=1: 500k pkts/s at 0.5 µs and 100k at 1.0 µs; W=2 ran at 120k, 1.5 µs, half crossed → Δ = (1.5 − 1.0) / 0.5 = 1 µs.
    const r = report([cell(1, 'pinned', tp(500_000, 0.5), hs(2000, 200)), cell(2, 'pinned', tp(120_000, 1.5), hs(2200, 220)), cell(1, 'pinned', tp(100_000, 1.0), hs(1000, 300))]);
    r.cells[1]!.crossed = { pairs: 32, crossed: 16, unknown: 0 };
    const p = predictHost(r, [2])!;
    expect(p.rows[0]!.pktsPerSec).toBeCloseTo(2e6 / (0.5 + 0.5 * 1), 3);
  });

  it('predicts nothing without an N-worker figure', () => {
    expect(predictHost(report([cell(1, 'pinned', tp(500_000, 0.5), hs(2000, 200))]), [4])).toBeNull();
  });

  it('splits the relay CPU by process between two readings (a process new in the second counts from 0)', () => {
    const a = { user: 300, sys: 100, pids: [1, 2], perPid: [{ pid: 1, us: 50 }, { pid: 2, us: 350 }] };
    const b = { user: 900, sys: 300, pids: [1, 2, 3], perPid: [{ pid: 1, us: 60 }, { pid: 2, us: 750 }, { pid: 3, us: 390 }] };
    const s = shareByProcess(a, b);
    expect(s.map((x) => [x.pid, Math.round(x.pct * 100) / 100])).toEqual([[1, 1.25], [2, 50], [3, 48.75]]);
    expect(sharesText(s)).toBe('parent 1 %, 50 %, 49 %');
    expect(sharesText([{ pid: 1, pct: 100 }])).toBe('one process');
    expect(shareByProcess(a, undefined)).toEqual([]);
  });

  it('reads taskset CPU lists', () => {
    expect(parseCpuList('0,1')).toEqual([0, 1]);
    expect(parseCpuList('0-3,6')).toEqual([0, 1, 2, 3, 6]);
    expect(parseCpuList(' 2 ')).toEqual([2]);
    expect(() => parseCpuList('0-')).toThrow(/not a CPU list/);
  });
});

describe('options', () => {
  it('skips the stage with --skip scaling and takes N from --relay-workers (at least 2)', () => {
    expect(parseOptions(['--skip', 'scaling']).skip.has('scaling')).toBe(true);
    expect(parseOptions([]).relayWorkers).toBeGreaterThanOrEqual(2);
    expect(parseOptions(['--relay-workers', '4']).relayWorkers).toBe(4);
    expect(() => parseOptions(['--relay-workers', '1'])).toThrow(/--relay-workers must be at least 2/);
    // --workers stays the generator's process count.
    expect(parseOptions(['--workers', '3', '--relay-workers', '2']).workers).toBe(3);
  });

  it('runs the flood attacks named by --flood-attacks, in the bench order, and refuses an unknown one', () => {
    expect(parseOptions([]).floodAttacks).toEqual(['connect', 'slowloris', 'handshake', 'blast', 'absent']);
    expect(parseOptions(['--flood-attacks', 'absent,handshake']).floodAttacks).toEqual(['handshake', 'absent']);
    expect(() => parseOptions(['--flood-attacks', 'handshake,smurf'])).toThrow(/unknown attack "smurf"/);
    expect(() => parseOptions(['--flood-attacks', ','])).toThrow(/at least one/);
  });

  it('runs --flood-rounds rounds, one by default, and refuses none or more than the bound', () => {
    expect(parseOptions([]).floodRounds).toBe(1);
    expect(parseOptions(['--flood-rounds', '5']).floodRounds).toBe(5);
    expect(() => parseOptions(['--flood-rounds', '0'])).toThrow(/--flood-rounds must be at least 1/);
    expect(() => parseOptions(['--flood-rounds', '21'])).toThrow(/--flood-rounds must be at most 20, got 21/);
    expect(() => parseOptions(['--flood-rounds', 'many'])).toThrow(/--flood-rounds must be a non-negative number, got "many"/);
  });
});
