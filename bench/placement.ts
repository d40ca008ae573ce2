/**
 * CPU placement for the bench's processes (taskset): which CPUs a process may run on, and pinning every
 * thread of one. The scaling stage gives relays and generators their own cores; the flood keeps the
 * attacker off the relay's core, as it is on the internet.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

/** CPUs of a taskset list such as "0-3,6" (ascending, no duplicates). */
export function parseCpuList(list: string): number[] {
  const out = new Set<number>();
  for (const part of list.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new Error(`not a CPU list: ${JSON.stringify(list)}`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    for (let c = a; c <= b; c++) out.add(c);
  }
  return [...out].sort((x, y) => x - y);
}

/** A process's CPU affinity list per `taskset -c -p` ("pid 7's current affinity list: 0,1"), or null. */
export function affinityOf(pid: number): string | null {
  const r = spawnSync('taskset', ['-c', '-p', String(pid)], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout) return null;
  const list = r.stdout.slice(r.stdout.lastIndexOf(':') + 1).trim();
  try {
    parseCpuList(list);
    return list;
  } catch {
    return null;
  }
}

/** This process's CPU affinity list per `taskset -c -p` ("pid 7's current affinity list: 0,1"), or null without taskset. */
export function ownAffinity(): string | null {
  return affinityOf(process.pid);
}

function taskset(args: string[]): void {
  const r = spawnSync('taskset', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset ${args.join(' ')} failed: ${(r.stderr || r.stdout || String(r.error)).trim()}`);
}

/** Pins every thread of a running process to `cpus` (a taskset list, e.g. "0" or "0-1"). */
export function pin(pid: number, cpus: string): void {
  taskset(['-a', '-p', '-c', cpus, String(pid)]);
}

/** Pins one thread (a pid is its main thread's id): threads it starts later inherit the mask, running ones keep theirs. */
export function pinThread(tid: number, cpus: string): void {
  taskset(['-p', '-c', cpus, String(tid)]);
}

/** The thread ids of a running process other than its main thread (V8's and libuv's helpers), from /proc. */
export function helperThreads(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .filter((tid) => tid !== pid);
}

/** Pins every thread of a process but its main one: they keep off the CPU its event loop was given. */
export function pinHelpers(pid: number, cpus: string): void {
  for (const tid of helperThreads(pid)) {
    try {
      pinThread(tid, cpus);
    } catch (err) {
      // A thread that ended between the listing and taskset: nothing to pin.
      if (helperThreads(pid).includes(tid)) throw err;
    }
  }
}
