// `derp connect --map` end to end: two CLI processes over a map file of two loopback relays, with failover.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { toSeedJson } from '../../src/lib/derpmap/index.js';
import { writeKeyFile } from '../../src/lib/keys/keyfile.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { startRegions } from '../select/helpers.js';
import { flatCliText } from '../helpers/cli.js';

const ROOT = resolve(import.meta.dirname, '../..');
const NODE = join(ROOT, 'node_modules/.bin/node');

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Ev = Record<string, unknown>;

/** A spawned `derp connect --json`; waits on its JSON events. */
class Proc {
  readonly events: Ev[] = [];
  readonly err: string[] = [];
  private waiters: { pred: (e: Ev) => boolean; resolve: (e: Ev) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcessWithoutNullStreams) {
    createInterface({ input: child.stdout }).on('line', (l) => {
      if (!l.startsWith('{')) return;
      const e = JSON.parse(l) as Ev;
      this.events.push(e);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(e)) return true;
        w.resolve(e);
        return false;
      });
    });
    createInterface({ input: child.stderr }).on('line', (l) => this.err.push(l));
    this.exited = once(child, 'exit').then(([code]) => code as number | null);
  }

  wait(pred: (e: Ev) => boolean): Promise<Ev> {
    const found = this.events.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((r) => this.waiters.push({ pred, resolve: r }));
  }

  /** Resolves once `n` distinct regions are up (counting downs). */
  async regionsUp(ids: number[]): Promise<void> {
    const up = new Set<number>();
    await this.wait((e) => {
      if (e.event === 'regionUp') up.add(e.regionId as number);
      if (e.event === 'regionDown') up.delete(e.regionId as number);
      return ids.every((id) => up.has(id));
    });
  }
}

function connect(args: string[]): Proc {
  const child = spawn(NODE, ['bin/run.js', 'connect', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  const p = new Proc(child);
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await p.exited;
    }
  });
  return p;
}

describe('derp connect --map', () => {
  it('delivers between two CLIs over two loopback regions and fails over when a relay stops', async () => {
    const regions = await startRegions(2);
    cleanups.push(() => regions.stop());
    const dir = await mkdtemp(join(tmpdir(), 'derp-connect-map-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'map.json');
    await writeFile(file, JSON.stringify(toSeedJson(regions.map)));
    const a = NodePrivateKey.generate();
    const b = NodePrivateKey.generate();
    await Promise.all([writeKeyFile(join(dir, 'a.key'), a), writeKeyFile(join(dir, 'b.key'), b)]);

    const pb = connect([a.publicText(), '--map', file, '--key-file', join(dir, 'b.key'), '--json']);
    const pa = connect([b.publicText(), '--map', file, '--key-file', join(dir, 'a.key'), '--json', '--hex']);
    expect(await pa.wait((e) => e.event === 'key')).toEqual({ schema: 'derp.connect/v1', event: 'key', publicKey: a.publicText() });
    await Promise.all([pa.regionsUp([1, 2]), pb.regionsUp([1, 2])]);

    pa.child.stdin.write('6869\n');
    expect(await pb.wait((e) => e.event === 'packet')).toMatchObject({ from: a.publicText(), data: 'aGk=', len: 2 });

    // Stop whichever relay is A's home; both sides move to the other one.
    const home = (await pa.wait((e) => e.event === 'homeChanged')).to as number;
    const other = home === 1 ? 2 : 1;
    await regions.servers[home - 1]!.stop({ restarting: false });
    await Promise.all([pa.wait((e) => e.event === 'regionDown' && e.regionId === home), pb.wait((e) => e.event === 'regionDown' && e.regionId === home)]);
    pa.child.stdin.write('6166746572\n');
    expect(await pb.wait((e) => e.event === 'packet' && e.len === 5)).toMatchObject({ data: 'YWZ0ZXI=', regionId: other });
    expect(pa.events.some((e) => e.event === 'homeChanged' && e.to === other)).toBe(true);
    pa.child.stdin.end();
    expect(await pa.exited).toBe(0);
    pb.child.kill('SIGTERM');
    expect(await pb.exited).toBe(0);
  });

  it('needs exactly one of --server and --map (exit 2); exits 8 when no region answers', async () => {
    const peer = NodePrivateKey.generate().publicText();
    const both = connect([peer, '--server', 'http://127.0.0.1:1/derp', '--map', 'x.json']);
    expect(await both.exited).toBe(2);
    const none = connect([peer]);
    expect(await none.exited).toBe(2);
    const regions = await startRegions(1);
    await regions.stop();
    const dir = await mkdtemp(join(tmpdir(), 'derp-connect-map-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'map.json');
    await writeFile(file, JSON.stringify(toSeedJson(regions.map)));
    const dead = connect([peer, '--map', file]);
    expect(await dead.exited).toBe(8);
    expect(flatCliText(dead.err)).toMatch(/no region could be connected|no healthy/);
  });
});
