/**
 * `derp serve` child processes meshed on loopback, for the end-to-end mesh tests: ports reserved up front
 * (every node must name the others' ports in --mesh-with), metrics scraped from /metrics, and a client
 * that moves to the region's next node when its node dies (as a Tailscale client re-dials its region).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DERPClient } from '../../src/lib/client/index.js';
import { NODE, ROOT, RUN } from '../helpers/cli.js';
import { freePort, until } from '../faults/helpers.js';

/** Exit code of `derp serve` when it cannot listen (src/commands/serve.ts). */
const EXIT_LISTEN = 3;

export interface MeshProc {
  proc: ChildProcess;
  port: number;
  url: string;
  publicKey: string;
  metricsUrl: string;
  /** Everything the process wrote so far (with --json the logs go to stdout). */
  output: () => string;
  exit: Promise<number | null>;
}

export class ListenError extends Error {}

/** Starts `derp serve --json <args>` and resolves on its listening line; ListenError when it exits 3. */
export async function startServe(args: string[]): Promise<MeshProc> {
  const proc = spawn(NODE, [RUN, 'serve', '--json', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exit = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  const line = await new Promise<string>((res, rej) => {
    const onData = (): void => {
      const m = /^\{[^\n]*"msg":"listening"[^\n]*\}$/m.exec(out);
      if (m) {
        proc.stdout!.off('data', onData);
        res(m[0]);
      }
    };
    proc.stdout!.on('data', onData);
    void exit.then((code) => rej(code === EXIT_LISTEN ? new ListenError(out) : new Error(`derp serve exited ${code} before listening: ${out}`)));
  });
  const l = JSON.parse(line) as { url: string; publicKey: string; metricsUrl: string };
  return { proc, port: Number(new URL(l.url).port), url: l.url, publicKey: l.publicKey, metricsUrl: l.metricsUrl, output: () => out, exit };
}

/** Kills a child (if alive) and waits for it. */
export async function kill(p: MeshProc, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill(signal);
  await p.exit;
}

/** A mesh key file, mode 0600, in a fresh temp dir; `dir` is removed by the caller. */
export async function meshKeyFile(): Promise<{ dir: string; file: string; hex: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'derp-mesh-e2e-'));
  const hex = randomBytes(32).toString('hex');
  const file = join(dir, 'mesh.key');
  await writeFile(file, `${hex}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  return { dir, file, hex };
}

export const removeDir = (dir: string): Promise<void> => rm(dir, { recursive: true, force: true });

/** The serve flags of node `i` of a region on `ports` (each meshed with every other by list). */
export function nodeArgs(ports: readonly number[], i: number, keyFile: string, extra: string[] = []): string[] {
  const others = ports.filter((_, j) => j !== i).map((p) => `127.0.0.1:${p}`);
  const mesh = others.length === 0 ? [] : ['--mesh-with', others.join(',')];
  return ['--dev', '--addr', `127.0.0.1:${ports[i]}`, '--no-stun', '--metrics-addr', '127.0.0.1:0', ...mesh, '--mesh-psk-file', keyFile, ...extra];
}

/**
 * Starts `n` nodes meshed by list. The ports are reserved by binding and closing, so another process may
 * take one in between: then every node is stopped and the region is started again on fresh ports.
 */
export async function startRegion(n: number, keyFile: string | readonly string[], attempts = 4): Promise<{ ports: number[]; nodes: MeshProc[] }> {
  const keyOf = (i: number): string => (typeof keyFile === 'string' ? keyFile : keyFile[i]!);
  for (let attempt = 1; ; attempt++) {
    const ports: number[] = [];
    while (ports.length < n) {
      const p = await freePort();
      if (!ports.includes(p)) ports.push(p);
    }
    const started = await Promise.allSettled(ports.map((_, i) => startServe(nodeArgs(ports, i, keyOf(i)))));
    const nodes = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = started.flatMap((s) => (s.status === 'rejected' ? [s.reason as Error] : []));
    if (failed.length === 0) return { ports, nodes };
    await Promise.all(nodes.map((p) => kill(p)));
    if (!failed.every((e) => e instanceof ListenError) || attempt >= attempts) throw failed[0]!;
  }
}

/** Restarts a node on its old port (retrying while the port is still held, e.g. in TIME_WAIT by a listener). */
export async function restartOn(args: string[], attempts = 20): Promise<MeshProc> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServe(args);
    } catch (err) {
      if (!(err instanceof ListenError) || attempt >= attempts) throw err;
    }
  }
}

/** One sample of a Prometheus text exposition: `name{labels}` → value; NaN when absent. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? '').matchAll(/([a-zA-Z_]+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return Number.NaN;
}

export async function scrape(p: MeshProc): Promise<string> {
  const res = await fetch(p.metricsUrl);
  return res.text();
}

export async function metric(p: MeshProc, name: string, labels: Record<string, string> = {}): Promise<number> {
  return sample(await scrape(p), name, labels);
}

/** Waits until node `p` has every link in `peers` (ports) up. */
export async function linksUp(p: MeshProc, peers: readonly number[], ms = 10_000): Promise<void> {
  await until(async () => {
    const text = await scrape(p);
    return peers.every((port) => sample(text, 'derp_mesh_peer_up', { peer: `127.0.0.1:${port}` }) === 1);
  }, ms, `node :${p.port} links up to ${peers.join(',')}`);
}

export const STREAM_TAG = Buffer.from('SEQ:');
export const STREAM_PACKET_LEN = 64;

/** A stream packet carrying `seq`. */
export function streamPacket(seq: number): Buffer {
  const b = Buffer.alloc(STREAM_PACKET_LEN);
  STREAM_TAG.copy(b);
  b.writeUInt32BE(seq, STREAM_TAG.length);
  return b;
}

/**
 * One client of the region: a DERPClient given the region's URLs (its node first), which reconnects to
 * the next one when its node dies. Stream packets are counted apart from everything else received.
 */
export class RegionMember {
  readonly client: DERPClient;
  readonly received: Buffer[] = [];
  /** Sequence numbers of stream packets (STREAM_TAG + u32), in arrival order. */
  readonly seqs: number[] = [];
  /** The URL of each connection it made, in order. */
  readonly history: string[] = [];
  private pump: Promise<void> | null = null;

  constructor(private readonly urls: readonly string[]) {
    this.client = new DERPClient({ reconnect: { baseMs: 20, maxMs: 200 }, connectTimeoutMs: 2_000 });
    this.client.on('connected', (e) => this.history.push(e.url));
  }

  get publicKey(): Buffer {
    return this.client.publicKey;
  }

  get url(): string | undefined {
    return this.history.at(-1);
  }

  get connected(): boolean {
    return this.client.connected;
  }

  async start(): Promise<void> {
    await this.client.connect(this.urls);
    this.pump = (async () => {
      for await (const p of this.client.receive()) {
        if (p.data.length === STREAM_PACKET_LEN && p.data.subarray(0, STREAM_TAG.length).equals(STREAM_TAG)) this.seqs.push(p.data.readUInt32BE(STREAM_TAG.length));
        else this.received.push(Buffer.from(p.data));
      }
    })();
  }

  /** Sends now; while reconnecting nothing is sent (the caller's window or probes decide what to resend). */
  async send(dst: Buffer, data: Buffer): Promise<void> {
    if (this.client.connected) await this.client.send(dst, data);
  }

  async close(): Promise<void> {
    await this.client.disconnect();
    await this.pump;
  }
}

/** Sends a probe every 10 ms until `to` got one: the route from→to exists (the mesh may still be learning). */
export async function reach(from: RegionMember, to: RegionMember, tag: string): Promise<void> {
  const mark = `probe ${tag} `;
  let n = 0;
  await until(async () => {
    await from.send(to.publicKey, Buffer.from(`${mark}${n++}`));
    return to.received.some((b) => b.toString().startsWith(mark));
  }, 10_000, `a packet ${tag}`);
}
