/** What /proc says about a process (CPU time, RSS, fd limit): the server's and the generator's cost. */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { ConnectError } from '../errors.js';

let clockTicks: number | null = null;
/** Kernel clock ticks per second for /proc/<pid>/stat times (getconf CLK_TCK; 100 on Linux in practice). */
function clkTck(): number {
  if (clockTicks === null) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(r.stdout?.trim());
    clockTicks = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return clockTicks;
}

/** utime and stime of a process, µs: user space (JS, crypto) and kernel (syscalls: accept, read, write, close). */
export function procCpuSplitUs(pid: number): { user: number; sys: number } {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (proc(5)).
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { user: (Number(f[11]) * 1e6) / clkTck(), sys: (Number(f[12]) * 1e6) / clkTck() };
}

/** utime + stime of a process, µs. */
export function procCpuUs(pid: number): number {
  const c = procCpuSplitUs(pid);
  return c.user + c.sys;
}

/** Resident set size, KiB (VmRSS). */
export function procRssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new ConnectError(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** A thread's scheduler times (schedstat): ns on a CPU, ns runnable but waiting for one, and times it was put on one. */
export interface SchedStat {
  cpuNs: number;
  waitNs: number;
  slices: number;
}

/** /proc/<pid>/task/<tid>/schedstat: three counters (Documentation/scheduler/sched-stats). */
export function parseSchedStat(text: string): SchedStat {
  const f = text.trim().split(/\s+/).map(Number);
  if (f.length !== 3 || f.some((n) => !Number.isFinite(n) || n < 0)) throw new ConnectError(`not a schedstat line: ${JSON.stringify(text.slice(0, 80))}`);
  return { cpuNs: f[0]!, waitNs: f[1]!, slices: f[2]! };
}

/** One thread's schedstat (the main thread by default); null where the kernel keeps none or the thread is gone. */
export function threadSchedStat(pid: number, tid: number = pid): SchedStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return parseSchedStat(text);
}

/** Soft RLIMIT_NOFILE of a process. Node raises its own soft limit to the hard limit at start-up. */
export function procOpenFilesLimit(pid: number | 'self'): number | undefined {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) return undefined;
  return m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

/** Whether a process with this pid exists and is not a zombie (it died, its parent did not reap it). */
export function procAlive(pid: number): boolean {
  if (!existsSync(`/proc/${pid}/stat`)) return false;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3) !== 'Z';
  } catch (err) {
    // Gone between the two reads.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

/** The fields of one /proc/<pid>/stat line the bench uses; times in clock ticks. */
export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  utime: number;
  stime: number;
  /** Times of children that exited and were reaped (waited for) by this process. */
  cutime: number;
  cstime: number;
}

/** Parses a /proc/<pid>/stat line (proc(5)); the command name may hold spaces and parentheses. */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new ConnectError(`not a /proc stat line: ${JSON.stringify(text.slice(0, 80))}`);
  // Fields from 3 (state) on; utime..cstime are fields 14–17.
  const f = text.slice(close + 2).trim().split(/\s+/);
  const n = (i: number): number => {
    const v = Number(f[i]);
    if (!Number.isFinite(v)) throw new ConnectError(`/proc stat field ${i + 3} is not a number: ${JSON.stringify(f[i])}`);
    return v;
  };
  return { pid: Number(text.slice(0, open).trim()), comm: text.slice(open + 1, close), state: f[0] ?? '?', ppid: n(1), utime: n(11), stime: n(12), cutime: n(13), cstime: n(14) };
}

function readStat(pid: number): ProcStat | null {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch (err) {
    // Gone (exited and reaped) since it was listed.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return null;
    throw err;
  }
}

/** Direct children of a process: /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN), else a scan of /proc for its ppid. */
export function procChildren(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out = new Set<number>();
  let listed = false;
  for (const t of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ')) if (c.trim()) out.add(Number(c));
      listed = true;
    } catch {
      // A thread that ended, or a kernel without the children file.
    }
  }
  if (listed) return [...out];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    if (readStat(Number(e))?.ppid === pid) out.add(Number(e));
  }
  return [...out];
}

/** A process and all its live descendants, parents first. */
export function procTree(pid: number): number[] {
  const seen = new Set<number>([pid]);
  const order = [pid];
  for (let i = 0; i < order.length; i++) {
    for (const c of procChildren(order[i]!)) {
      if (seen.has(c)) continue;
      seen.add(c);
      order.push(c);
    }
  }
  return order.filter((p) => existsSync(`/proc/${p}/stat`));
}

/**
 * Sums the stat lines of a process tree, µs. Each process counts its own time plus its reaped
 * children's (cutime, cstime): a worker that exits and is reaped by the supervisor moves from the live
 * sum into its parent's, so the total keeps growing instead of dropping by what that worker spent.
 */
export function sumTreeCpuUs(stats: ProcStat[], ticksPerSec: number): { user: number; sys: number } {
  let user = 0;
  let sys = 0;
  for (const s of stats) {
    user += s.utime + s.cutime;
    sys += s.stime + s.cstime;
  }
  return { user: (user * 1e6) / ticksPerSec, sys: (sys * 1e6) / ticksPerSec };
}

/** utime and stime of a process and all its descendants (e.g. `derp serve --workers N`), µs; and each process's part. */
export function procTreeCpuSplitUs(pid: number): { user: number; sys: number; pids: number[]; perPid: { pid: number; us: number }[] } {
  const stats = procTree(pid).map(readStat).filter((s): s is ProcStat => s !== null);
  const hz = clkTck();
  return {
    ...sumTreeCpuUs(stats, hz),
    pids: stats.map((s) => s.pid),
    perPid: stats.map((s) => ({ pid: s.pid, us: ((s.utime + s.stime + s.cutime + s.cstime) * 1e6) / hz })),
  };
}
