// `derp bench` (the built CLI) against real relays on loopback: an in-process RelayServer, and a
// `derp serve --dev` child where the test needs a pid to read /proc from.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../../src/lib/loadgen/index.js';
import { NODE, ROOT, RUN, flatCliText, runCli } from '../helpers/cli.js';
import { assertMatchesSchema } from '../helpers/schema.js';
import { startRelay, type Fixture } from '../server/fixture.js';

/** Parses and schema-checks a --json run. */
function report(stdout: string): BenchReport {
  const doc = JSON.parse(stdout) as BenchReport;
  assertMatchesSchema('bench.schema.json', doc);
  return doc;
}

interface Child {
  proc: ChildProcess;
  url: string;
  pid: number;
}

/** `derp serve --dev` on an ephemeral port; resolves with its URL once it printed its listening line. */
function startServe(): Promise<Child> {
  const proc = spawn(NODE, [RUN, 'serve', '--dev', '--addr', '127.0.0.1:0', '--json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stderr!.resume();
  return new Promise((res, rej) => {
    proc.once('exit', (code) => rej(new Error(`derp serve exited (${code}) before listening`)));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (!line.includes('"listening"')) return;
      const o = JSON.parse(line) as { url: string };
      res({ proc, url: o.url, pid: proc.pid! });
    });
  });
}

const TINY = ['--pairs', '2', '--duration', '1', '--warmup', '0'];

describe('derp bench', () => {
  let relay: Fixture;
  let serve: Child;

  beforeAll(async () => {
    [relay, serve] = await Promise.all([startRelay(), startServe()]);
  });
  afterAll(async () => {
    serve?.proc.kill('SIGTERM');
    await relay?.close();
  });

  it('throughput at a modest rate: every packet delivered, JSON matches its schema', async () => {
    const r = await runCli(['bench', '--url', relay.server.url, ...TINY, '--rate', '200', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = report(r.stdout);
    expect(doc.schema).toBe('derp.bench/v1');
    expect(doc.mode).toBe('throughput');
    expect(doc.transport).toBe('derp');
    const t = doc.throughput!;
    expect(t.sent).toBeGreaterThan(0);
    expect(t.delivered).toBe(t.sent);
    expect(t.lost).toBe(0);
    expect(t.lossPct).toBe(0);
    expect(t.packetsPerSec).toBeGreaterThan(0);
    expect(t.mbitPerSec).toBeGreaterThan(0);
    expect(t.latencyMs.p50).not.toBeNull();
    expect(t.latencyMs.max!).toBeGreaterThanOrEqual(t.latencyMs.p99!);
    expect(t.generatorCpu.usPerPacket).not.toBeNull();
    expect(t.serverCpu).toBeNull();
    expect(doc.ok).toBe(true);
  });

  it('throughput unpaced over two workers, with the server CPU from --pid, as text', async () => {
    const r = await runCli(['bench', '--url', serve.url, ...TINY, '--workers', '2', '--pid', String(serve.pid)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/delivered\s+[\d,]+ pkts\/s, [\d.]+ Mbit\/s/);
    expect(r.stdout).toMatch(/loss\s+[\d,]+ of [\d,]+ sent/);
    expect(r.stdout).toMatch(/latency\s+p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms/);
    expect(r.stdout).toMatch(/server\s+\d+ % of a core/);
    // No TTY: no progress line on stderr.
    expect(r.stderr).toBe('');
  });

  it('carries DERP over WebSocket: ws:// URL, or --transport websocket on http://', async () => {
    const ws = relay.server.url.replace(/^http/, 'ws');
    for (const args of [['--url', ws], ['--url', relay.server.url, '--transport', 'websocket']]) {
      const r = await runCli(['bench', ...args, ...TINY, '--rate', '200', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const doc = report(r.stdout);
      expect(doc.transport).toBe('websocket');
      expect(doc.throughput!.delivered).toBeGreaterThan(0);
      expect(doc.throughput!.lost).toBe(0);
    }
  });

  it('idle with --pid reports the server RSS per connection', async () => {
    const r = await runCli(['bench', '--url', serve.url, '--mode', 'idle', '--conns', '20', '--duration', '0.2', '--pid', String(serve.pid), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const i = report(r.stdout).idle!;
    expect(i.opened).toBe(20);
    expect(i.failed).toBe(0);
    expect(i.serverRss).not.toBeNull();
    expect(i.serverRss!.beforeKiB).toBeGreaterThan(0);
    expect(typeof i.serverRss!.bytesPerConn).toBe('number');
    expect(i.fdLimits.server).toBeGreaterThan(0);
  });

  it('idle without --pid holds the clients and gives no RSS figure', async () => {
    const r = await runCli(['bench', '--url', relay.server.url, '--mode', 'idle', '--conns', '20', '--duration', '0.2', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const i = report(r.stdout).idle!;
    expect(i.opened).toBe(20);
    expect(i.serverRss).toBeNull();
  });

  it('handshake reports handshakes/s, bounded by --count', async () => {
    const r = await runCli(['bench', '--url', serve.url, '--mode', 'handshake', '--concurrency', '4', '--duration', '1', '--count', '40', '--pid', String(serve.pid), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const h = report(r.stdout).handshake!;
    expect(h.count).toBeGreaterThan(0);
    expect(h.count + h.failed).toBeLessThanOrEqual(40);
    expect(h.perSec).toBeGreaterThan(0);
    expect(h.serverCpu).not.toBeNull();
  });

  it('https: verifies the certificate; --ca-file or --insecure lets a self-signed relay through', async () => {
    const tls = await startRelay({ withTls: true });
    try {
      const url = tls.server.url;
      expect(url).toMatch(/^https:/);
      const refused = await runCli(['bench', '--url', url, ...TINY, '--rate', '100']);
      expect(refused.code).toBe(1);
      expect(flatCliText(refused.stderr)).toMatch(/self-signed|certificate/i);
      const dir = mkdtempSync(join(tmpdir(), 'derp-bench-'));
      writeFileSync(join(dir, 'ca.pem'), tls.ca!);
      for (const extra of [['--ca-file', join(dir, 'ca.pem')], ['--insecure']]) {
        const r = await runCli(['bench', '--url', url, ...TINY, '--rate', '100', '--json', ...extra]);
        expect(r.code, r.stderr).toBe(0);
        expect(report(r.stdout).throughput!.delivered).toBeGreaterThan(0);
      }
    } finally {
      await tls.close();
    }
  });

  it('a relay that drops the connections mid-run fails the run (exit 1) and says why', async () => {
    const victim = await startRelay();
    try {
      const run = runCli(['bench', '--url', victim.server.url, '--pairs', '1', '--duration', '3', '--warmup', '0', '--rate', '100', '--json']);
      // Cut once packets flow (bounded poll, not a sleep-as-sync).
      const deadline = Date.now() + 15_000;
      while (victim.server.stats().packetsReceived === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(victim.server.stats().packetsReceived).toBeGreaterThan(0);
      victim.server.closeConnections(() => true, 'test cuts');
      const r = await run;
      expect(r.code).toBe(1);
      const doc = report(r.stdout);
      expect(doc.ok).toBe(false);
      expect(doc.errors.join(' ')).toMatch(/closed/);
      expect(flatCliText(r.stderr)).toMatch(/the run failed/);
    } finally {
      await victim.close();
    }
  });

  it('the --pid server dying mid-run fails the run (exit 1) and says so', async () => {
    const doomed = await startServe();
    const fds = (): number => readdirSync(`/proc/${doomed.pid}/fd`).length;
    const before = fds();
    const run = runCli(['bench', '--url', doomed.url, '--pairs', '1', '--duration', '5', '--warmup', '0', '--rate', '100', '--pid', String(doomed.pid), '--json']);
    // Kill it once both connections of the pair are open (bounded poll on its fd table).
    const deadline = Date.now() + 15_000;
    while (fds() < before + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(fds()).toBeGreaterThanOrEqual(before + 2);
    doomed.proc.kill('SIGKILL');
    const r = await run;
    expect(r.code).toBe(1);
    const doc = report(r.stdout);
    expect(doc.ok).toBe(false);
    expect(doc.errors.join(' ')).toMatch(new RegExp(`the server \\(pid ${doomed.pid}\\) died during the run`));
  });

  it('a closed port → exit 1 with a clear message', async () => {
    const closed = await startRelay();
    const url = closed.server.url;
    await closed.close();
    const r = await runCli(['bench', '--url', url, ...TINY]);
    expect(r.code).toBe(1);
    expect(flatCliText(r.stderr)).toMatch(/failed to connect to .*ECONNREFUSED/);
    // Handshake mode gives up on a target that never answers instead of retrying for the whole duration.
    const hs = await runCli(['bench', '--url', url, '--mode', 'handshake', '--duration', '10m']);
    expect(hs.code).toBe(1);
    expect(flatCliText(hs.stderr)).toMatch(/ECONNREFUSED/);
  });

  it('more idle clients than the open-files limit allows → exit 2, saying so', () => {
    // A shell lowers the limit for this one run (soft and hard, so Node cannot raise it back).
    const r = spawnSync('sh', ['-c', 'ulimit -n 512 && exec "$@"', 'sh', NODE, RUN, 'bench', '--url', relay.server.url, '--mode', 'idle', '--conns', '1000'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(flatCliText(r.stderr)).toMatch(/--conns 1000 is more than 1 worker\(s\) can hold: the open-files limit is 512 per process .* at most 448 connections\. Raise it \(ulimit -n\) or add --workers/);
  });

  it.each([
    [['--pairs', '0'], /--pairs/],
    [['--duration', '11m'], /over the 10 min maximum/],
    [['--duration', 'soon'], /--duration: bad duration/],
    [['--mode', 'flood'], /--mode/],
    [['--transport', 'derp', '--url', 'ws://127.0.0.1:1/derp'], /--transport derp does not go with a ws:/],
    [['--url', 'ftp://127.0.0.1/derp'], /scheme must be http, https, ws or wss/],
    [['--insecure'], /need an https: or wss: URL/],
    [['--pid', '999999999'], /no such process/],
  ])('bad usage %j → exit 2', async (args, message) => {
    const base = args.includes('--url') ? [] : ['--url', 'http://127.0.0.1:1/derp'];
    const r = await runCli(['bench', ...base, ...args]);
    expect(r.code).toBe(2);
    expect(flatCliText(r.stderr)).toMatch(message);
  });
});
