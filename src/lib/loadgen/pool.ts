/**
 * A forked load-generator worker (./worker.ts) and its message queue. The entry file is resolved next
 * to this module, so the same code forks dist/lib/loadgen/worker.js from the built CLI and
 * src/lib/loadgen/worker.ts under tsx (npm run bench); the parent's node flags (tsx's loader among
 * them) are passed through.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConnectError } from '../errors.js';
import type { WorkerCommand, WorkerEvent } from './messages.js';

const HERE = fileURLToPath(import.meta.url);
/** worker.js beside pool.js in dist/, worker.ts beside pool.ts when run from source. */
export const WORKER_ENTRY = join(dirname(HERE), `worker${extname(HERE)}`);

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** Node flags for a worker: ours, plus tsx's loader when the entry is TypeScript and we have none. */
function workerExecArgv(extra: string[]): string[] {
  const own = process.execArgv;
  const loader = WORKER_ENTRY.endsWith('.ts') && !own.some((a) => a.includes('tsx')) ? ['--import', 'tsx'] : [];
  return [...own, ...loader, ...extra];
}

export interface WorkerOptions {
  /** Extra node flags for this worker (e.g. --cpu-prof, to profile the generator itself). */
  execArgv?: string[];
}

export class Worker {
  private readonly proc: ChildProcess;
  private readonly inbox: WorkerEvent[] = [];
  private waiter: ((ev: WorkerEvent) => void) | null = null;
  private exitReason: string | null = null;
  private readonly exited: Promise<void>;

  constructor(readonly index: number, opts: WorkerOptions = {}) {
    this.proc = fork(WORKER_ENTRY, [], { execArgv: workerExecArgv(opts.execArgv ?? []), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    live.add(this.proc);
    this.exited = new Promise((res) => this.proc.once('exit', () => res()));
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

  /** Asks the worker to exit; resolves once it has. */
  stop(): Promise<void> {
    live.delete(this.proc);
    if (!this.exitReason) this.proc.send({ cmd: 'exit' } satisfies WorkerCommand);
    return this.exited;
  }
}
