/**
 * A `derp serve` child process as an AccountingNode: restarted with SIGTERM on the same ports, its
 * counters read from /metrics while it runs and from its final "relay stopped" line when a life ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ConnectError, TimeoutError } from '../../errors.js';
import { parseMetricsCounts, parseStopLine, type RelayCounts } from './counts.js';
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
  private readonly tail: string[] = [];

  private constructor(private readonly o: ServeOptions) {}

  get name(): string {
    return this.o.name;
  }

  static async start(o: ServeOptions): Promise<ServeNode> {
    const n = new ServeNode(o);
    n.life = await n.spawnLife('127.0.0.1:0', '127.0.0.1:0');
    return n;
  }

  url(): string {
    return this.current().url;
  }

  get pid(): number | undefined {
    return this.life?.proc.pid;
  }

  async scrape(): Promise<RelayCounts> {
    const res = await fetch(this.current().metricsUrl);
    if (!res.ok) throw new ConnectError(`${this.name}: GET /metrics answered ${res.status}`);
    return parseMetricsCounts(await res.text());
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
    const args = [this.o.entry, 'serve', '--dev', '--json', '--addr', addr, '--metrics-addr', metricsAddr, '--drain-seconds', '0', ...(this.o.args ?? [])];
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
