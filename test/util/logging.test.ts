import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RepeatLimitedLogger } from '../../src/lib/util/repeat-limit.js';
import { NODE } from '../helpers/cli.js';

/** Runs a snippet that logs through PinoLogger in a child (the logger writes to fd 1/2 synchronously). */
function runSnippet(code: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', () => resolve({ stdout, stderr }));
  });
}

const PINO = new URL('../../src/lib/util/pino.ts', import.meta.url).href;

describe('PinoLogger', () => {
  it('writes JSON lines with an ISO time, the level as a word, fields, and redacts secrets', async () => {
    const { stdout } = await runSnippet(`
      import { PinoLogger } from ${JSON.stringify(PINO)};
      const l = new PinoLogger({ format: 'json', fd: 1, level: 'info' });
      l.log('debug', 'hidden');
      l.log('info', 'client connected', { remote: '127.0.0.1:5', privateKey: 'privkey:abc', meshKey: 'm' });
      l.setLevel('debug');
      l.log('debug', 'now shown');
      l.setLevel('error');
      l.log('warn', 'hidden again');
    `);
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.msg)).toEqual(['client connected', 'now shown']);
    expect(lines[0]).toMatchObject({ level: 'info', remote: '127.0.0.1:5', privateKey: '[redacted]', meshKey: '[redacted]' });
    expect(new Date(String(lines[0]!.time)).toISOString()).toBe(lines[0]!.time);
    expect(stdout).not.toContain('privkey:abc');
  });

  it('writes a readable line in the pretty format', async () => {
    const { stderr } = await runSnippet(`
      import { PinoLogger } from ${JSON.stringify(PINO)};
      new PinoLogger({ format: 'pretty', fd: 2, colorize: false }).log('warn', 'closing connection', { reason: 'write timeout' });
    `);
    expect(stderr).toMatch(/WARN.*closing connection/);
    expect(stderr).toContain('write timeout');
    expect(() => JSON.parse(stderr)).toThrow();
  });
});

describe('RepeatLimitedLogger', () => {
  it('logs a burst per cause and peer, counts the rest, and summarises when the window ends', () => {
    let now = 1_000;
    const mem = new MemoryLogger();
    const suppressed: string[] = [];
    const l = new RepeatLimitedLogger(mem, { burst: 2, windowMs: 10_000, now: () => now, onSuppressed: (_lvl, msg) => suppressed.push(msg) });
    for (let i = 0; i < 5; i++) l.log('warn', 'closing connection', { remote: `192.0.2.1:${1000 + i}`, reason: 'bad frame' });
    // Another peer, and another cause from the same peer, have budgets of their own.
    l.log('warn', 'closing connection', { remote: '[2001:db8::1]:7', reason: 'bad frame' });
    l.log('warn', 'closing connection', { remote: '192.0.2.1:9', reason: 'write timeout' });
    // Info and debug are never limited.
    for (let i = 0; i < 5; i++) l.log('debug', 'client connected', { remote: '192.0.2.1:1' });
    expect(mem.entries.filter((e) => e.fields.reason === 'bad frame' && e.fields.remote!.toString().startsWith('192.'))).toHaveLength(2);
    expect(mem.entries.filter((e) => e.msg === 'client connected')).toHaveLength(5);
    expect(l.suppressedTotal).toBe(3);
    expect(suppressed).toEqual(['closing connection', 'closing connection', 'closing connection']);

    now += 10_000;
    l.log('warn', 'closing connection', { remote: '192.0.2.1:2000', reason: 'bad frame' });
    const summary = mem.entries.find((e) => e.msg === 'closing connection (repeated)');
    expect(summary?.fields).toMatchObject({ suppressed: 3, reason: 'bad frame', windowSeconds: 10 });
    expect(mem.entries[mem.entries.length - 1]!.fields.remote).toBe('192.0.2.1:2000');
    l.stop();
  });

  it('forgets the oldest cause when too many are tracked, summarising it first', () => {
    const mem = new MemoryLogger();
    const l = new RepeatLimitedLogger(mem, { burst: 1, maxKeys: 2 });
    l.log('warn', 'a', { remote: '192.0.2.1:1' });
    l.log('warn', 'a', { remote: '192.0.2.1:1' });
    l.log('warn', 'b', { remote: '192.0.2.1:1' });
    l.log('warn', 'c', { remote: '192.0.2.1:1' });
    expect(mem.entries.map((e) => e.msg)).toEqual(['a', 'b', 'a (repeated)', 'c']);
    l.flush();
  });
});
