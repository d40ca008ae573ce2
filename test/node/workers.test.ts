/**
 * `derp serve --dev --workers 2` as a real child process: two clients on different workers exchange
 * packets over the sibling mesh; one host /metrics sums both workers; SIGHUP reloads every worker; a
 * SIGKILLed worker is restarted and its client comes back while the other is never disconnected;
 * SIGTERM sends Restarting to every client and the parent exits 0. Then the same host meshed with a
 * remote node: the remote reaches the clients of both workers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import * as http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyIdentity } from '../../src/lib/abuse/index.js';
import { DERPClient } from '../../src/lib/client/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { CRASH_LOOP_LIMIT, CRASH_WINDOW_MS } from '../../src/lib/node/supervisor.js';
import { NODE, ROOT, RUN } from '../helpers/cli.js';
import { freePort, until } from '../faults/helpers.js';

interface WorkerView {
  index: number;
  pid: number | null;
  ready: boolean;
  restarts: number;
  clients: number | null;
  ok: boolean;
}

interface Serve {
  proc: ChildProcess;
  exit: Promise<number | null>;
  lines: Record<string, unknown>[];
  url: string;
  /** The metrics listener's base URL. */
  base: string;
  pids: number[];
}

const started: Serve[] = [];
const clients: DERPClient[] = [];

/** `derp serve --json <args>` as a child process, resolved on its listening line. */
async function serve(args: string[]): Promise<Serve> {
  const proc = spawn(NODE, [RUN, 'serve', '--json', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const exit = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  const lines: Record<string, unknown>[] = [];
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    const parts = out.split('\n');
    out = parts.pop()!;
    for (const l of parts) lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  await until(() => lines.length > 0 || proc.exitCode !== null, 15_000, 'the listening line');
  const first = lines[0];
  if (first === undefined) throw new Error(`derp serve exited ${proc.exitCode}: ${err}`);
  expect(first.msg).toBe('listening');
  const s: Serve = { proc, exit, lines, url: first.url as string, base: (first.metricsUrl as string | null)?.replace(/\/metrics$/, '') ?? '', pids: (first.workerPids as number[] | undefined) ?? [] };
  started.push(s);
  return s;
}

let proc: ChildProcess;
let exit: Promise<number | null>;
let lines: Record<string, unknown>[] = [];
let url = '';
let base = '';
let pids: number[] = [];

async function workers(): Promise<WorkerView[]> {
  const r = await fetch(`${base}/debug/workers`);
  return ((await r.json()) as { workers: WorkerView[] }).workers;
}

/** The worker index holding `n` clients in all, once the count settles there. */
async function clientsPerWorker(total: number): Promise<number[]> {
  let seen: number[] = [];
  await until(async () => {
    const ws = await workers();
    // A worker that did not answer in time (a loaded machine) is not settled yet.
    if (ws.some((w) => w.clients === null)) return false;
    seen = ws.map((w) => w.clients!);
    return seen.reduce((a, b) => a + b, 0) === total;
  }, 10_000, `${total} clients registered across the workers`).catch(async (e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify(await workers())}`);
  });
  return seen;
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
  const s = await serve(['--dev', '--workers', '2', '--addr', '127.0.0.1:0', '--stun-port', '0', '--metrics-addr', '127.0.0.1:0']);
  ({ proc, exit, lines, url, base, pids } = s);
}, 20_000);

afterAll(async () => {
  for (const c of clients) await c.disconnect();
  for (const s of started) {
    if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
    for (const pid of s.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await s.exit;
  }
});

/** Connects clients to `url` until one lands on each worker (as /debug/workers counts them). */
async function onEachWorker(url: string, already: number): Promise<DERPClient[]> {
  const placed: (DERPClient | undefined)[] = [undefined, undefined];
  for (let tries = 0; tries < 40 && placed.some((c) => c === undefined); tries++) {
    const before = (await workers()).map((w) => w.clients ?? 0);
    const c = new DERPClient({ reconnect: { baseMs: 20, maxMs: 200 } });
    clients.push(c);
    await c.connect(url);
    const after = await clientsPerWorker(already + placed.filter((x) => x !== undefined).length + 1);
    const i = after.findIndex((n, j) => n > before[j]!);
    if (placed[i] === undefined) placed[i] = c;
    else {
      await c.disconnect();
      await clientsPerWorker(already + placed.filter((x) => x !== undefined).length);
    }
  }
  expect(placed.every((c) => c !== undefined)).toBe(true);
  return placed as DERPClient[];
}

describe('derp serve --workers 2', () => {
  let a: DERPClient;
  let b: DERPClient;
  let bWorker = -1;
  // Reconnecting clients outlive the server they were for: left alone they redial its freed port, which
  // the kernel may hand to a later test's relay (an extra client there, once seen in CI).
  afterAll(async () => {
    for (const c of clients.splice(0)) await c.disconnect();
  });

  it('reports both worker pids and serves /healthz 200 only when both are up', async () => {
    expect(pids).toHaveLength(2);
    expect(new Set(pids).size).toBe(2);
    // Every CPU has a worker already: no handshake thread unless asked for (--handshake-thread, below).
    expect(lines[0]).toMatchObject({ handshakeThread: false });
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    // Each took connections only once its link to the other was up.
    const taking = lines.filter((l) => l.msg === 'taking connections');
    expect(taking.map((l) => l.worker).sort()).toEqual([0, 1]);
    for (const l of taking) expect(l).toMatchObject({ siblingLinksUp: 1, siblings: 1 });
  });

  it('two clients on different workers exchange packets both ways', async () => {
    [a, b] = await onEachWorker(url, 0);
    bWorker = 1;
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
    // The restarted worker bound the public port only with its sibling link up.
    const takingAgain = () => lines.filter((l) => l.msg === 'taking connections' && l.worker === bWorker);
    await until(() => takingAgain().length === 2, 10_000, 'the restarted worker taking connections');
    expect(takingAgain()[1]).toMatchObject({ siblingLinksUp: 1, siblings: 1 });
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

describe('derp serve --workers 2 in a region mesh', () => {
  let dir = '';
  afterAll(async () => {
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('a remote node reaches the clients of both workers (sibling-held keys reported and forwarded once more)', async () => {
    dir = await mkdtemp(join(tmpdir(), 'derp-workers-'));
    const psk = join(dir, 'mesh.key');
    await writeFile(psk, `${'5a'.repeat(32)}\n`, { mode: 0o600 });
    const [hostPort, remotePort] = [await freePort(), await freePort()];
    // Both at once: each one's links retry (backoff) until the other listens.
    const [host, remote] = await Promise.all([
      serve(['--dev', '--workers', '2', '--addr', `127.0.0.1:${hostPort}`, '--no-stun', '--metrics-addr', '127.0.0.1:0', '--mesh-psk-file', psk, '--mesh-with', `127.0.0.1:${remotePort}`]),
      serve(['--dev', '--addr', `127.0.0.1:${remotePort}`, '--no-stun', '--metrics-addr', '127.0.0.1:0', '--mesh-psk-file', psk, '--mesh-with', `127.0.0.1:${hostPort}`]),
    ]);
    base = host.base;
    // Place our clients once the mesh has formed, counting whatever it left registered: CI once saw an
    // extra client on one worker here (not reproduced since; the remote link's first attempt, likely).
    await until(async () => /^derp_mesh_peers\{state="up"\} 1$/m.test(await (await fetch(`${remote.base}/metrics`)).text()), 10_000, 'the remote node\'s link up');
    let settled = 0;
    await until(async () => {
      const ws = await workers();
      settled = ws.reduce((n, w) => n + (w.clients ?? 0), 0);
      return ws.every((w) => w.clients !== null);
    }, 10_000, 'every worker\'s client count');
    const [w0, w1] = await onEachWorker(host.url, settled);
    const r = new DERPClient({ reconnect: false });
    clients.push(r);
    await r.connect(remote.url);
    // One of these needs the extra sibling hop: the remote node's single link lands on one worker.
    await delivers(r, w0!);
    await delivers(r, w1!);
    await delivers(w0!, r);
    await delivers(w1!, r);
  });
});

describe('derp serve --workers 2: a worker that keeps dying', () => {
  it(`is restarted ${CRASH_LOOP_LIMIT - 1} times, then the parent gives up, stops the other and exits 1`, async () => {
    const s = await serve(['--dev', '--workers', '2', '--addr', '127.0.0.1:0', '--no-stun', '--metrics-addr', '127.0.0.1:0']);
    base = s.base;
    let victim = s.pids[1]!;
    for (let kill = 1; kill < CRASH_LOOP_LIMIT; kill++) {
      process.kill(victim, 'SIGKILL');
      await until(async () => {
        const w = (await workers())[1]!;
        return w.ready && w.pid !== victim && w.restarts === kill;
      }, 10_000, `restart ${kill}`);
      victim = (await workers())[1]!.pid!;
    }
    // The fifth exit within the window: no more restarts.
    process.kill(victim, 'SIGKILL');
    expect(await s.exit).toBe(1);
    expect(s.lines.find((l) => l.msg === 'worker keeps dying; giving up and stopping every worker')).toMatchObject({ worker: 1, exits: CRASH_LOOP_LIMIT, windowSeconds: CRASH_WINDOW_MS / 1000 });
    expect(s.lines.filter((l) => l.msg === 'worker exited unexpectedly; restarting it')).toHaveLength(CRASH_LOOP_LIMIT - 1);
    // Worker 0 was stopped too, not left serving.
    expect(() => process.kill(s.pids[0]!, 0)).toThrow();
  }, 60_000);
});

describe('derp serve --workers 2 --max-conns-per-ip 2', () => {
  it('the per-address cap holds for the host, not per worker (each worker enforces its share)', async () => {
    const s = await serve(['--dev', '--workers', '2', '--addr', '127.0.0.1:0', '--no-stun', '--metrics-addr', '127.0.0.1:0', '--max-conns-per-ip', '2']);
    base = s.base;
    // Eight tries from 127.0.0.1, held open: the kernel spreads them over both workers, each of which
    // admits one. Enforced per worker as before, both would take two (four in all).
    const held: DERPClient[] = [];
    let refused = 0;
    for (let i = 0; i < 8; i++) {
      const c = new DERPClient({ reconnect: false });
      try {
        await c.connect(s.url);
        held.push(c);
        clients.push(c);
      } catch {
        refused++;
      }
    }
    expect(held.length).toBeGreaterThanOrEqual(1);
    expect(held.length).toBeLessThanOrEqual(2);
    const text = await (await fetch(`${s.base}/metrics`)).text();
    expect(Number(/^derp_connections_refused_total\{reason="per_ip"\} (\d+)$/m.exec(text)?.[1])).toBe(refused);
  });
});

describe('derp serve --workers 2 --handshake-thread', () => {
  it('every worker opens ClientInfo on a thread of its own (off by default with workers); /metrics sums them, warm-ups left out', async () => {
    const s = await serve(['--dev', '--workers', '2', '--addr', '127.0.0.1:0', '--no-stun', '--metrics-addr', '127.0.0.1:0', '--handshake-thread', '--warm-up-handshakes', '40']);
    base = s.base;
    // Each worker warmed itself, through its thread; the listening line sums them.
    expect(s.lines[0]).toMatchObject({ handshakeThread: true, workers: 2, warmUp: { handshakes: 80 } });
    const [a, b] = await onEachWorker(s.url, 0);
    await delivers(a!, b!);
    const text = await (await fetch(`${s.base}/metrics`)).text();
    const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    // Every upgrade into either worker (the clients and the two sibling links) was opened on a thread;
    // the 80 warm-up handshakes were their private copies' and count in neither.
    const accepts = value(/^derp_accepts_total (\d+)$/m);
    expect(accepts).toBeGreaterThanOrEqual(4);
    expect(accepts).toBeLessThan(80);
    expect(value(/^derp_handshake_thread_opened_total (\d+)$/m)).toBe(accepts);
    expect(value(/^derp_handshake_thread_failures_total (\d+)$/m)).toBe(0);
  });
});

describe('derp serve --workers 2 --self-signed', () => {
  it('every worker serves worker 0\'s one certificate (the certName printed)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'derp-workers-tls-'));
    // The parent creates the key file once, before any worker exists.
    const s = await serve(['--workers', '2', '--addr', '127.0.0.1:0', '--self-signed', '127.0.0.1', '--key-file', join(dir, 'derper.key'), '--no-stun', '--http-port', '-1', '--metrics-addr', '127.0.0.1:0']);
    base = s.base;
    const certName = s.lines[0]!.certName as string;
    // Not --dev: each worker made the production warm-up before listening.
    expect(s.lines[0]).toMatchObject({ warmUp: { handshakes: 1600 } });
    const port = Number(new URL(s.url).port);
    // Sixteen handshakes: the kernel spreads them over both workers (all on one: 2^-15).
    const seen = new Set<string>();
    for (let i = 0; i < 16; i++) {
      const sock = tls.connect({ host: '127.0.0.1', port, servername: '127.0.0.1', rejectUnauthorized: false });
      await once(sock, 'secureConnect');
      seen.add(`sha256-raw:${createHash('sha256').update(sock.getPeerCertificate().raw).digest('hex')}`);
      sock.destroy();
    }
    expect([...seen]).toEqual([certName]);
    s.proc.kill('SIGTERM');
    expect(await s.exit).toBe(0);
    await rm(dir, { recursive: true, force: true });
  });
});

describe('derp serve --workers 2, abuse bans', () => {
  it('a key banned by one worker is refused and listed by both, a ban counted once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'derp-workers-ban-'));
    const cfg = join(dir, 'serve.yaml');
    await writeFile(cfg, 'abuse:\n  ban: true\n  thresholds:\n    absentPeer: 10\n');
    const s = await serve(['--dev', '--workers', '2', '--addr', '127.0.0.1:0', '--no-stun', '--metrics-addr', '127.0.0.1:0', '--config', cfg]);
    const key = NodePrivateKey.generate();
    const bad = new DERPClient({ reconnect: false, privateKey: key });
    clients.push(bad);
    await bad.connect(s.url);
    // Packets to keys nobody holds: past the threshold its worker bans the key (loopback addresses are never banned).
    for (let i = 0; i < 20; i++) await bad.send(NodePrivateKey.generate().publicKey, Buffer.from('x'));
    const bans = async (): Promise<string> => (await fetch(`${s.base}/metrics`)).text();
    await until(async () => /^derp_abuse_bans\{type="key"\} 1$/m.test(await bans()), 10_000, 'the ban');
    // Eight new connections with the banned key: the kernel spreads them over both workers; every one is
    // refused (with bans per worker, about half got in).
    const admitted = async (): Promise<number> => {
      let n = 0;
      for (let i = 0; i < 8; i++) {
        const c = new DERPClient({ reconnect: false, privateKey: key });
        try {
          await c.connect(s.url);
          n++;
          await c.disconnect();
        } catch {
          // refused
        }
      }
      return n;
    };
    expect(await admitted()).toBe(0);
    // /debug/bans on the relay port, over fresh connections (either worker answers): the ban each time.
    const port = Number(new URL(s.url).port);
    const listed = async (): Promise<void> => {
      for (let i = 0; i < 6; i++) {
        const body = await new Promise<string>((resolve, reject) => {
          http
            .get({ host: '127.0.0.1', port, path: '/debug/bans', agent: false }, (res) => {
              let b = '';
              res.on('data', (d: Buffer) => (b += d.toString()));
              res.on('end', () => resolve(b));
            })
            .once('error', reject);
        });
        expect((JSON.parse(body) as { bans: { identity: string }[] }).bans.map((b) => b.identity)).toEqual([keyIdentity(key.publicKey)]);
      }
    };
    await listed();
    // The parent sums its workers' counters: the ban made once.
    expect(await bans()).toMatch(/^derp_abuse_bans_total 1$/m);
    // Each worker in turn SIGKILLed and restarted (the one that made the ban among them): the parent
    // hands the restarted one the bans, so it refuses the key as well.
    const view = async (): Promise<WorkerView[]> => ((await (await fetch(`${s.base}/debug/workers`)).json()) as { workers: WorkerView[] }).workers;
    for (const index of [0, 1]) {
      const victim = (await view())[index]!.pid!;
      process.kill(victim, 'SIGKILL');
      await until(async () => {
        const w = (await view())[index]!;
        return w.ready && w.pid !== victim;
      }, 15_000, `worker ${index} restarted`);
      await until(() => s.lines.filter((l) => l.msg === 'taking connections' && l.worker === index).length === 2, 10_000, `worker ${index} taking connections again`);
      expect(await admitted()).toBe(0);
      await listed();
    }
    // A gauge of one ban, not one per worker (the maker's count of bans made went with its restart).
    expect(await bans()).toMatch(/^derp_abuse_bans\{type="key"\} 1$/m);
    await rm(dir, { recursive: true, force: true });
  }, 60_000);
});
