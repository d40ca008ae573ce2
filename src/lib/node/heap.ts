/**
 * V8's young generation grows under allocation bursts (a connection flood took it from 32 to 128 MiB
 * here) and is seldom shrunk while traffic keeps allocating, so an attack left ~100 MiB of RSS behind.
 * The relay's steady state allocates little per packet, so a fixed cap costs it nothing measurable
 * (README, Flood). V8 reads the size only at start-up (setFlagsFromString later has no effect), so
 * `derp serve` re-executes itself once with the flag, keeping its pid, unless the operator chose one.
 */

/** Semi-space size in MiB: what V8 reaches during the relay's own start-up, so it never grows past it. */
export const MAX_SEMI_SPACE_MIB = 16;

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

/** Called first thing by bin/run.js: for `derp serve`, replaces this process with a capped one (same pid). */
export function reexecWithHeapCap(): void {
  const execve = (process as { execve?: Execve }).execve;
  const args = heapCapArgv(process.argv, process.execArgv, process.env, typeof execve === 'function');
  if (args === null || execve === undefined) return;
  execve(process.execPath, args, process.env);
}
