import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MAX_SEMI_SPACE_MIB, heapCapArgv, operatorSetSemiSpace } from '../../src/lib/node/heap.js';
import { NODE, ROOT, RUN } from '../helpers/cli.js';

const CAP = `--max-semi-space-size=${MAX_SEMI_SPACE_MIB}`;

/** Starts `derp serve` (built CLI) with `env` added, returns the command line of the process that printed "listening". */
async function servedCmdline(env: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<string[]> {
  const proc = spawn(NODE, [...nodeArgs, RUN, 'serve', '--dev', '--addr', '127.0.0.1:0', '--json'], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise<void>((res, rej) => {
      proc.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('"listening"')) res();
      });
      proc.once('exit', (code) => rej(new Error(`derp serve exited ${code}: ${err}`)));
    });
    // Same pid as spawned: the re-execution replaced the process, it did not start another.
    return readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } finally {
    proc.kill('SIGKILL');
  }
}

describe('young-generation cap for derp serve', () => {
  it('an operator-given semi-space size (node flag or NODE_OPTIONS, either spelling) wins', () => {
    expect(operatorSetSemiSpace([], undefined)).toBe(false);
    expect(operatorSetSemiSpace(['--max-semi-space-size=64'], undefined)).toBe(true);
    expect(operatorSetSemiSpace(['--max-semi-space-size', '64'], undefined)).toBe(true);
    expect(operatorSetSemiSpace([], '--max_semi_space_size=8 --trace-gc')).toBe(true);
    expect(operatorSetSemiSpace(['--max-old-space-size=512'], '--max-semi-space-sizes')).toBe(false);
  });

  it('re-executes only serve, only once, keeping node flags and arguments in order', () => {
    const argv = ['/usr/bin/node', '/opt/derp/bin/run.js', 'serve', '--addr', ':443'];
    expect(heapCapArgv(argv, ['--cpu-prof'], {}, true)).toEqual(['/usr/bin/node', '--cpu-prof', CAP, '/opt/derp/bin/run.js', 'serve', '--addr', ':443']);
    expect(heapCapArgv(['/usr/bin/node', '/opt/derp/bin/run.js', 'netcheck'], [], {}, true)).toBeNull();
    expect(heapCapArgv(argv, [CAP], {}, true)).toBeNull();
    expect(heapCapArgv(argv, [], { NODE_OPTIONS: '--max-semi-space-size=32' }, true)).toBeNull();
    expect(heapCapArgv(argv, [], { DERP_NO_HEAP_CAP: '1' }, true)).toBeNull();
    expect(heapCapArgv(argv, [], {}, false)).toBeNull();
    expect(heapCapArgv(argv, ['--inspect=127.0.0.1:0'], {}, true)).toBeNull();
    expect(heapCapArgv(argv, [], { NODE_OPTIONS: '--inspect-brk' }, true)).toBeNull();
    expect(heapCapArgv(argv, ['--inspect-port=0'], {}, true)).not.toBeNull();
  });

  it.runIf(process.platform === 'linux')('the running relay carries the cap, under the pid it was started with; an operator size is left alone', async () => {
    const capped = await servedCmdline({});
    expect(capped).toContain(CAP);
    expect(capped.slice(capped.indexOf(CAP) + 1, capped.indexOf(CAP) + 3)).toEqual([RUN, 'serve']);
    const theirs = await servedCmdline({}, ['--max-semi-space-size=8']);
    expect(theirs).not.toContain(CAP);
    expect(theirs).toContain('--max-semi-space-size=8');
  }, 30_000);
});
