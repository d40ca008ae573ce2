/** `derp serve` end to end: spawns the built CLI (npm test builds dist/ first). */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseKeyFile } from '../../src/lib/protocol/index.js';
import { parseDerpMap } from '../../src/lib/derpmap/index.js';
import { stunProbe } from '../../src/lib/stun/index.js';
import { RawClient } from '../helpers/rawclient.js';
import { flatCliText } from '../helpers/cli.js';

const ROOT = resolve(import.meta.dirname, '../..');
const NODE = join(ROOT, 'node_modules/.bin/node');
const RUN = join(ROOT, 'bin/run.js');

interface Cli {
  proc: ChildProcess;
  /** First stdout line (the listening line). */
  firstLine: Promise<string>;
  /** All of stdout so far. */
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
}

const running: Cli[] = [];

function cli(args: string[]): Cli {
  const proc = spawn(NODE, [RUN, 'serve', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let gotLine: (l: string) => void = () => undefined;
  const firstLine = new Promise<string>((res) => (gotLine = res));
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    const nl = out.indexOf('\n');
    if (nl >= 0) gotLine(out.slice(0, nl));
  });
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((res) =>
    proc.once('exit', (code, signal) => {
      if (signal !== null) err += `\n[test] killed by ${signal}`;
      res(code);
    }),
  );
  void exit.then(() => gotLine(out));
  const c = { proc, firstLine, stdout: () => out, stderr: () => err, exit };
  running.push(c);
  return c;
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-serve-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of running.splice(0)) {
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    await c.exit;
  }
});

describe('derp serve', () => {
  it('--dev --json: prints one listening line, relays, and on SIGTERM sends Restarting and exits 0', async () => {
    const c = cli(['--dev', '--addr', '127.0.0.1:0', '--json']);
    const line = JSON.parse(await c.firstLine) as { msg: string; url: string; publicKey: string; warmUp: unknown };
    expect(line.msg).toBe('listening');
    // --dev makes no warm-up handshakes.
    expect(line.warmUp).toBeNull();
    expect(line.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/derp$/);
    expect(line.publicKey).toMatch(/^nodekey:[0-9a-f]{64}$/);
    const port = Number(new URL(line.url).port);
    const a = await RawClient.connect({ port });
    const b = await RawClient.connect({ port });
    expect(`nodekey:${a.serverKey!.toString('hex')}`).toBe(line.publicKey);
    a.sendPacket(b.publicKey, Buffer.from('via-cli'));
    expect((await b.nextOf('RecvPacket')).data.toString()).toBe('via-cli');
    c.proc.kill('SIGTERM');
    expect(await a.nextOf('Restarting')).toMatchObject({ reconnectInMs: 500, tryForMs: 5000 });
    await a.closedPromise;
    expect(await c.exit).toBe(0);
  });

  it('--handshake-thread: on by default for one process here (two CPUs), said in the listening line, counted in /metrics; --no-handshake-thread keeps handshakes inline', async () => {
    for (const [args, on] of [[[], availableParallelism() > 1], [['--no-handshake-thread'], false]] as const) {
      const c = cli(['--dev', '--addr', '127.0.0.1:0', '--json', ...args]);
      const line = JSON.parse(await c.firstLine) as { url: string; metricsUrl: string; handshakeThread: boolean };
      expect(line.handshakeThread).toBe(on);
      const port = Number(new URL(line.url).port);
      const a = await RawClient.connect({ port });
      const b = await RawClient.connect({ port });
      a.sendPacket(b.publicKey, Buffer.from('thread'));
      expect((await b.nextOf('RecvPacket')).data.toString()).toBe('thread');
      const text = await (await fetch(line.metricsUrl)).text();
      expect(text).toMatch(new RegExp(`^derp_handshake_thread_opened_total ${on ? 2 : 0}$`, 'm'));
      expect(text).toMatch(/^derp_handshake_thread_failures_total 0$/m);
      a.destroy();
      b.destroy();
      c.proc.kill('SIGTERM');
      expect(await c.exit).toBe(0);
    }
  });

  it('text mode with --key-file and --insecure-http: creates the key file (0600) and reports its key; SIGINT exits 0', async () => {
    const keyFile = join(dir, 'server.key');
    const c = cli(['--insecure-http', '--addr', '127.0.0.1:0', '--key-file', keyFile]);
    const line = await c.firstLine;
    const key = parseKeyFile(await readFile(keyFile, 'utf8'));
    expect(line).toMatch(/^listening on http:\/\/127\.0\.0\.1:\d+\/derp as nodekey:[0-9a-f]{64}$/);
    expect(line).toContain(key.publicText());
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    c.proc.kill('SIGINT');
    expect(await c.exit).toBe(0);
    // Not --dev: the production warm-up, said after the listening line.
    expect(c.stdout()).toMatch(/^warm-up: 800 handshakes in \d+\.\d s before listening$/m);
  });

  it('--self-signed: serves TLS with a certificate matching the printed sha256-raw CertName and DERP node', async () => {
    const c = cli(['--self-signed', '127.0.0.1', '--addr', '127.0.0.1:0', '--key-file', join(dir, 'tls.key'), '--json']);
    const line = JSON.parse(await c.firstLine) as { url: string; certName: string; derpNode: Record<string, unknown>; stunPort: number; warmUp: unknown };
    expect(line.url).toMatch(/^https:\/\//);
    // Not --dev: the production warm-up ran before the relay listened.
    expect(line.warmUp).toEqual({ handshakes: 800, ms: expect.any(Number) });
    expect(line.certName).toMatch(/^sha256-raw:[0-9a-f]{64}$/);
    const port = Number(new URL(line.url).port);
    expect(line.derpNode).toEqual({ Name: '900a', RegionID: 900, HostName: '127.0.0.1', CertName: line.certName, IPv4: '127.0.0.1', DERPPort: port, STUNPort: line.stunPort });
    // The printed node drops into a Tailscale DERP map as is.
    const { map } = parseDerpMap(JSON.stringify({ Regions: { '900': { RegionID: 900, RegionCode: 'self', Nodes: [line.derpNode] } } }), 'printed node');
    expect(map.regions[900]!.nodes[0]).toMatchObject({ certName: line.certName, derpPort: port, stunPort: line.stunPort, canStun: true, canRelay: true });
    const der = await new Promise<Buffer>((res, rej) => {
      const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
        expect(s.alpnProtocol).toBe('http/1.1');
        const raw = s.getPeerCertificate().raw;
        s.destroy();
        res(raw);
      });
      s.once('error', rej);
    });
    expect(`sha256-raw:${createHash('sha256').update(der).digest('hex')}`).toBe(line.certName);
    c.proc.kill('SIGTERM');
    expect(await c.exit).toBe(0);
  });

  it('refuses plain HTTP without --dev or --insecure-http (exit 2)', async () => {
    const c = cli(['--addr', '127.0.0.1:0', '--key-file', join(dir, 'x.key')]);
    expect(await c.exit).toBe(2);
    expect(flatCliText(c.stderr())).toMatch(/refusing to serve DERP over plain HTTP/);
  });

  it('names an unreadable key file and a bad certificate (exit 2)', async () => {
    const badKey = join(dir, 'bad.key');
    await writeFile(badKey, 'not json');
    const k = cli(['--dev', '--addr', '127.0.0.1:0', '--key-file', badKey]);
    expect(await k.exit).toBe(2);
    expect(flatCliText(k.stderr())).toContain(badKey);

    const badCert = join(dir, 'bad.pem');
    await writeFile(badCert, 'nope');
    const t = cli(['--dev', '--addr', '127.0.0.1:0', '--tls-cert', badCert, '--tls-key', badCert]);
    expect(await t.exit).toBe(2);
    expect(flatCliText(t.stderr())).toContain(badCert);

    const missing = join(dir, 'missing.pem');
    const m = cli(['--dev', '--addr', '127.0.0.1:0', '--tls-cert', missing, '--tls-key', badCert]);
    expect(await m.exit).toBe(2);
    expect(flatCliText(m.stderr())).toContain(missing);
  });

  it('rejects unknown flags and a malformed address (exit 2)', async () => {
    const u = cli(['--dev', '--bogus']);
    expect(await u.exit).toBe(2);
    const a = cli(['--dev', '--addr', 'no-port-here']);
    expect(await a.exit).toBe(2);
    expect(flatCliText(a.stderr())).toMatch(/listen address/);
  });

  it('exits 3 when the address is already in use, naming it once', async () => {
    const blocker = net.createServer();
    await new Promise<void>((res) => blocker.listen(0, '127.0.0.1', res));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const c = cli(['--dev', '--addr', `127.0.0.1:${port}`]);
      expect(await c.exit).toBe(3);
      expect(flatCliText(c.stderr())).toContain(`cannot listen on 127.0.0.1:${port}`);
      expect(c.stderr().match(/EADDRINUSE/g)?.length).toBe(1);
    } finally {
      await new Promise((res) => blocker.close(res));
    }
  });

  it('runs STUN beside the relay (ephemeral with an ephemeral --addr port), and not with --no-stun', async () => {
    const c = cli(['--dev', '--addr', '127.0.0.1:0', '--json']);
    const line = JSON.parse(await c.firstLine) as { stunPort: number | null };
    expect(line.stunPort).toBeGreaterThan(0);
    const r = await stunProbe({ host: '127.0.0.1', port: line.stunPort!, timeoutMs: 5000 });
    expect(r.address).toBe('127.0.0.1');
    c.proc.kill('SIGTERM');
    expect({ code: await c.exit, stderr: c.stderr() }).toMatchObject({ code: 0 });

    const n = cli(['--dev', '--addr', '127.0.0.1:0', '--json', '--no-stun']);
    expect((JSON.parse(await n.firstLine) as { stunPort: number | null }).stunPort).toBeNull();
    n.proc.kill('SIGTERM');
    expect({ code: await n.exit, stderr: n.stderr() }).toMatchObject({ code: 0 });
  });

  it('--stun-rate-limit 0 is accepted and STUN still answers', async () => {
    const c = cli(['--dev', '--addr', '127.0.0.1:0', '--json', '--stun-rate-limit', '0']);
    const line = JSON.parse(await c.firstLine) as { stunPort: number };
    expect((await stunProbe({ host: '127.0.0.1', port: line.stunPort, timeoutMs: 5000 })).address).toBe('127.0.0.1');
    c.proc.kill('SIGTERM');
    expect(await c.exit).toBe(0);
  });
});
