/** `derp config check|example` through the built CLI (npm test builds dist/ first). */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-config-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** stderr without oclif's own " ›   Warning: …" lines (its dev-mode source lookup in a checkout). */
function ownLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l !== '' && !l.startsWith(' ›'));
}

describe('derp config', () => {
  it('example prints a config that check accepts (exit 0, one summary line)', async () => {
    const ex = await runCli(['config', 'example']);
    expect(ex.code).toBe(0);
    expect(ex.stdout).toMatch(/^# derp serve configuration/);
    const f = join(dir, 'example.yaml');
    await writeFile(f, ex.stdout);
    const r = await runCli(['config', 'check', f]);
    expect(r.code).toBe(0);
    expect(ownLines(r.stderr)).toEqual([]);
    expect(r.stdout.trimEnd().split('\n')).toEqual([expect.stringMatching(new RegExp(`^${f.replace(/[.]/g, '\\.')}: valid: listen :443, TLS acme for derp\\.example\\.com`))]);
  });

  it('check: every problem on its own line with file:line:col, exit 2', async () => {
    const f = join(dir, 'bad.yaml');
    await writeFile(f, 'dev: true\nstun:\n  prot: 3478\n  rateLimit: fast\n');
    const r = await runCli(['config', 'check', f]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(ownLines(r.stderr)).toEqual([
      `${f}:3:3 stun.prot: unknown field (did you mean "port"?)`,
      `${f}:4:14 stun.rateLimit: expected an integer ≥ 0, found "fast"`,
    ]);
  });

  it('check --json: machine output for valid and invalid files', async () => {
    const good = join(dir, 'good.json');
    await writeFile(good, '{"dev": true, "addr": "127.0.0.1:0"}');
    const ok = await runCli(['config', 'check', good, '--json']);
    expect(ok.code).toBe(0);
    const okOut = JSON.parse(ok.stdout) as { valid: boolean; config: { addr: string; stun: { port: number } } };
    expect(okOut).toMatchObject({ valid: true, config: { addr: '127.0.0.1:0', stun: { port: 0 } } });

    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"dev": true,\n "tls": {"certMode": "acme"}}');
    const no = await runCli(['config', 'check', bad, '--json']);
    expect(no.code).toBe(2);
    expect(JSON.parse(no.stdout)).toEqual({
      schema: 'derp.config.check/v1',
      valid: false,
      file: bad,
      issues: [
        { source: bad, path: 'tls.hostname', line: 2, column: 9, message: 'required with tls.certMode acme' },
        { source: bad, path: 'tls.certDir', line: 2, column: 9, message: 'required with tls.certMode acme' },
      ],
    });
  });

  it('check: an unreadable file and a missing argument are exit 2', async () => {
    const missing = join(dir, 'missing.yaml');
    const r = await runCli(['config', 'check', missing]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${missing}: cannot read the config file`);
    expect((await runCli(['config', 'check'])).code).toBe(2);
  });
});
