// The flood stage's pure parts (bench/flood.ts, bench/report.ts): the verdict across --flood-rounds.
import { describe, expect, it } from 'vitest';
import { acrossRounds, median, type FloodPhase, type FloodResult } from '../../bench/flood.js';
import { parseOptions } from '../../bench/options.js';
import { emptyReport, render, type BenchReport } from '../../bench/report.js';
import type { AttackKind } from '../../src/lib/loadgen/index.js';

function phase(kind: AttackKind | 'quiet', p99: number, over: Partial<FloodPhase> = {}): FloodPhase {
  return {
    phase: kind === 'quiet' ? 'quiet (canary alone)' : `the ${kind} attack`,
    kind,
    attack: null,
    canarySent: 10_000,
    canaryReceived: 10_000,
    canaryLost: 0,
    canaryP50Ms: 0.1,
    canaryP99Ms: p99,
    canaryErrors: [],
    rssBeforeKiB: 120 * 1024,
    rssPeakKiB: 130 * 1024,
    rssAfterKiB: 121 * 1024,
    settleMs: 0,
    heapAfterKiB: null,
    alive: true,
    probe: null,
    relayLoopCpuMs: 300,
    relayLoopWaitMs: 200,
    ...over,
  };
}

/** One round: a quiet p99 and, per attack, the canary's p99. */
function round(quiet: number, attacks: [AttackKind, number, Partial<FloodPhase>?][]): FloodResult {
  return {
    server: 'derp serve (flood)',
    phaseMs: 5000,
    canaryRate: 2000,
    canarySize: 256,
    quietP99Ms: quiet,
    startRssKiB: 120 * 1024,
    baselineRssKiB: 121 * 1024,
    finalRssKiB: 128 * 1024,
    finalSettleMs: 0,
    finalTrimmedRssKiB: null,
    baselineHeapKiB: null,
    finalHeapKiB: null,
    canaryUndelivered: 0,
    phases: [phase('quiet', quiet), ...attacks.map(([k, p99, over]) => phase(k, p99, over))],
    serverArgs: [],
    placement: { mode: 'split', relayCpus: '0', attackerCpus: '1' },
    decoy: false,
    warmup: { ms: 3000, handshakes: 812 },
  };
}

/** An empty bench report for the rendering tests. */
function emptyBench(command: string): BenchReport {
  return emptyReport({
    command,
    date: '2026-12-03T10:00:00.000Z',
    machine: { cpus: 2, cpuModel: 'test', node: 'v24.21.0' },
    settings: { warmupMs: 0, durationMs: 0, window: 32, workers: 1, quick: false, url: null, compareUrl: null, stunSockets: 0, stunWindow: 0 },
  });
}

describe('median', () => {
  it('takes the middle value, or the mean of the two middle ones, whatever the order', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(median([])).toBeNaN();
  });
});

describe('the flood across rounds', () => {
  it('judges each attack on the median of its rounds\' ratios, each against its own round\'s quiet p99', () => {
    const rounds = [
      round(0.5, [['connect', 0.6], ['handshake', 2.0]]),
      round(1.0, [['connect', 3.0], ['handshake', 5.0, { canaryLost: 2 }]]),
      round(0.4, [['connect', 0.6], ['handshake', 2.8, { alive: false }]]),
    ];
    const a = acrossRounds(rounds);
    // The bench's order, not the rounds' insertion order; attacks no round ran are left out.
    expect(a.map((x) => x.kind)).toEqual(['connect', 'handshake']);
    expect(a[0]!.ratios.map((x) => +x.toFixed(2))).toEqual([1.2, 3, 1.5]);
    expect(a[0]!.median).toBeCloseTo(1.5);
    expect(a[1]!.ratios.map((x) => +x.toFixed(2))).toEqual([4, 5, 7]);
    expect(a[1]!.median).toBeCloseTo(5);
    expect(a[1]!.lost).toBe(2);
    expect(a[1]!.deadRounds).toBe(1);
  });

  it('prints every round and the verdict on the median only when there was more than one round', () => {
    const report = emptyBench('npm run bench -- --flood-rounds 3');
    report.flood = round(0.5, [['connect', 0.6], ['handshake', 2.0]]);
    expect(render(report)).not.toContain('flood over');
    report.floodRounds = [round(1.0, [['connect', 3.0], ['handshake', 5.0]]), round(0.4, [['connect', 0.6], ['handshake', 2.8]])];
    const text = render(report);
    expect(text).toContain('flood over 3 rounds');
    expect(text).toMatch(/quiet p99 ms\s*│\s*0\.50\s+1\.00\s+0\.40\s*│\s*0\.50/);
    expect(text).toMatch(/connection flood from one IP\s*│\s*1\.2×\s+3\.0×\s+1\.5×\s*│\s*1\.5×\s*│\s*PASS/);
    expect(text).toMatch(/handshake flood, throwaway keys\s*│\s*4\.0×\s+5\.0×\s+7\.0×\s*│\s*5\.0×\s*│\s*MISS/);
    expect(text).toContain('relay RSS quiet → end (MiB): 121 → 128 PASS, 121 → 128 PASS, 121 → 128 PASS');
  });

  it('says when the attacks went to a decoy (--flood-decoy), which needs a relay the bench starts', () => {
    const report = emptyBench('npm run bench -- --flood-decoy');
    report.flood = round(0.5, [['handshake', 0.4]]);
    expect(render(report)).not.toContain('flood decoy');
    report.flood = { ...round(0.5, [['handshake', 0.4]]), decoy: true };
    expect(render(report)).toContain('flood decoy (a control): the attacks went to a second relay');
    expect(parseOptions(['--flood-decoy']).floodDecoy).toBe(true);
    expect(parseOptions([]).floodDecoy).toBe(false);
    expect(() => parseOptions(['--flood-decoy', '--url', 'http://127.0.0.1:1/derp'])).toThrow(/--flood-decoy needs a relay the bench starts/);
  });

  it('says whether the relay was warmed before the canary (--flood-warmup), bounded like the phases', () => {
    const report = emptyBench('npm run bench');
    report.flood = round(0.5, [['handshake', 0.4]]);
    expect(render(report)).toContain('flood warm-up: 812 handshakes in 3.0 s before the canary started');
    report.flood = { ...round(0.5, [['handshake', 0.4]]), warmup: null };
    expect(render(report)).toContain('flood warm-up: none (--flood-warmup 0)');
    expect(parseOptions([]).floodWarmupSeconds).toBe(0);
    expect(parseOptions(['--quick']).floodWarmupSeconds).toBe(0);
    expect(parseOptions(['--flood-warmup', '3']).floodWarmupSeconds).toBe(3);
    expect(() => parseOptions(['--flood-warmup', '61'])).toThrow(/--flood-warmup must be at most 60 seconds, got 61/);
    expect(() => parseOptions(['--flood-warmup', 'soon'])).toThrow(/--flood-warmup/);
  });
});
