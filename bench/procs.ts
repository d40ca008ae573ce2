/**
 * The servers the bench starts as child processes (`derp serve`, the baseline forwarder, STUN
 * responders). The generator workers and the /proc readers are src/lib/loadgen/.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DEFAULT_WARM_UP_HANDSHAKES } from '../src/lib/config/constants.js';
import { ConnectError, TimeoutError } from '../src/lib/errors.js';
import { Worker, type LoadTarget } from '../src/lib/loadgen/index.js';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
/** How long a server gets to print its listening line. */
const SERVER_START_TIMEOUT_MS = 20_000;
/** Server output lines kept for the error message if it dies. */
const KEEP_LINES = 20;

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

export interface ServerHandle extends LoadTarget {
  publicKey?: string;
  certName?: string;
  /** UDP STUN port(s) from the listening line ("stunPort"; "stunPorts" when a child runs several). */
  stunPort?: number;
  stunPorts?: number[];
  /** `derp serve`'s Prometheus endpoint ("metricsUrl"), when it runs one. */
  metricsUrl?: string;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** A command the node process runs under, e.g. ['taskset', '-c', '1'] (it execs node: same pid). */
  wrap?: string[];
}

/** Starts a server process that prints one JSON line with "msg":"listening" and "url" on stdout. */
export async function startServer(label: string, args: string[], opts: StartOptions = {}): Promise<ServerHandle> {
  const [file, ...pre] = [...(opts.wrap ?? []), process.execPath];
  const proc = spawn(file!, [...pre, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
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
  type Info = { url: string; publicKey?: string; certName?: string; stunPort?: number; stunPorts?: number[]; metricsUrl?: string; workerPids?: number[] };
  const info = await new Promise<Info>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError(`${label} printed no listening line within ${SERVER_START_TIMEOUT_MS} ms:\n${tail.join('\n')}`)), SERVER_START_TIMEOUT_MS);
    lines.on('line', (line) => {
      keep(line);
      if (!line.includes('"listening"')) return;
      try {
        const o = JSON.parse(line) as Partial<Info> & { msg?: string; stunPort?: number | null; metricsUrl?: string | null };
        if (o.msg === 'listening' && o.url) {
          clearTimeout(timer);
          resolve({ url: o.url, publicKey: o.publicKey, certName: o.certName, stunPort: o.stunPort ?? undefined, stunPorts: o.stunPorts, metricsUrl: o.metricsUrl ?? undefined, ...(o.workerPids === undefined ? {} : { workerPids: o.workerPids }) });
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
    tls: BENCH_TLS,
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

/** The bench's servers use self-signed certificates; it measures load, not trust. */
export const BENCH_TLS = { insecure: true } as const;

function nodeArgsFromEnv(name: string): string[] {
  return (process.env[name] ?? '').split(' ').filter(Boolean);
}

/** A generator worker; BENCH_WORKER_NODE_ARGS (e.g. "--cpu-prof" or "--trace-gc") profiles the generator itself. */
export function benchWorker(index: number): Worker {
  return new Worker(index, { execArgv: nodeArgsFromEnv('BENCH_WORKER_NODE_ARGS') });
}

/**
 * --dev for loopback and no limits, but the production warm-up (dev has none): the bench measures a
 * relay as it starts in production. BENCH_SERVER_NODE_ARGS (e.g. "--cpu-prof" or "--trace-gc")
 * profiles the relay under load.
 */
export function relayArgs(extra: string[], addr = '127.0.0.1:0'): string[] {
  const node = nodeArgsFromEnv('BENCH_SERVER_NODE_ARGS');
  const given = extra.some((a) => a === '--warm-up-handshakes' || a.startsWith('--warm-up-handshakes='));
  const warmUp = given ? [] : ['--warm-up-handshakes', String(DEFAULT_WARM_UP_HANDSHAKES)];
  return [...node, 'bin/run.js', 'serve', '--dev', '--addr', addr, '--json', ...warmUp, ...extra];
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
  const node = nodeArgsFromEnv('BENCH_SERVER_NODE_ARGS');
  return [...node, '--import', 'tsx', 'bench/stun-server.ts', '--port', String(o.port ?? 0), '--count', String(o.count ?? 1), ...(o.reusePort ? ['--reuse-port'] : [])];
}

export function stunBaselineArgs(): string[] {
  return ['--import', 'tsx', 'bench/stun-baseline.ts', '--port', '0'];
}
