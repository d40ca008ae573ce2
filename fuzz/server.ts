/** `derp serve --dev` as the fuzzer's child process, with its whole log watched for errors. */
import { spawn, type ChildProcess } from 'node:child_process';
import { MAX_SEMI_SPACE_MIB } from '../src/lib/node/heap.js';
import { collectGarbage, inspectorUrlOf } from './inspector.js';
import { mallocTrim } from '../src/lib/loadgen/index.js';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ConnectError, TimeoutError } from '../src/lib/errors.js';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const START_TIMEOUT_MS = 20_000;
/** pino's error level: anything at or above it in the relay's log is a finding. */
const PINO_ERROR = 50;

export interface RelayProcess {
  url: string;
  pid: number;
  publicKey: string;
  stunPort: number | null;
  metricsUrl: string | null;
  /** Error-level log lines, uncaught exceptions and other stderr output, as printed. */
  readonly errors: string[];
  /** The exit code or signal once it has died, else null. */
  exited(): string | null;
  stop(): Promise<void>;
  /** A full GC in the relay (over its loopback inspector); absent when started without `inspect`. */
  gc?: () => Promise<void>;
  /** glibc malloc_trim(0) in the relay (via gdb); false when that is not possible here. */
  trim?: () => Promise<boolean>;
}

export interface StartOptions {
  /** Node options before bin/run.js (e.g. --inspect, --expose-gc). */
  nodeArgs?: string[];
  /** Extra environment (e.g. MALLOC_ARENA_MAX). */
  env?: Record<string, string>;
  extraArgs?: string[];
  /** Start the relay with its inspector on loopback, so `gc()` can force a full collection. */
  inspect?: boolean;
}

export async function startRelay(o: StartOptions = {}): Promise<RelayProcess> {
  // With an inspector derp serve does not re-execute itself with its young-generation cap: given here, so
  // the fuzzed relay's memory is the one operators run.
  const args = [...(o.inspect ? ['--inspect=127.0.0.1:0', `--max-semi-space-size=${MAX_SEMI_SPACE_MIB}`] : []), ...(o.nodeArgs ?? []), 'bin/run.js', 'serve', '--dev', '--json', '--addr', '127.0.0.1:0', '--stun-port', '0', '--metrics-addr', '127.0.0.1:0', '--log-level', 'warn', ...(o.extraArgs ?? [])];
  const proc: ChildProcess = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  const errors: string[] = [];
  let exit: string | null = null;
  proc.on('exit', (code, sig) => (exit = String(sig ?? code)));
  let inspectorUrl: string | null = null;
  createInterface({ input: proc.stderr! }).on('line', (line) => {
    inspectorUrl ??= inspectorUrlOf(line);
    // The inspector's banner is not an error.
    if (!/^(Debugger listening|For help, see|Debugger attached|Debugger ending)/.test(line)) errors.push(line);
  });
  const lines = createInterface({ input: proc.stdout! });
  const info = await new Promise<{ url: string; publicKey: string; stunPort: number | null; metricsUrl: string | null }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError(`derp serve printed no listening line within ${START_TIMEOUT_MS} ms: ${errors.join('\n')}`)), START_TIMEOUT_MS);
    proc.once('exit', () => {
      clearTimeout(timer);
      reject(new ConnectError(`derp serve exited (${exit}) before listening: ${errors.join('\n')}`));
    });
    lines.on('line', (line) => {
      let o: { msg?: string; level?: number | string; url?: string; publicKey?: string; stunPort?: number | null; metricsUrl?: string | null };
      try {
        o = JSON.parse(line) as typeof o;
      } catch {
        errors.push(line);
        return;
      }
      if (typeof o.level === 'number' ? o.level >= PINO_ERROR : o.level === 'error' || o.level === 'fatal') errors.push(line);
      if (o.msg === 'listening' && o.url !== undefined && o.publicKey !== undefined) {
        clearTimeout(timer);
        resolve({ url: o.url, publicKey: o.publicKey, stunPort: o.stunPort ?? null, metricsUrl: o.metricsUrl ?? null });
      }
    });
  });
  return {
    ...info,
    pid: proc.pid!,
    errors,
    exited: () => exit,
    ...(o.inspect
      ? {
          gc: async () => {
            if (inspectorUrl === null) throw new ConnectError('the relay printed no inspector address');
            await collectGarbage(inspectorUrl);
          },
          trim: () => mallocTrim(proc.pid!),
        }
      : {}),
    stop: async () => {
      if (exit !== null) return;
      const gone = new Promise<void>((res) => proc.once('exit', () => res()));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}
