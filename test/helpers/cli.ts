/** Running the built CLI from tests (`npm test` builds dist/ first) and reading what it printed. */
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
/** The pinned Node 24, not the machine's. */
export const NODE = join(ROOT, 'node_modules/.bin/node');
export const RUN = join(ROOT, 'bin/run.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the pinned node with `argv` in the project root to completion, `input` on stdin (or stdin closed). */
export function runNode(argv: string[], input?: string): Promise<CliResult> {
  return new Promise((res, rej) => {
    const child = spawn(NODE, argv, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

/** Runs `derp <args…>` to completion, with `input` on stdin (or stdin closed). */
export function runCli(args: string[], input?: string): Promise<CliResult> {
  return runNode([RUN, ...args], input);
}

/** oclif wraps error text to the terminal width with " ›" margins: undo that before matching phrases. */
export function flatCliText(text: string | string[]): string {
  return (Array.isArray(text) ? text.join(' ') : text).replace(/\s*›\s*/g, ' ').replace(/\s+/g, ' ');
}
