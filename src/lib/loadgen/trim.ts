/**
 * glibc's malloc_trim(0) in the relay, called through gdb: after a burst, glibc keeps freed chunks in
 * its arenas instead of returning them, and that shows as RSS though the relay references none of it.
 * Trimming separates "the allocator's free memory" from "what the relay still holds". Optional: without
 * gdb (or ptrace rights) it reports false and the caller judges RSS untrimmed.
 */
import { execFile } from 'node:child_process';

const TRIM_TIMEOUT_MS = 60_000;

export function mallocTrim(pid: number): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('gdb', ['-p', String(pid), '-batch', '-nx', '-ex', 'call (int)malloc_trim(0)'], { timeout: TRIM_TIMEOUT_MS }, (err, stdout) => {
      resolve(err === null && /\$1 = \d/.test(stdout));
    });
  });
}
