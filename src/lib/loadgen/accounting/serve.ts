/**
 * A `derp serve` child process as an AccountingNode: restarted with SIGTERM on the same ports, its
 * counters read from /metrics while it runs and from its final "relay stopped" line when a life ends;
 * or SIGKILLed (no final line) and started again on the same ports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ConnectError, TimeoutError } from '../../errors.js';
import { parseMeshPeers, parseMetricsCounts, parseStopLine, type MeshPeerCounts, type RelayCounts } from './counts.js';
import type { AccountingNode } from './harness.js';

export interface ServeOptions {
  name: string;
  /** The node binary (the pinned one in tests). */
  node: string;
  /** bin/run.js of the checkout. */
  entry: string;
  cwd: string;
  /** Extra `derp serve` flags. */
  args?: string[];
  /** The DERP listen address (default 127.0.0.1:0); a mesh needs it known before the node starts. */
  addr?: string;
}

/** A region of meshed `derp serve` nodes on loopback (every node lists the others in --mesh-with). */
export interface ServeRegion {
  nodes: ServeNode[];
  /** Stops every node (SIGTERM, SIGKILL if one hangs) and removes the mesh key file. */
  stop(): Promise<void>;
}

/** A free loopback port now (the kernel's pick; closed again before the node binds it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a !== null ? resolve(a.port) : reject(new ConnectError('no port from the kernel'))));
    });
  });
}

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;
const KEEP_LINES = 30;

interface Life {
  proc: ChildProcess;
  url: string;
  metricsUrl: string;
  stopped: Promise<RelayCounts | null>;
  exited: Promise<void>;
}

export class ServeNode implements AccountingNode {
  private life: Life | null = null;
  private killed: { url: string; metricsUrl: string } | null = null;
  private derpHost = '';
  private readonly tail: string[] = [];

  private constructor(private readonly o: ServeOptions) {}

  get name(): string {
    return this.o.name;
  }

  static async start(o: ServeOptions): Promise<ServeNode> {
    const n = new ServeNode(o);
    n.life = await n.spawnLife(o.addr ?? '127.0.0.1:0', '127.0.0.1:0');
    n.derpHost = new URL(n.life.url).host;
    return n;
  }

  /** `n` nodes meshed by list with a fresh mesh key,; names node-1…node-n. */
  static async startRegion(n: number, o: Omit<ServeOptions, 'name' | 'addr'>): Promise<ServeRegion> {
    const dir = await mkdtemp(join(tmpdir(), 'derp-acct-'));
    const pskFile = join(dir, 'mesh.key');
    await writeFile(pskFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const addrs: string[] = [];
    for (let i = 0; i < n; i++) addrs.push(`127.0.0.1:${await freePort()}`);
    const nodes: ServeNode[] = [];
    const stop = async (): Promise<void> => {
      await Promise.all(nodes.map((x) => x.stop().catch(() => x.kill())));
      await rm(dir, { recursive: true, force: true });
    };
    try {
      const started = await Promise.allSettled(
        addrs.map((addr, i) => ServeNode.start({ ...o, name: `node-${i + 1}`, addr, args: [...(o.args ?? []), '--mesh-with', addrs.filter((a) => a !== addr).join(','), '--mesh-psk-file', pskFile] })),
      );
      for (const r of started) if (r.status === 'fulfilled') nodes.push(r.value);
      const failed = started.find((r) => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    } catch (err) {
      await stop();
      throw err;
    }
    return { nodes, stop };
  }

  /** How the other nodes' mesh metrics name this one (`<address>:<port>`). */
  get meshId(): string {
    return this.derpHost;
  }

  url(): string {
    return this.current().url;
  }

  get pid(): number | undefined {
    return this.life?.proc.pid;
  }

  async scrape(): Promise<RelayCounts> {
    return parseMetricsCounts(await this.metricsText());
  }

  async scrapeMesh(): Promise<Map<string, MeshPeerCounts>> {
    return parseMeshPeers(await this.metricsText());
  }

  /** The raw /metrics text of the running life. */
  async metricsText(): Promise<string> {
    const res = await fetch(this.current().metricsUrl);
    if (!res.ok) throw new ConnectError(`${this.name}: GET /metrics answered ${res.status}`);
    return res.text();
  }

  /** SIGKILL: the life ends with no final counters; resolves once the process is gone. */
  async crash(): Promise<void> {
    const l = this.current();
    this.killed = { url: l.url, metricsUrl: l.metricsUrl };
    this.life = null;
    l.proc.kill('SIGKILL');
    await l.exited;
  }

  /** The next life after crash(), on the same ports. */
  async revive(): Promise<void> {
    const k = this.killed;
    if (k === null) throw new ConnectError(`${this.name} was not crashed`);
    this.killed = null;
    this.life = await this.spawnLife(new URL(k.url).host, new URL(k.metricsUrl).host);
  }

  async restart(): Promise<RelayCounts> {
    const old = this.current();
    const addr = new URL(old.url).host;
    const maddr = new URL(old.metricsUrl).host;
    const counts = await this.stop();
    this.life = await this.spawnLife(addr, maddr);
    return counts;
  }

  /** SIGTERM; resolves with the final counters of the life that ended. */
  async stop(): Promise<RelayCounts> {
    const l = this.current();
    this.life = null;
    l.proc.kill('SIGTERM');
    const t = setTimeout(() => l.proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await l.exited;
    clearTimeout(t);
    const c = await l.stopped;
    if (c === null) throw new ConnectError(`${this.name} exited without its "relay stopped" line; last output:\n${this.tail.join('\n')}`);
    return c;
  }

  /** For cleanup paths: no counters wanted. */
  kill(): void {
    this.life?.proc.kill('SIGKILL');
    this.life = null;
  }

  private current(): Life {
    if (this.life === null) throw new ConnectError(`${this.name} is not running`);
    return this.life;
  }

  private keep(line: string): void {
    this.tail.push(line);
    if (this.tail.length > KEEP_LINES) this.tail.shift();
  }

  private spawnLife(addr: string, metricsAddr: string): Promise<Life> {
    // No STUN: the harness does not use it, and a fixed UDP port would collide between nodes and runs.
    const args = [this.o.entry, 'serve', '--dev', '--json', '--no-stun', '--addr', addr, '--metrics-addr', metricsAddr, '--drain-seconds', '0', ...(this.o.args ?? [])];
    const proc = spawn(this.o.node, args, { cwd: this.o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    createInterface({ input: proc.stderr! }).on('line', (l) => this.keep(l));
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    let onStop: (c: RelayCounts | null) => void = () => undefined;
    const stopped = new Promise<RelayCounts | null>((r) => (onStop = r));
    void exited.then(() => onStop(null));
    return new Promise<Life>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new TimeoutError(`${this.name} printed no listening line within ${START_TIMEOUT_MS} ms:\n${this.tail.join('\n')}`));
      }, START_TIMEOUT_MS);
      void exited.then(() => {
        clearTimeout(timer);
        reject(new ConnectError(`${this.name} exited (${proc.signalCode ?? proc.exitCode}); last output:\n${this.tail.join('\n')}`));
      });
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        this.keep(line);
        let o: Record<string, unknown>;
        try {
          o = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return;
        }
        const c = parseStopLine(o);
        if (c !== null) onStop(c);
        else if (o.msg === 'listening' && typeof o.url === 'string' && typeof o.metricsUrl === 'string') {
          clearTimeout(timer);
          resolve({ proc, url: o.url, metricsUrl: o.metricsUrl, stopped, exited });
        }
      });
    });
  }
}
