// The shared scenarios driven from source: the workers fork src/lib/loadgen/worker.ts under tsx, as
// `npm run bench` does (the built CLI's dist/ path is covered by test/commands/bench.test.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WORKER_ENTRY, Worker, runHandshakes, runIdle, runThroughput, type LoadTarget } from '../../src/lib/loadgen/index.js';
import { startRelay, type Fixture } from '../server/fixture.js';

describe('loadgen scenarios (workers from source)', () => {
  let relay: Fixture;
  let workers: Worker[];
  let target: LoadTarget;

  beforeAll(async () => {
    relay = await startRelay();
    workers = [new Worker(0), new Worker(1)];
    target = { url: relay.server.url, label: 'relay', check: () => undefined };
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await relay.close();
  });

  it('resolves the worker entry beside the module', () => {
    expect(WORKER_ENTRY).toMatch(/src\/lib\/loadgen\/worker\.ts$/);
  });

  it('throughput at a low rate delivers every packet and reports progress', async () => {
    const seen: number[] = [];
    const r = await runThroughput(target, workers, 2, 100, { warmupMs: 0, durationMs: 1200 }, 200, { onProgress: (p) => seen.push(p.sent) });
    expect(r.sent).toBeGreaterThan(0);
    expect(r.received).toBe(r.sent);
    expect(r.gaps).toBe(0);
    expect(r.errors).toEqual([]);
    expect(r.maxMs).toBeGreaterThanOrEqual(r.p99Ms);
    expect(r.genCpuUsPerPkt).not.toBeNull();
    expect(r.workers).toBe(2);
    expect(seen.length).toBeGreaterThan(0);
  });

  it('idle opens and closes the clients; no pid, no RSS', async () => {
    const r = await runIdle(target, workers, 'tcp', 10);
    expect(r.opened).toBe(10);
    expect(r.failed).toBe(0);
    expect(Number.isNaN(r.rssBeforeKiB)).toBe(true);
    // The server saw them and, after the close, lets them go (bounded poll).
    const deadline = Date.now() + 5000;
    while (relay.server.stats().currentConnections > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    expect(relay.server.stats().currentConnections).toBe(0);
  });

  it('handshakes stop at maxCount', async () => {
    const r = await runHandshakes(target, workers, 8, 5000, 12);
    expect(r.count + r.failed).toBe(12);
    expect(r.count).toBeGreaterThan(0);
  });
});

describe('loadgen flood attacks (workers from source)', () => {
  let relay: Fixture;
  let worker: Worker;

  beforeAll(async () => {
    relay = await startRelay({ handshakeTimeoutMs: 300 });
    worker = new Worker(0);
  });
  afterAll(async () => {
    await worker.stop();
    await relay.close();
  });

  it('slowloris counts the connections the relay closed at its handshake deadline', async () => {
    worker.send({ cmd: 'attack', kind: 'slowloris', url: relay.server.url, durationMs: 1500, count: 3 });
    await worker.next('attack-started');
    const r = await worker.next('attack');
    expect(r.count).toBe(3);
    // 300 ms deadline, 1.5 s attack: the relay closed every one, and the report must say so.
    expect(r.detail).toContain('3 closed by the relay, 0 still open at the end');
  });
});
