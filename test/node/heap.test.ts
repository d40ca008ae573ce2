import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { ConfigError } from '../../src/lib/errors.js';
import { JEMALLOC_CONF, JEMALLOC_PATHS, allocatorEnv, runningAllocator } from '../../src/lib/node/allocator.js';
import { MAX_SEMI_SPACE_MIB, heapCapArgv, memoryReexec, operatorSetSemiSpace } from '../../src/lib/node/heap.js';
import { NODE, ROOT, RUN } from '../helpers/cli.js';

const CAP = `--max-semi-space-size=${MAX_SEMI_SPACE_MIB}`;

interface Served {
  cmdline: string[];
  /** The relay's memory map and environment, read from /proc under the pid it was started with. */
  maps: string;
  environ: string[];
  listening: Record<string, unknown>;
}

/** Starts `derp serve --json` (built CLI) with `env` added; what the process that printed "listening" runs as. */
async function served(env: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<Served> {
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
    const line = out.split('\n').find((l) => l.includes('"listening"'))!;
    return {
      cmdline: readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0').filter(Boolean),
      maps: readFileSync(`/proc/${proc.pid}/maps`, 'utf8'),
      environ: readFileSync(`/proc/${proc.pid}/environ`, 'utf8').split('\0'),
      listening: JSON.parse(line) as Record<string, unknown>,
    };
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
    const capped = (await served({})).cmdline;
    expect(capped).toContain(CAP);
    expect(capped.slice(capped.indexOf(CAP) + 1, capped.indexOf(CAP) + 3)).toEqual([RUN, 'serve']);
    const theirs = (await served({}, ['--max-semi-space-size=4'])).cmdline;
    expect(theirs).not.toContain(CAP);
    expect(theirs).toContain('--max-semi-space-size=4');
  }, 30_000);
});

describe('jemalloc for derp serve', () => {
  const argv = ['/usr/bin/node', '/opt/derp/bin/run.js', 'serve', '--addr', ':443'];
  const JE = JEMALLOC_PATHS[0]!;
  const only =
    (...paths: string[]) =>
    (p: string): boolean =>
      paths.includes(p);

  it('preloads the first jemalloc found, with a 1 s decay unless MALLOC_CONF is given; otherwise keeps the allocator', () => {
    expect(allocatorEnv(argv, {}, 'linux', only(JE))).toEqual({ LD_PRELOAD: JE, MALLOC_CONF: JEMALLOC_CONF });
    expect(allocatorEnv(argv, {}, 'linux', only(JEMALLOC_PATHS[2]!))).toEqual({ LD_PRELOAD: JEMALLOC_PATHS[2], MALLOC_CONF: JEMALLOC_CONF });
    expect(allocatorEnv(argv, { MALLOC_CONF: 'narenas:2' }, 'linux', only(JE))).toEqual({ LD_PRELOAD: JE, MALLOC_CONF: 'narenas:2' });
    expect(allocatorEnv(argv, { MALLOC_CONF: ' ' }, 'linux', only(JE))).toEqual({ LD_PRELOAD: JE, MALLOC_CONF: JEMALLOC_CONF });
    // None installed, another command, another OS, the system's asked for, or a preload already there
    // (the operator's, or this re-execution's own: it never loops).
    expect(allocatorEnv(argv, {}, 'linux', only())).toBeNull();
    expect(allocatorEnv(['/usr/bin/node', '/opt/derp/bin/run.js', 'netcheck'], {}, 'linux', only(JE))).toBeNull();
    expect(allocatorEnv(argv, {}, 'darwin', only(JE))).toBeNull();
    expect(allocatorEnv(argv, { DERP_MALLOC: 'system' }, 'linux', only(JE))).toBeNull();
    expect(allocatorEnv(argv, { LD_PRELOAD: '/usr/lib/libtcmalloc.so.4' }, 'linux', only(JE))).toBeNull();
    expect(allocatorEnv(argv, { LD_PRELOAD: JE }, 'linux', only(JE))).toBeNull();
  });

  it('DERP_MALLOC takes a library path; anything else, or a missing file, is a configuration error that names the variable', () => {
    expect(allocatorEnv(argv, { DERP_MALLOC: '/opt/je/libjemalloc.so' }, 'linux', only('/opt/je/libjemalloc.so'))).toEqual({ LD_PRELOAD: '/opt/je/libjemalloc.so', MALLOC_CONF: JEMALLOC_CONF });
    expect(() => allocatorEnv(argv, { DERP_MALLOC: '/opt/je/missing.so' }, 'linux', only(JE))).toThrow(/DERP_MALLOC names \/opt\/je\/missing\.so, which does not exist/);
    expect(() => allocatorEnv(argv, { DERP_MALLOC: 'tcmalloc' }, 'linux', only(JE))).toThrow(ConfigError);
    expect(() => allocatorEnv(argv, { DERP_MALLOC: 'tcmalloc' }, 'linux', only(JE))).toThrow(/DERP_MALLOC must be "auto", "system" or the absolute path/);
  });

  it('one re-execution does both, keeps the environment, and none happens under an inspector', () => {
    const both = memoryReexec(argv, [], { HOME: '/root' }, true, 'linux', only(JE));
    expect(both).toEqual({ args: ['/usr/bin/node', CAP, '/opt/derp/bin/run.js', 'serve', '--addr', ':443'], env: { HOME: '/root', LD_PRELOAD: JE, MALLOC_CONF: JEMALLOC_CONF } });
    // Cap already there: the preload alone, the command line as it was.
    expect(memoryReexec(argv, [CAP], {}, true, 'linux', only(JE))?.args).toEqual(['/usr/bin/node', CAP, '/opt/derp/bin/run.js', 'serve', '--addr', ':443']);
    expect(memoryReexec(argv, [], { DERP_NO_HEAP_CAP: '1' }, true, 'linux', only(JE))?.args).toEqual(argv);
    expect(memoryReexec(argv, [CAP], { LD_PRELOAD: JE }, true, 'linux', only(JE))).toBeNull();
    expect(memoryReexec(argv, ['--inspect'], {}, true, 'linux', only(JE))).toBeNull();
    expect(memoryReexec(argv, [], {}, false, 'linux', only(JE))).toBeNull();
    expect(() => memoryReexec(argv, [], { DERP_MALLOC: 'bogus' }, false, 'linux', only(JE))).toThrow(ConfigError);
  });

  it('the allocator is read from the memory map', () => {
    expect(runningAllocator('/nonexistent/maps')).toBe('unknown');
    expect(['jemalloc', 'system']).toContain(runningAllocator());
  });

  const installed = JEMALLOC_PATHS.find((p) => existsSync(p));
  it.runIf(process.platform === 'linux' && installed !== undefined)('the running relay has jemalloc mapped and says so; DERP_MALLOC=system keeps glibc\'s', async () => {
    const je = await served({ DERP_MALLOC: 'auto', LD_PRELOAD: '', MALLOC_CONF: '' });
    expect(je.maps).toContain(installed);
    expect(je.environ).toContain(`LD_PRELOAD=${installed}`);
    expect(je.environ).toContain(`MALLOC_CONF=${JEMALLOC_CONF}`);
    expect(je.listening.allocator).toBe('jemalloc');
    const sys = await served({ DERP_MALLOC: 'system', LD_PRELOAD: '' });
    expect(sys.maps).not.toMatch(/libjemalloc/);
    expect(sys.listening.allocator).toBe('system');
  }, 30_000);
});
