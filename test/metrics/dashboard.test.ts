/**
 * `derp serve` with metrics, end to end (the built CLI; `npm run build` first): /metrics on
 * --metrics-addr, off with "none", /debug/varz on the relay port; and the Grafana dashboard, whose
 * every PromQL query must parse and name only metrics this real relay exports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateSelfSigned } from '../../src/lib/server/index.js';
import { RawClient } from '../helpers/rawclient.js';
import { promqlMetrics, scrape, type Families } from './helpers.js';

const ROOT = resolve(import.meta.dirname, '../..');
const NODE = join(ROOT, 'node_modules/.bin/node');
const RUN = join(ROOT, 'bin/run.js');
const DASHBOARD = join(ROOT, 'deploy/grafana/derp-dashboard.json');

interface Listening {
  url: string;
  metricsUrl: string | null;
}

const procs: ChildProcess[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) {
    if (p.exitCode !== null || p.signalCode !== null) continue;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await gone;
  }
});

/** TCP ports a process listens on (Linux: its socket inodes matched against /proc/net/tcp{,6} LISTEN rows). */
async function listeningTcpPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(m[1]!);
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const rows = (await readFile(table, 'utf8').catch(() => '')).split('\n').slice(1);
    for (const row of rows) {
      const f = row.trim().split(/\s+/);
      // local_address is HEX_IP:HEX_PORT; st 0A = LISTEN; inode is the 10th field.
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

/** Spawns `derp serve --json …` and resolves with its listening line. */
function serve(args: string[]): Promise<Listening> {
  const proc = spawn(NODE, [RUN, 'serve', '--json', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      for (const line of out.split('\n')) {
        if (!line.includes('"listening"')) continue;
        resolve(JSON.parse(line) as Listening);
        return;
      }
    });
    proc.once('exit', (code) => reject(new Error(`derp serve exited ${code}: ${err}${out}`)));
  });
}

let dir: string;
let cert: { certPem: string; keyPem: string };
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-metrics-'));
  cert = await generateSelfSigned('127.0.0.1');
  await writeFile(join(dir, 'cert.pem'), cert.certPem);
  await writeFile(join(dir, 'key.pem'), cert.keyPem, { mode: 0o600 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Grafana's interval variables are not PromQL; the dashboard's own template variable sits inside a string. */
function toPromQL(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$__interval', '1m').replaceAll('$__range', '1h');
}

function selectedMetrics(expr: string): string[] {
  return promqlMetrics(toPromQL(expr));
}

interface Panel {
  title: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

describe('derp serve --metrics-addr', () => {
  it('serves /metrics on its own port (TLS cert expiry included); every dashboard query names an exported metric', async () => {
    const l = await serve(['--addr', '127.0.0.1:0', '--key-file', join(dir, 'relay.key'), '--tls-cert', join(dir, 'cert.pem'), '--tls-key', join(dir, 'key.pem'), '--metrics-addr', '127.0.0.1:0']);
    expect(l.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const port = Number(new URL(l.url).port);
    // One real client, so labelled series (handshakes, per-transport connections) exist.
    const c = await RawClient.connect({ port, ca: cert.certPem });
    await c.ping();
    const m: Families = await scrape(l.metricsUrl!);
    expect(m.get('derp_connections')?.metrics.find((s) => s.labels?.tls === 'true' && s.labels.transport === 'derp')?.value).toBe('1');
    expect(Number(m.get('derp_certificate_expires_in_seconds')?.metrics[0]?.value)).toBeGreaterThan(0);
    c.destroy();

    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Panel[] };
    const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
    const missing: string[] = [];
    let queries = 0;
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        if (t.expr === undefined) continue;
        queries++;
        for (const name of selectedMetrics(t.expr)) if (!m.has(name)) missing.push(`${p.title}: ${name}`);
      }
    }
    expect(queries).toBeGreaterThanOrEqual(8);
    expect(missing).toEqual([]);
    // The titles the issue asks for.
    const titles = panels.map((p) => p.title).join('\n');
    for (const want of [/Clients/, /Packets\/s/, /Mbit\/s/, /Drops by reason/, /RTT/, /STUN/, /Errors/, /Certificate/]) expect(titles).toMatch(want);
  });

  it('the dashboard check itself catches an unknown metric and a syntax error', () => {
    expect(selectedMetrics('sum by (reason) (rate(derp_packets_dropped_total{kind="disco"}[$__rate_interval]))')).toEqual(['derp_packets_dropped_total']);
    expect(() => selectedMetrics('sum(rate(derp_packets_sent_total[5m]')).toThrow(/syntax error/);
  });

  it('"none" opens no metrics listener (the process listens on the relay port only); /debug/varz still answers there', async () => {
    const on = await serve(['--dev', '--addr', '127.0.0.1:0', '--no-stun']);
    expect(on.metricsUrl).not.toBeNull();
    expect((await listeningTcpPorts(procs.at(-1)!.pid!)).sort()).toEqual([Number(new URL(on.url).port), Number(new URL(on.metricsUrl!).port)].sort());

    const off = await serve(['--dev', '--addr', '127.0.0.1:0', '--no-stun', '--metrics-addr', 'none']);
    expect(off.metricsUrl).toBeNull();
    expect(await listeningTcpPorts(procs.at(-1)!.pid!)).toEqual([Number(new URL(off.url).port)]);
    const varz = await fetch(new URL('/debug/varz', off.url));
    expect(varz.status).toBe(200);
    expect(await varz.text()).toMatch(/^derp_accepts 0$/m);
  });
});
