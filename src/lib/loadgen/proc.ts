/** What /proc says about a process (CPU time, RSS, fd limit): the server's and the generator's cost. */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
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
