/** `derp serve --config`: settings from a file, flags winning over it, a bad file refused (exit 2). */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stunProbe } from '../../src/lib/stun/index.js';
import { NODE, ROOT, RUN, flatCliText, runCli } from '../helpers/cli.js';
import { RawClient } from '../helpers/rawclient.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-serve-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Listening {
  msg: string;
  url: string;
  stunPort: number | null;
}

/** Starts `derp serve`, resolves with its first JSON line, and stops it with SIGTERM (exit code returned). */
async function serveOnce(args: string[], use: (line: Listening) => Promise<void>): Promise<number | null> {
  const proc = spawn(NODE, [RUN, 'serve', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const exit = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  let out = '';
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const first = await new Promise<string>((res, rej) => {
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) res(out.slice(0, nl));
    });
    void exit.then((code) => rej(new Error(`serve exited ${code} before listening: ${err}`)));
  });
  try {
    await use(JSON.parse(first) as Listening);
  } finally {
    proc.kill('SIGTERM');
  }
  return exit;
}

describe('derp serve --config', () => {
  it('takes its settings from the file (JSON log, ephemeral port, STUN) and relays', async () => {
    const f = join(dir, 'dev.yaml');
    await writeFile(f, 'dev: true\naddr: "127.0.0.1:0"\nlog:\n  json: true\nstun:\n  rateLimit: 0\n');
    const code = await serveOnce(['--config', f], async (line) => {
      expect(line.msg).toBe('listening');
      expect(line.stunPort).toBeGreaterThan(0);
      expect((await stunProbe({ host: '127.0.0.1', port: line.stunPort!, timeoutMs: 5000 })).address).toBe('127.0.0.1');
      const port = Number(new URL(line.url).port);
      const a = await RawClient.connect({ port });
      const b = await RawClient.connect({ port });
      a.sendPacket(b.publicKey, Buffer.from('from-config'));
      expect((await b.nextOf('RecvPacket')).data.toString()).toBe('from-config');
      await Promise.all([a.close(), b.close()]);
    });
    expect(code).toBe(0);
  });

  it('flags win over the file: --no-stun beats stun.enabled: true', async () => {
    const f = join(dir, 'stun-on.json');
    await writeFile(f, '{"dev": true, "addr": "127.0.0.1:0", "log": {"json": true}, "stun": {"enabled": true}}');
    const code = await serveOnce(['--config', f, '--no-stun'], async (line) => {
      expect(line.stunPort).toBeNull();
    });
    expect(code).toBe(0);
  });

  it('a bad file is refused with every problem and its position (exit 2)', async () => {
    const f = join(dir, 'bad.yaml');
    await writeFile(f, 'dev: true\nstun:\n  prot: 1\nhttpPort: many\n');
    const r = await runCli(['serve', '--config', f]);
    expect(r.code).toBe(2);
    const text = flatCliText(r.stderr);
    expect(text).toContain(`${f}:3:3 stun.prot: unknown field (did you mean "port"?)`);
    expect(text).toContain(`${f}:4:11 httpPort: expected an integer from -1 to 65535, found "many"`);
  });

  it('a bad flag value is named with its field', async () => {
    const r = await runCli(['serve', '--dev', '--metrics-addr', 'everywhere']);
    expect(r.code).toBe(2);
    expect(flatCliText(r.stderr)).toContain('--metrics-addr (metrics.addr): expected a listen address');
  });
});
