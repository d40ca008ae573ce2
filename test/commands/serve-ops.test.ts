/**
 * `derp serve` as an operator runs it: SIGHUP reloads that keep connections, /derpmap read by
 * `derp netcheck`, and ACME issuance from Debian's pebble through the command line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { NODE, ROOT, RUN, runCli } from '../helpers/cli.js';
import { freePort, havePebble, startLoopbackDns, startPebble } from '../helpers/pebble.js';
import { RawClient } from '../helpers/rawclient.js';

type Line = Record<string, unknown> & { msg: string };

/** A running `derp serve --json`: its JSON lines as they come, and a way to wait for one. */
class Serve {
  readonly lines: Line[] = [];
  stderr = '';
  private waiters: { pred: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly proc: ChildProcess) {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, i)) as Line;
        buf = buf.slice(i + 1);
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => (w.pred(line) ? (w.resolve(line), false) : true));
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  static start(args: string[]): Serve {
    return new Serve(spawn(NODE, [RUN, 'serve', '--json', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  /** The first line (already seen or future) that matches; rejects if the process exits first. */
  waitFor(pred: (l: Line) => boolean): Promise<Line> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      this.waiters.push({ pred, resolve });
      void this.exited.then((code) => reject(new Error(`derp serve exited ${code}: ${this.stderr}`)));
    });
  }

  async stop(): Promise<number | null> {
    this.proc.kill('SIGTERM');
    return this.exited;
  }
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tmp(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'derp-serve-ops-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function started(args: string[]): Serve {
  const s = Serve.start(args);
  cleanups.push(() => (s.proc.exitCode === null ? s.stop() : Promise.resolve()));
  return s;
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('derp serve: SIGHUP', () => {
  it('reloads a valid file and refuses an invalid one, without dropping connections', async () => {
    const dir = await tmp();
    const file = join(dir, 'derp.yaml');
    await writeFile(file, 'dev: true\naddr: "127.0.0.1:0"\nstun:\n  enabled: false\n');
    const s = started(['--config', file]);
    const listening = await s.waitFor((l) => l.msg === 'listening');
    const port = Number(new URL(String(listening.url)).port);
    const a = await RawClient.connect({ port });
    const b = await RawClient.connect({ port });
    cleanups.push(() => Promise.all([a.close(), b.close()]));

    await writeFile(file, 'dev: true\naddr: "127.0.0.1:0"\nstun:\n  enabled: false\nlog:\n  level: debug\ntrustedProxies: ["127.0.0.1"]\n');
    s.proc.kill('SIGHUP');
    await s.waitFor((l) => l.msg === 'reloaded');
    // Debug level now: a new connection is logged.
    const c = await RawClient.connect({ port });
    await s.waitFor((l) => l.msg === 'client connected' && l.level === 'debug');
    await c.close();

    await writeFile(file, 'dev: true\naddr: 127.0.0.1:0\nstun:\n  enabled: nope\n');
    s.proc.kill('SIGHUP');
    const refused = await s.waitFor((l) => l.msg.startsWith('reload refused'));
    expect(refused.problem).toBe(`${file}:4:12 stun.enabled: expected true or false, found "nope"`);
    expect(refused.level).toBe('error');

    a.sendPacket(b.publicKey, Buffer.from('still here'));
    expect((await b.nextOf('RecvPacket')).data.toString()).toBe('still here');
    const metrics = await (await fetch(String(listening.metricsUrl))).text();
    expect(metrics).toMatch(/^derp_config_reloads_total\{result="ok"\} 1$/m);
    expect(metrics).toMatch(/^derp_config_reloads_total\{result="failed"\} 1$/m);
    expect(await s.stop()).toBe(0);
  });
});

describe('derp serve: /derpmap', () => {
  it('publishes the configured region, and derp netcheck --map reads it and reaches the node', async () => {
    const dir = await tmp();
    const [derpPort, stunPort] = [await freePort(), await freeUdpPort()];
    const file = join(dir, 'derp.yaml');
    await writeFile(
      file,
      `dev: true\naddr: "127.0.0.1:${derpPort}"\nstun:\n  port: ${stunPort}\n  rateLimit: 0\nmetrics:\n  addr: none\n` +
        `derp:\n  servers:\n    - region: loopback\n      hostname: 127.0.0.1\n      stunPort: ${stunPort}\n      derpPort: ${derpPort}\n`,
    );
    const s = started(['--config', file]);
    await s.waitFor((l) => l.msg === 'listening');
    const r = await runCli(['netcheck', '--map', `http://127.0.0.1:${derpPort}/derpmap`, '--json', '--ipv4-only']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n')[0]!) as { regions: { regionCode: string; method: string; latencyMs: number | null }[] };
    expect(report.regions.map((x) => [x.regionCode, x.method])).toEqual([['loopback', 'stun']]);
    expect(report.regions[0]!.latencyMs).toBeGreaterThanOrEqual(0);
  });
});

describe.skipIf(!havePebble)('derp serve --cert-mode acme (pebble)', () => {
  it('gets a certificate over HTTP-01, reports healthy, and a restart reuses it without a new order', async () => {
    const HOST = 'relay.example.com';
    const dir = await tmp();
    const dns = await startLoopbackDns();
    cleanups.push(() => dns.close());
    const [httpPort, tlsPort] = [await freePort(), await freePort()];
    const pebble = await startPebble({ httpPort, tlsPort, dnsPort: dns.port });
    cleanups.push(() => pebble.stop());
    const caFile = join(dir, 'pebble-listener.pem');
    await writeFile(caFile, pebble.listenerCa);
    const args = [
      '--cert-mode', 'acme', '--hostname', HOST, '--acme-directory', pebble.directory, '--acme-ca-file', caFile, '--acme-email', 'ops@example.com',
      '--cert-dir', join(dir, 'certs'), '--key-file', join(dir, 'derp.key'), '--addr', `127.0.0.1:${tlsPort}`, '--http-port', String(httpPort),
      // One process: this is about issuance; handing the certificate to other workers is test/node/workers.test.ts.
      '--no-stun', '--metrics-addr', '127.0.0.1:0', '--workers', '1',
    ];

    const first = started(args);
    await first.waitFor((l) => l.msg === 'listening');
    const issued = await first.waitFor((l) => l.msg === 'certificate issued' || l.msg === 'certificate issuance failed');
    expect(issued.msg).toBe('certificate issued');
    const root = await pebble.root();
    const verified = await new Promise<string>((resolve, reject) => {
      const sock = tls.connect({ host: '127.0.0.1', port: tlsPort, servername: HOST, ca: [root], ALPNProtocols: ['http/1.1'] }, () => {
        resolve(sock.getPeerX509Certificate()?.subjectAltName ?? '');
        sock.end();
      });
      sock.once('error', reject);
    });
    expect(verified).toContain(`DNS:${HOST}`);
    const health = await new Promise<number>((resolve, reject) => {
      https.get({ host: '127.0.0.1', port: tlsPort, path: '/healthz', servername: HOST, ca: [root] }, (res) => (res.resume(), resolve(res.statusCode ?? 0))).on('error', reject);
    });
    expect(health).toBe(200);
    expect(await first.stop()).toBe(0);

    const orders = pebble.lines.filter((l) => l.includes('/order-plz')).length;
    const second = started(args);
    await second.waitFor((l) => l.msg === 'listening');
    expect(await second.stop()).toBe(0);
    expect(second.lines.some((l) => l.msg === 'certificate issued')).toBe(false);
    expect(pebble.lines.filter((l) => l.includes('/order-plz')).length).toBe(orders);
  }, 60_000);
});
