/**
 * V8's young generation grows under allocation bursts (a connection flood took it from 32 to 128 MiB
 * here) and is seldom shrunk while traffic keeps allocating, so an attack left ~100 MiB of RSS behind.
 * The relay's steady state allocates little per packet, so a fixed cap costs it nothing measurable
 * (README, Flood). V8 reads the size only at start-up (setFlagsFromString later has no effect), so
 * `derp serve` re-executes itself once with the flag, keeping its pid, unless the operator chose one.
 */

import { existsSync } from 'node:fs';
import { allocatorEnv } from './allocator.js';
import { EXIT_USAGE } from './exit.js';

/**
 * Semi-space size in MiB. 8 rather than 16 (what V8 reaches during start-up): the same packets/s and
 * handshakes/s in alternated runs, ~10 MiB less RSS, shorter scavenges (README, Deployment, Memory).
 */
export const MAX_SEMI_SPACE_MIB = 8;

const FLAG = '--max-semi-space-size';
const FLAG_UNDERSCORE = '--max_semi_space_size';

/** The node flags in force: the command line's, then NODE_OPTIONS's. */
function nodeFlags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  return [...execArgv, ...(nodeOptions ?? '').split(/\s+/)];
}

/** Whether a semi-space size was chosen already (node flags or NODE_OPTIONS, either spelling). */
export function operatorSetSemiSpace(execArgv: readonly string[], nodeOptions: string | undefined): boolean {
  return nodeFlags(execArgv, nodeOptions).some((a) => a === FLAG || a.startsWith(`${FLAG}=`) || a === FLAG_UNDERSCORE || a.startsWith(`${FLAG_UNDERSCORE}=`));
}

function underInspector(execArgv: readonly string[], nodeOptions: string | undefined): boolean {
  return nodeFlags(execArgv, nodeOptions).some((a) => /^--inspect(-brk|-wait)?(=|$)/.test(a));
}

type Execve = (file: string, args: string[], env: NodeJS.ProcessEnv) => never;

/**
 * The argv `derp serve` re-executes with, or null to run as it is: another command, a size already
 * chosen, an inspector flag, no `process.execve` (Node < 23.11, Windows), or DERP_NO_HEAP_CAP=1.
 */
export function heapCapArgv(argv: readonly string[], execArgv: readonly string[], env: NodeJS.ProcessEnv, hasExecve: boolean): string[] | null {
  if (argv[2] !== 'serve' || !hasExecve || env.DERP_NO_HEAP_CAP === '1') return null;
  if (operatorSetSemiSpace(execArgv, env.NODE_OPTIONS)) return null;
  // Under a debugger the first process has announced (or, with -brk, is waiting on) an inspector that the
  // re-executed one would replace: run as asked; pass the flag yourself to debug a capped relay.
  if (underInspector(execArgv, env.NODE_OPTIONS)) return null;
  return [argv[0]!, ...execArgv, `${FLAG}=${MAX_SEMI_SPACE_MIB}`, ...argv.slice(1)];
}

/**
 * The command line and environment `derp serve` re-executes with (same pid), or null to run as it is:
 * the young-generation cap (heapCapArgv) and the allocator preload (allocator.ts), whichever is due.
 * Never under an inspector: the re-executed process would replace the one the debugger attached to.
 */
export function memoryReexec(argv: readonly string[], execArgv: readonly string[], env: NodeJS.ProcessEnv, hasExecve: boolean, platform: NodeJS.Platform, exists: (path: string) => boolean): { args: string[]; env: NodeJS.ProcessEnv } | null {
  // First, so that a bad DERP_MALLOC is reported even where no re-execution can happen.
  const preload = allocatorEnv(argv, env, platform, exists);
  if (argv[2] !== 'serve' || !hasExecve || underInspector(execArgv, env.NODE_OPTIONS)) return null;
  const capped = heapCapArgv(argv, execArgv, env, hasExecve);
  if (capped === null && preload === null) return null;
  return { args: capped ?? [argv[0]!, ...execArgv, ...argv.slice(1)], env: preload === null ? env : { ...env, ...preload } };
}

/**
 * Called first thing by bin/run.js: for `derp serve`, replaces this process (same pid) with one whose
 * young generation is capped and whose malloc is jemalloc when installed. A bad DERP_MALLOC ends it
 * with exit code 2 (a configuration error) before anything else runs.
 */
export function reexecForMemory(): void {
  const execve = (process as { execve?: Execve }).execve;
  let next: ReturnType<typeof memoryReexec>;
  try {
    next = memoryReexec(process.argv, process.execArgv, process.env, typeof execve === 'function', process.platform, existsSync);
  } catch (err) {
    process.stderr.write(`derp serve: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(EXIT_USAGE);
  }
  if (next === null || execve === undefined) return;
  execve(process.execPath, next.args, next.env);
}
