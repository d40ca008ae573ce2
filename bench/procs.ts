/**
 * Child processes of the bench: the server under test (`derp serve` or the baseline forwarder), the
 * generator workers, and what /proc says about them (CPU time, RSS, fd limit).
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ConnectError, TimeoutError } from '../src/lib/errors.js';
import type { WorkerCommand, WorkerEvent } from './messages.js';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
/** How long a server gets to print its listening line. */
const SERVER_START_TIMEOUT_MS = 20_000;
/** Server output lines kept for the error message if it dies. */
const KEEP_LINES = 20;

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

export interface ServerHandle {
  url: string;
  publicKey?: string;
  certName?: string;
  /** UDP STUN port(s) from the listening line ("stunPort"; "stunPorts" when a child runs several). */
  stunPort?: number;
  stunPorts?: number[];
  /** `derp serve`'s Prometheus endpoint ("metricsUrl"), when it runs one. */
  metricsUrl?: string;
  /** Undefined for an external server given without --pid. */
  pid?: number;
  label: string;
  stop(): Promise<void>;
  /** Throws if our child died. */
  check(): void;
}

/** Starts a server process that prints one JSON line with "msg":"listening" and "url" on stdout. */
export async function startServer(label: string, args: string[]): Promise<ServerHandle> {
  const proc = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  const tail: string[] = [];
  const keep = (line: string): void => {
    tail.push(line);
    if (tail.length > KEEP_LINES) tail.shift();
  };
  // Drained for the whole run: a full pipe would block the server's logging and so the server.
  createInterface({ input: proc.stderr }).on('line', keep);
  const lines = createInterface({ input: proc.stdout });
  let died: string | null = null;
  proc.on('exit', (code, sig) => {
    died = `${label} exited (${sig ?? code}); last output:\n${tail.join('\n')}`;
  });
  type Info = { url: string; publicKey?: string; certName?: string; stunPort?: number; stunPorts?: number[]; metricsUrl?: string };
  const info = await new Promise<Info>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError(`${label} printed no listening line within ${SERVER_START_TIMEOUT_MS} ms:\n${tail.join('\n')}`)), SERVER_START_TIMEOUT_MS);
    lines.on('line', (line) => {
      keep(line);
      if (!line.includes('"listening"')) return;
      try {
        const o = JSON.parse(line) as Partial<Info> & { msg?: string; stunPort?: number | null; metricsUrl?: string | null };
        if (o.msg === 'listening' && o.url) {
          clearTimeout(timer);
          resolve({ url: o.url, publicKey: o.publicKey, certName: o.certName, stunPort: o.stunPort ?? undefined, stunPorts: o.stunPorts, metricsUrl: o.metricsUrl ?? undefined });
        }
      } catch (err) {
        keep(`(unparsable listening line: ${(err as Error).message})`);
      }
    });
    proc.on('exit', () => {
      clearTimeout(timer);
      reject(new ConnectError(died ?? `${label} exited`));
    });
  });
  return {
    ...info,
    pid: proc.pid,
    label,
    check: () => {
      if (died) throw new ConnectError(died);
    },
    stop: async () => {
      children.delete(proc);
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise<void>((res) => proc.once('exit', () => res()));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(t);
    },
  };
}

/** BENCH_SERVER_NODE_ARGS (e.g. "--cpu-prof" or "--trace-gc") profiles the relay under load. */
export function relayArgs(extra: string[]): string[] {
  const node = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  return [...node, 'bin/run.js', 'serve', '--dev', '--addr', '127.0.0.1:0', '--json', ...extra];
}

export function baselineArgs(): string[] {
  return ['--import', 'tsx', 'bench/baseline-forwarder.ts', '--addr', '127.0.0.1:0'];
}

/** `derp serve` with STUN on an ephemeral port and no per-source limit (all bench traffic is 127.0.0.1). */
export function stunRelayArgs(extra: string[]): string[] {
  return relayArgs(['--stun-port', '0', '--stun-rate-limit', '0', ...extra]);
}

/** bench/stun-server.ts: one process of a reusePort group on `port` (0 = pick), or `count` plain servers. */
export function stunServerArgs(o: { port?: number; reusePort?: boolean; count?: number }): string[] {
  const node = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  return [...node, '--import', 'tsx', 'bench/stun-server.ts', '--port', String(o.port ?? 0), '--count', String(o.count ?? 1), ...(o.reusePort ? ['--reuse-port'] : [])];
}

export function stunBaselineArgs(): string[] {
  return ['--import', 'tsx', 'bench/stun-baseline.ts', '--port', '0'];
}

/** A forked generator worker with a message queue. */
export class Worker {
  private readonly proc: ChildProcess;
  private readonly inbox: WorkerEvent[] = [];
  private waiter: ((ev: WorkerEvent) => void) | null = null;
  private exitReason: string | null = null;

  constructor(readonly index: number) {
    // BENCH_WORKER_NODE_ARGS (e.g. "--cpu-prof" or "--trace-gc") profiles the generator itself.
    const extra = (process.env.BENCH_WORKER_NODE_ARGS ?? '').split(' ').filter(Boolean);
    this.proc = fork(`${REPO_ROOT}bench/generator.ts`, [], { cwd: REPO_ROOT, execArgv: [...extra, '--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(this.proc);
    this.proc.on('message', (m: WorkerEvent) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w(m);
      } else this.inbox.push(m);
    });
    this.proc.on('exit', (code, sig) => {
      this.exitReason = `generator worker ${index} exited (${sig ?? code})`;
      this.waiter?.({ ev: 'error', message: this.exitReason });
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  send(c: WorkerCommand): void {
    if (this.exitReason) throw new ConnectError(this.exitReason);
    this.proc.send(c);
  }

  /** The next event; an 'error' event or a different type than expected throws. */
  async next<E extends WorkerEvent['ev']>(ev: E): Promise<Extract<WorkerEvent, { ev: E }>> {
    const m =
      this.inbox.shift() ??
      (this.exitReason
        ? ({ ev: 'error', message: this.exitReason } as WorkerEvent)
        : await new Promise<WorkerEvent>((res) => {
            this.waiter = res;
          }));
    if (m.ev === 'error') throw new ConnectError(`generator worker ${this.index}: ${m.message}`);
    if (m.ev !== ev) throw new ConnectError(`generator worker ${this.index} sent "${m.ev}" where "${ev}" was expected`);
    return m as Extract<WorkerEvent, { ev: E }>;
  }

  async request<E extends WorkerEvent['ev']>(c: WorkerCommand, ev: E): Promise<Extract<WorkerEvent, { ev: E }>> {
    this.send(c);
    return this.next(ev);
  }

  stop(): void {
    children.delete(this.proc);
    if (!this.exitReason) this.proc.send({ cmd: 'exit' } satisfies WorkerCommand);
  }
}

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
export function procOpenFilesLimit(pid: number): number | undefined {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) return undefined;
  return m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}
