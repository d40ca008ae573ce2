/**
 * Behind nginx, really: Debian's nginx on loopback with the shipped site file (deploy/nginx/derp.conf,
 * only ports and certificate paths substituted) terminates TLS in front of the built `derp serve
 * --insecure-http --trusted-proxy 127.0.0.1/32`. Clients connect from 127.0.0.2/127.0.0.3, so nginx
 * sees them there while the relay's TCP peer is nginx at 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import * as https from 'node:https';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSelfSigned } from '../../src/lib/server/index.js';
import { NODE, ROOT, RUN, flatCliText, runCli } from '../helpers/cli.js';
import { RawClient, type RawTransport } from '../helpers/rawclient.js';
import { FrameType } from '../../src/lib/protocol/index.js';

const NGINX = '/usr/sbin/nginx';
const SITE = join(ROOT, 'deploy/nginx/derp.conf');
/** Bound for anything a step waits on (process start, a log line). */
const STEP_MS = 15_000;

interface Proc {
  proc: ChildProcess;
  exited: Promise<number | null>;
  output: () => string;
}

function start(cmd: string, args: string[]): Proc {
  const proc = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  return { proc, exited, output: () => out };
}

/** Resolves with the first stdout JSON line matching `pred`; rejects if the process exits or the bound passes. */
function waitForJsonLine(p: Proc, pred: (o: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const check = (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let o: unknown;
        try {
          o = JSON.parse(line);
        } catch {
          continue; // not a JSON log line
        }
        if (typeof o === 'object' && o !== null && pred(o as Record<string, unknown>)) {
          done();
          resolve(o as Record<string, unknown>);
          return;
        }
      }
    };
    const onExit = () => {
      done();
      reject(new Error(`process exited before ${what}:\n${p.output()}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no ${what} within ${STEP_MS} ms:\n${p.output()}`));
    }, STEP_MS);
    const done = () => {
      clearTimeout(timer);
      p.proc.stdout!.off('data', check);
      p.proc.off('exit', onExit);
    };
    // Callers subscribe before the line can be written (right after spawn, or before provoking it).
    p.proc.stdout!.on('data', check);
    p.proc.once('exit', onExit);
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts on 127.0.0.1:port; rejects when `p` exits or the bound passes. */
async function untilListening(port: number, p: Proc, what: string): Promise<void> {
  const deadline = Date.now() + STEP_MS;
  let exited = false;
  void p.exited.then(() => (exited = true));
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (exited) throw new Error(`${what} exited:\n${p.output()}`);
    if (Date.now() > deadline) throw new Error(`${what} not listening on ${port} within ${STEP_MS} ms:\n${p.output()}`);
    // Polling a condition with a bound: give the process a moment between attempts.
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The shipped site with only what a loopback test must change: listen ports, upstream, certificate paths. */
function adaptSite(site: string, o: { tlsPort: number; httpPort: number; upstream: string; cert: string; key: string }): string {
  const subs: [RegExp, string][] = [
    [/^(\s*)listen 443 ssl;$/m, `$1listen 127.0.0.1:${o.tlsPort} ssl;`],
    [/^\s*listen \[::\]:443 ssl;\n/m, ''],
    [/^(\s*)listen 80;$/m, `$1listen 127.0.0.1:${o.httpPort};`],
    [/^\s*listen \[::\]:80;\n/m, ''],
    [/^(\s*)server 127\.0\.0\.1:3340;/m, `$1server ${o.upstream};`],
    [/^(\s*)ssl_certificate\s+\S+;/m, `$1ssl_certificate ${o.cert};`],
    [/^(\s*)ssl_certificate_key\s+\S+;/m, `$1ssl_certificate_key ${o.key};`],
  ];
  let out = site;
  for (const [re, to] of subs) {
    if (!re.test(out)) throw new Error(`shipped site no longer has ${re}: update the test's substitutions`);
    out = out.replace(re, to);
  }
  return out;
}

function get(url: string, ca?: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? https : http).get(url, { ca, headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('error', reject);
  });
}

const haveNginx = existsSync(NGINX);
if (!haveNginx) console.warn(`[nginx.test] SKIPPED: ${NGINX} is not installed (apt-get install nginx)`);

describe.skipIf(!haveNginx)('derp serve behind nginx (deploy/nginx/derp.conf)', () => {
  let dir: string;
  let relay: Proc;
  let nginx: Proc;
  let tlsPort = 0;
  let httpPort = 0;
  let ca = '';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'derp-nginx-'));
    relay = start(NODE, [RUN, 'serve', '--insecure-http', '--trusted-proxy', '127.0.0.1/32', '--addr', '127.0.0.1:0', '--json', '--no-stun', '--key-file', join(dir, 'derp.key')]);
    const listening = await waitForJsonLine(relay, (o) => o.msg === 'listening', 'listening line');
    const upstream = new URL(String(listening.url)).host;

    const cert = await generateSelfSigned('127.0.0.1');
    ca = cert.certPem;
    await writeFile(join(dir, 'cert.pem'), cert.certPem);
    await writeFile(join(dir, 'key.pem'), cert.keyPem, { mode: 0o600 });
    const site = await readFile(SITE, 'utf8');
    const errorLog = join(dir, 'error.log');
    // A port picked free can be taken before nginx binds it: try a few times.
    for (let attempt = 1; ; attempt++) {
      tlsPort = await freePort();
      httpPort = await freePort();
      await writeFile(join(dir, 'derp.conf'), adaptSite(site, { tlsPort, httpPort, upstream, cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') }));
      for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(join(dir, d), { recursive: true });
      const main = [
        // Running as root, workers would drop to nobody, who cannot read the temp dir's key.
        process.getuid?.() === 0 ? 'user root;' : '',
        'daemon off;',
        'worker_processes 1;',
        `pid ${join(dir, 'nginx.pid')};`,
        `error_log ${errorLog} notice;`,
        'events { worker_connections 256; }',
        'http {',
        `  access_log ${join(dir, 'access.log')};`,
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((d) => `  ${d}_temp_path ${join(dir, d)};`),
        `  include ${join(dir, 'derp.conf')};`,
        '}',
      ].join('\n');
      await writeFile(join(dir, 'nginx.conf'), main);
      nginx = start(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', errorLog]);
      try {
        await untilListening(tlsPort, nginx, 'nginx');
        await untilListening(httpPort, nginx, 'nginx');
        break;
      } catch (err) {
        const log = existsSync(errorLog) ? await readFile(errorLog, 'utf8') : '';
        if (attempt >= 3 || !log.includes('Address already in use')) throw new Error(`${String(err)}\nerror.log:\n${log}`, { cause: err });
        await nginx.exited;
      }
    }
  }, 4 * STEP_MS);

  afterAll(async () => {
    for (const p of [nginx, relay]) {
      if (p === undefined) continue;
      if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGTERM');
      await p.exited;
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const transport of ['derp', 'websocket'] as RawTransport[]) {
    it(`relays packets over ${transport === 'derp' ? 'Upgrade: DERP' : 'WebSocket'} and the relay logs the client's real address`, async () => {
      const via = { port: tlsPort, ca, transport };
      const a = await RawClient.connect({ ...via, localAddress: '127.0.0.2' });
      const b = await RawClient.connect({ ...via, localAddress: '127.0.0.3' });
      try {
        a.sendPacket(b.publicKey, Buffer.from(`a→b over ${transport}`));
        expect((await b.nextOf('RecvPacket')).data.toString()).toBe(`a→b over ${transport}`);
        b.sendPacket(a.publicKey, Buffer.from('b→a'));
        const back = await a.nextOf('RecvPacket');
        expect(back.data.toString()).toBe('b→a');
        expect(Buffer.compare(back.src, b.publicKey)).toBe(0);

        // A SendPacket too short to hold a key is a protocol error: the relay closes the connection
        // with a warning naming who sent it — the client behind nginx, not nginx.
        const logged = waitForJsonLine(relay, (o) => o.msg === 'closing connection' && o.transport === transport && String(o.reason).includes('short SendPacket'), 'the warning');
        a.write(Buffer.from([FrameType.SendPacket, 0, 0, 0, 4, 1, 2, 3, 4]));
        const line = await logged;
        expect(line.remote).toMatch(/^127\.0\.0\.2 via 127\.0\.0\.1:\d+$/);
        await a.closedPromise;
      } finally {
        a.destroy();
        b.destroy();
      }
    });
  }

  it('passes /generate_204 (with the challenge echo), /derp/probe and the rest through, refuses /debug/, on TLS and on port 80', async () => {
    const g = await get(`https://127.0.0.1:${tlsPort}/generate_204`, ca, { 'X-Tailscale-Challenge': 'ts_127.0.0.1' });
    expect(g.status).toBe(204);
    expect(g.headers['x-tailscale-response']).toBe('response ts_127.0.0.1');
    expect((await get(`https://127.0.0.1:${tlsPort}/derp/probe`, ca)).status).toBe(200);
    // /derp without an upgrade reaches the relay, which asks for one.
    expect((await get(`https://127.0.0.1:${tlsPort}/derp`, ca)).status).toBe(426);
    // Behind a local proxy every request is "from loopback": the site keeps debug pages away from it.
    for (const p of ['/debug/varz', '/debug']) expect((await get(`https://127.0.0.1:${tlsPort}${p}`, ca)).status, p).toBe(403);
    expect((await get(`https://127.0.0.1:${tlsPort}/robots.txt`, ca)).body).toContain('Disallow: /');
    const plain = await get(`http://127.0.0.1:${httpPort}/generate_204`, undefined, { 'X-Tailscale-Challenge': 'abc' });
    expect(plain.status).toBe(204);
    expect(plain.headers['x-tailscale-response']).toBe('response abc');
    const redirect = await get(`http://127.0.0.1:${httpPort}/derp`);
    expect(redirect.status).toBe(302);
    expect(redirect.headers.location).toBe(`https://127.0.0.1/derp`);
  });
});

describe('derp serve --trusted-proxy', () => {
  it('refuses an entry that is not an address or CIDR with exit 2, naming it', async () => {
    const r = await runCli(['serve', '--insecure-http', '--dev', '--addr', '127.0.0.1:0', '--no-stun', '--trusted-proxy', '127.0.0.1/32', '--trusted-proxy', '10.0.0.0/33']);
    expect(r.code).toBe(2);
    const text = flatCliText(r.stderr);
    expect(text).toContain('--trusted-proxy (trustedProxies): expected a list of IP addresses or CIDRs');
    expect(text).toContain('"10.0.0.0/33"');
  });
});
