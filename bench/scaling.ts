/**
 * The `workers` part of `npm run bench`: the same throughput scenario and handshake load against
 * `derp serve --workers 1` and `--workers N` (N = the CPU count, at least 2), and once more with one
 * worker pinned to the last core and the generator to the others (`taskset`), which is what the
 * single-worker CPU cost per packet predicts a bigger host from. Server CPU sums every worker.
 */
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { runHandshakes, runThroughput, type HandshakeResult, type ThroughputResult, type Worker } from '../src/lib/loadgen/index.js';
import { relayArgs, startServer, type ServerHandle } from './procs.js';

export interface ScalingRow {
  workers: number;
  /** "relay on core 1, generator on core 0" when pinned with taskset. */
  pinned: string | null;
  throughput: ThroughputResult;
  handshakes: HandshakeResult;
}

export interface ScalingOptions {
  pairs: number;
  size: number;
  timing: { warmupMs: number; durationMs: number };
  handshakeConcurrency: number;
}

function taskset(cpuList: string, pid: number): boolean {
  return spawnSync('taskset', ['-a', '-pc', cpuList, String(pid)], { stdio: 'ignore' }).status === 0;
}

export async function runScaling(gen: Worker[], o: ScalingOptions, progress: (m: string) => void, notes: string[]): Promise<ScalingRow[]> {
  const n = Math.max(2, cpus().length);
  const last = cpus().length - 1;
  const rows: ScalingRow[] = [];
  const runs: { workers: number; pin: boolean }[] = [{ workers: 1, pin: false }, { workers: n, pin: false }];
  if (last >= 1) runs.push({ workers: 1, pin: true });
  for (const r of runs) {
    progress(`scaling: derp serve --workers ${r.workers}${r.pin ? ' pinned (taskset)' : ''}`);
    const s: ServerHandle = await startServer(`derp serve --workers ${r.workers}`, relayArgs(['--workers', String(r.workers), '--metrics-addr', 'none']));
    let pinned: string | null = null;
    try {
      if (r.pin) {
        const rest = last === 1 ? '0' : `0-${last - 1}`;
        const ok = [s.pid!, ...(s.workerPids ?? [])].every((p) => taskset(String(last), p)) && gen.every((w) => w.pid === undefined || taskset(rest, w.pid));
        if (ok) pinned = `relay on core ${last}, generator on core(s) ${rest}`;
        else notes.push('scaling: taskset failed; the pinned row ran unpinned');
      }
      const throughput = await runThroughput(s, gen, o.pairs, o.size, o.timing);
      const handshakes = await runHandshakes(s, gen, o.handshakeConcurrency, o.timing.durationMs);
      rows.push({ workers: r.workers, pinned, throughput, handshakes });
    } finally {
      // The generator goes back to every core.
      if (pinned !== null) for (const w of gen) if (w.pid !== undefined) taskset(`0-${last}`, w.pid);
      await s.stop();
    }
  }
  return rows;
}
