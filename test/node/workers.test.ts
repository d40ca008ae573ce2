/**
 * `derp serve --dev --workers 2` as a real child process: two clients on different workers exchange
 * packets over the sibling mesh; one host /metrics sums both workers; SIGHUP reloads every worker; a
 * SIGKILLed worker is restarted and its client comes back while the other is never disconnected;
 * SIGTERM sends Restarting to every client and the parent exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DERPClient } from '../../src/lib/client/index.js';
import { NODE, ROOT, RUN } from '../helpers/cli.js';
import { until } from '../faults/helpers.js';

interface WorkerView {
  index: number;
  pid: number | null;
  ready: boolean;
  restarts: number;
  clients: number | null;
  ok: boolean;
}

let proc: ChildProcess;
let exit: Promise<number | null>;
let lines: Record<string, unknown>[] = [];
let url = '';
let base = '';
let pids: number[] = [];
const clients: DERPClient[] = [];

async function workers(): Promise<WorkerView[]> {
  const r = await fetch(`${base}/debug/workers`);
  return ((await r.json()) as { workers: WorkerView[] }).workers;
}

/** The worker index holding `n` clients in all, once the count settles there. */
async function clientsPerWorker(total: number): Promise<number[]> {
  let seen: number[] = [];
  await until(async () => {
    seen = (await workers()).map((w) => w.clients ?? 0);
    return seen.reduce((a, b) => a + b, 0) === total;
  }, 5_000, `${total} clients registered across the workers`);
  return seen;
}

async function client(): Promise<DERPClient> {
  const c = new DERPClient({ reconnect: { baseMs: 20, maxMs: 200 } });
  clients.push(c);
  await c.connect(url);
  return c;
}

/** `from` sends until `to` has received one packet (the sibling link learns `to` within a few ms). */
async function delivers(from: DERPClient, to: DERPClient): Promise<void> {
  const tag = `p-${Math.random()}`;
  const it = to.receive();
  let got = false;
  const reading = (async () => {
    for await (const p of it) {
      if (p.data.toString() === tag && p.src.equals(from.publicKey)) {
        got = true;
        return;
      }
    }
  })();
  await until(async () => {
    if (!got) await from.send(to.publicKey, Buffer.from(tag));
    return got;
  }, 5_000, 'a packet across workers');
  await it.return?.();
  await reading;
}

beforeAll(async () => {
  proc = spawn(NODE, [RUN, 'serve', '--dev', '--json', '--workers', '2', '--addr', '127.0.0.1:0', '--stun-port', '0', '--metrics-addr', '127.0.0.1:0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  exit = new Promise((res) => proc.once('exit', (code) => res(code)));
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    const parts = out.split('\n');
    out = parts.pop()!;
    for (const l of parts) lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  await until(() => lines.length > 0 || proc.exitCode !== null, 15_000, 'the listening line');
  const first = lines[0]!;
  expect(first.msg).toBe('listening');
  url = first.url as string;
  base = (first.metricsUrl as string).replace(/\/metrics$/, '');
  pids = first.workerPids as number[];
}, 20_000);

afterAll(async () => {
  for (const c of clients) await c.disconnect();
  if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await exit;
});

describe('derp serve --workers 2', () => {
  let a: DERPClient;
  let b: DERPClient;
  let aWorker = -1;
  let bWorker = -1;

  it('reports both worker pids and serves /healthz 200 only when both are up', async () => {
    expect(pids).toHaveLength(2);
    expect(new Set(pids).size).toBe(2);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });

  it('two clients on different workers exchange packets both ways', async () => {
    a = await client();
    aWorker = (await clientsPerWorker(1)).findIndex((n) => n === 1);
    for (let tries = 0; tries < 30 && bWorker === -1; tries++) {
      const c = await client();
      const per = await clientsPerWorker(2);
      if (per[aWorker] === 1) {
        b = c;
        bWorker = per.findIndex((n, i) => n === 1 && i !== aWorker);
      } else {
        await c.disconnect();
        await clientsPerWorker(1);
      }
    }
    expect(bWorker).toBeGreaterThanOrEqual(0);
    expect(bWorker).not.toBe(aWorker);
    await delivers(a, b);
    await delivers(b, a);
  });

  it('one /metrics for the host sums both workers', async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    // Two clients plus one sibling link into each worker (each with its own link key).
    expect(value(/^derp_clients (\d+)$/m)).toBe(4);
    expect(value(/^derp_connections\{transport="derp",tls="false"\} (\d+)$/m)).toBe(4);
    expect(value(/^derp_mesh_watchers (\d+)$/m)).toBe(2);
    expect(value(/^derp_build_info\{[^}]*\} (\d+)$/m)).toBe(1);
    expect(value(/^derp_workers\{state="ready"\} (\d+)$/m)).toBe(2);
    // The packets above crossed the sibling link: forwarded out of one worker, into the other.
    expect(value(/^derp_packets_forwarded_total\{direction="out"\} (\d+)$/m)).toBeGreaterThanOrEqual(2);
  });

  it('SIGHUP reloads every worker', async () => {
    const before = lines.length;
    proc.kill('SIGHUP');
    await until(() => new Set(lines.slice(before).filter((l) => l.msg === 'reloaded').map((l) => l.worker)).size === 2, 5_000, 'a "reloaded" line from each worker');
  });

  it('a SIGKILLed worker is restarted; its client comes back, the other is never disconnected', async () => {
    let aDrops = 0;
    a.on('disconnected', () => aDrops++);
    const back = new Promise<void>((res) => b.on('connected', (e) => e.reconnected && res()));
    const victim = pids[bWorker]!;
    process.kill(victim, 'SIGKILL');
    await back;
    await until(async () => {
      const w = (await workers())[bWorker]!;
      return w.ready && w.pid !== victim && w.restarts === 1;
    }, 10_000, 'the killed worker restarted');
    pids[bWorker] = (await workers())[bWorker]!.pid!;
    await delivers(a, b);
    await delivers(b, a);
    expect(aDrops).toBe(0);
    expect(lines.some((l) => l.msg === 'worker exited unexpectedly; restarting it' && l.worker === bWorker && l.signal === 'SIGKILL')).toBe(true);
    await until(async () => (await fetch(`${base}/healthz`)).status === 200, 5_000, '/healthz 200 again');
  });

  it('SIGTERM: every client gets Restarting and the parent exits 0', async () => {
    const restarting = [a, b].map((c) => new Promise<void>((res) => c.once('restarting', () => res())));
    proc.kill('SIGTERM');
    await Promise.all(restarting);
    expect(await exit).toBe(0);
    expect(lines.filter((l) => l.msg === 'relay stopped').map((l) => l.worker).sort()).toEqual([0, 1]);
  });
});
