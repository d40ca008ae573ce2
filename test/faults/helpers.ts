/** Shared by the fault-injection tests: `derp serve` as a child process, sequence-numbered streams, a canary pair. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DERPClient, type DERPClientOptions } from '../../src/lib/client/index.js';
import { NODE, ROOT, RUN } from '../helpers/cli.js';

const execFileP = promisify(execFile);

/** The child relays, clients and temp dir one test file starts; cleanup() (its afterAll) ends them all. */
export class FaultScene {
  readonly procs: Serve[] = [];
  readonly clients: DERPClient[] = [];
  private dir = '';

  async tempDir(prefix: string): Promise<string> {
    this.dir = await mkdtemp(join(tmpdir(), prefix));
    return this.dir;
  }

  async cleanup(): Promise<void> {
    for (const c of this.clients) await c.disconnect();
    for (const p of this.procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
    await Promise.all(this.procs.map((p) => p.exit));
    if (this.dir !== '') await rm(this.dir, { recursive: true, force: true });
  }
}

export interface Serve {
  proc: ChildProcess;
  port: number;
  url: string;
  metricsUrl: string | null;
  stderr: () => string;
  exit: Promise<number | null>;
}

/**
 * Starts `derp serve <args> --json` and resolves on its listening line (rejects if it exits first). One
 * process unless `args` says otherwise: these are the single relay's faults (workers: test/node/workers.test.ts).
 */
export async function serve(args: string[]): Promise<Serve> {
  const workers = args.includes('--workers') ? [] : ['--workers', '1'];
  const proc = spawn(NODE, [RUN, 'serve', '--json', ...workers, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  const line = await new Promise<string>((res, rej) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) res(out.slice(0, nl));
    });
    void exit.then((code) => rej(new Error(`derp serve exited ${code} before listening: ${err}`)));
  });
  const l = JSON.parse(line) as { url: string; metricsUrl: string | null };
  return { proc, port: Number(new URL(l.url).port), url: l.url, metricsUrl: l.metricsUrl, stderr: () => err, exit };
}

/** A loopback TCP port that was free a moment ago (for restarting a relay on the same port). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Polls `cond` every 10 ms until true, failing after `ms` with `what`. */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const FAST_RECONNECT: DERPClientOptions = { reconnect: { baseMs: 20, maxMs: 200 } };

export async function connectClient(url: string, opts: DERPClientOptions = {}): Promise<DERPClient> {
  const c = new DERPClient({ ...FAST_RECONNECT, ...opts });
  await c.connect(url);
  return c;
}

/** What b received from a: sequence numbers in arrival order. */
export class Receiver {
  readonly seqs: number[] = [];
  private readonly done: Promise<void>;
  constructor(private readonly c: DERPClient) {
    this.done = (async () => {
      for await (const p of c.receive()) this.seqs.push(p.data.readUInt32BE(0));
    })();
  }
  has(seq: number): boolean {
    return this.seqs.includes(seq);
  }
  /** Strictly increasing: nothing duplicated, nothing reordered. */
  inOrder(): boolean {
    for (let i = 1; i < this.seqs.length; i++) if (this.seqs[i]! <= this.seqs[i - 1]!) return false;
    return true;
  }
  async end(): Promise<void> {
    await this.c.disconnect();
    await this.done;
  }
}

export function packet(seq: number, size = 200): Buffer {
  const b = Buffer.alloc(size, seq & 0xff);
  b.writeUInt32BE(seq, 0);
  return b;
}

/** One round trip a → b → a through the relay: the canary is relaying. */
export async function canaryRoundTrip(a: DERPClient, b: DERPClient, tag: string): Promise<void> {
  const ia = a.receive();
  const ib = b.receive();
  await a.send(b.publicKey, Buffer.from(`ping ${tag}`));
  const got = await ib.next();
  await b.send(a.publicKey, Buffer.from(`pong ${String(got.value?.data)}`));
  const back = await ia.next();
  await ia.return?.();
  await ib.return?.();
  if (String(back.value?.data) !== `pong ping ${tag}`) throw new Error(`canary ${tag}: got ${String(back.value?.data)}`);
}

export interface TinyDisk {
  dir: string;
  /** Fills the disk, leaving `pages` 4 KiB pages free (tmpfs charges every file whole pages). */
  fill(pages?: number): Promise<void>;
  /** Removes the filler again. */
  unfill(): Promise<void>;
  /** Unmounts and removes the mount point (idempotent). */
  close(): Promise<void>;
}

const PAGE = 4096;

/** A real small filesystem: tmpfs of `kib` KiB mounted on a fresh temp dir (needs root, as on CI). */
export async function tinyDisk(kib: number): Promise<TinyDisk> {
  const dir = await mkdtemp(join(tmpdir(), 'derp-enospc-'));
  await execFileP('mount', ['-t', 'tmpfs', '-o', `size=${kib}k,mode=0755`, 'tmpfs', dir]);
  const filler = join(dir, '.filler');
  let closed = false;
  return {
    dir,
    async fill(pages = 0) {
      await rm(filler, { force: true });
      const st = await statfs(dir);
      const free = st.bavail * st.bsize - pages * PAGE;
      if (free > 0) await writeFile(filler, Buffer.alloc(free));
    },
    unfill: () => rm(filler, { force: true }),
    async close() {
      if (closed) return;
      closed = true;
      await execFileP('umount', [dir]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
