/** A slice of the live fuzzer (fuzz/) against a real `derp serve --dev`: fixed seed, bounded cases and time. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HELD_BOUND_MIB, runFuzz, type FuzzReport } from '../../fuzz/run.js';
import { startRelay, type RelayProcess } from '../../fuzz/server.js';

let relay: RelayProcess;
let report: FuzzReport;

beforeAll(async () => {
  relay = await startRelay({ inspect: true });
  report = await runFuzz(relay, { cases: 3000, seconds: 8, seed: 9, concurrency: 32, auditEvery: 150, canaryRate: 100 });
}, 60_000);

afterAll(async () => {
  await relay?.stop();
});

describe('live fuzzing (slice)', () => {
  it('ran every family and found nothing', () => {
    expect(report.cases).toBeGreaterThan(0);
    for (const f of Object.values(report.byFamily)) expect(f.cases).toBeGreaterThan(0);
    expect(report.audits).toBeGreaterThan(0);
    expect(report.findings).toEqual([]);
  });

  it('left the relay\'s RSS near its baseline once garbage is collected (a full GC over its inspector), holding no more than the bounded caches', () => {
    expect(report.memory.afterGc).not.toBeNull();
    expect(report.memory.heldMiB).not.toBeNull();
    expect(report.memory.heldMiB!, JSON.stringify(report.memory)).toBeLessThanOrEqual(HELD_BOUND_MIB);
    expect(report.memory.nearBaseline, JSON.stringify(report.memory)).toBe(true);
  });

  it('kept the canary relaying without loss, and the relay alive', () => {
    expect(report.canary.sent).toBeGreaterThan(0);
    expect(report.canary.lost).toBe(0);
    expect(report.canary.misordered).toBe(0);
    expect(report.canary.disconnects).toBe(0);
    expect(report.alive).toBe(true);
    expect(relay.exited()).toBeNull();
  });

  it('closed every offender with a counted reason', () => {
    const a = report.accounting!;
    expect(a.connections).toBeGreaterThan(0);
    expect(a.traces).toBeGreaterThanOrEqual(a.connections);
    expect(a.reasons).toBeGreaterThanOrEqual(a.closedByRelay);
    expect(a.stunCounted + a.udpKernelDrops).toBeGreaterThanOrEqual(a.stunSent);
  });
});
