/** The STUN measurements: Binding requests/s against one or several server processes, and netcheck wall time. */
import { runNetcheck } from '../src/lib/netcheck/index.js';
import type { DERPMap, DERPRegion } from '../src/lib/derpmap/types.js';
import { ConnectError } from '../src/lib/errors.js';
import { betweenMarks, mergeDone, percentile, procCpuUs, sleep, spread, type Timing, type Worker } from '../src/lib/loadgen/index.js';
import type { ServerHandle } from './procs.js';

export interface StunResult {
  server: string;
  processes: number;
  sockets: number;
  window: number;
  /** Answered requests/s while measuring. */
  reqPerSec: number;
  sent: number;
  received: number;
  lossPct: number;
  p50Ms: number;
  p99Ms: number;
  serverCpuUsPerReq: number;
  /** Sum over the server processes, % of one core. */
  serverCpuPct: number;
  genCpuPct: number;
  genLoopP99Ms: number;
  errors: string[];
}

/** Loads `servers` (processes answering on one UDP `port`) from the workers; sockets are split over them. */
export async function runStun(
  label: string,
  servers: ServerHandle[],
  port: number,
  workers: Worker[],
  sockets: number,
  window: number,
  timing: Timing,
): Promise<StunResult> {
  const counts = spread(sockets, Math.min(workers.length, sockets));
  const ws = workers.slice(0, counts.length);
  await Promise.all(ws.map((w, i) => w.request({ cmd: 'stun', host: '127.0.0.1', port, sockets: counts[i]!, window }, 'ready')));
  for (const w of ws) w.send({ cmd: 'go' });
  await sleep(timing.warmupMs);
  const cpu = (): number => servers.reduce((sum, s) => sum + (s.pid ? procCpuUs(s.pid) : 0), 0);
  const cpu0 = cpu();
  const wall0 = performance.now();
  const m1 = await Promise.all(ws.map((w) => w.request({ cmd: 'mark' }, 'mark')));
  await sleep(timing.durationMs);
  const m2 = await Promise.all(ws.map((w) => w.request({ cmd: 'mark' }, 'mark')));
  const wallUs = (performance.now() - wall0) * 1000;
  const srvUs = cpu() - cpu0;
  const done = await Promise.all(ws.map((w) => w.request({ cmd: 'stop' }, 'done')));
  for (const s of servers) s.check();

  const { perSec: rate, received: answered, genCpuUs } = betweenMarks(m1, m2);
  const { hist, samples, sent, received, gaps: lost, errors } = mergeDone(done);
  return {
    server: label,
    processes: servers.length,
    sockets,
    window,
    reqPerSec: rate,
    sent,
    received,
    lossPct: sent > 0 ? (lost / sent) * 100 : 0,
    p50Ms: percentile(hist, samples, 0.5),
    p99Ms: percentile(hist, samples, 0.99),
    serverCpuUsPerReq: answered > 0 ? srvUs / answered : NaN,
    serverCpuPct: (srvUs / wallUs) * 100,
    genCpuPct: (genCpuUs / wallUs) * 100,
    genLoopP99Ms: Math.max(...done.map((d) => d.loopDelayP99Ms)),
    errors,
  };
}

export interface NetcheckBenchResult {
  regions: number;
  runs: number;
  wallP50Ms: number;
  wallMaxMs: number;
  /** Fewest regions that answered STUN in any one run. */
  minAnswered: number;
  /** Slowest region latency seen in any run. */
  maxRegionLatencyMs: number;
  preferredDERP: number;
}

/** A map of STUN-only loopback regions, one node each, on the given UDP ports. */
export function loopbackMap(ports: number[]): DERPMap {
  const regions: Record<number, DERPRegion> = {};
  ports.forEach((port, i) => {
    const id = i + 1;
    regions[id] = {
      regionId: id,
      regionCode: `lo${id}`,
      regionName: `loopback ${id}`,
      nodes: [
        {
          id: `${id}a`,
          hostname: '127.0.0.1',
          ipv4: '127.0.0.1',
          ipv6: 'none',
          stunPort: port,
          derpPort: 0,
          region: `lo${id}`,
          regionCode: id,
          canStun: true,
          canRelay: false,
          plainHttp: true,
        },
      ],
    };
  });
  return { regions };
}

/** `runs` full netchecks (IPv4 only) over STUN-only regions on `ports`; wall time per report. */
export async function runNetcheckBench(ports: number[], runs: number): Promise<NetcheckBenchResult> {
  const map = loopbackMap(ports);
  const walls: number[] = [];
  let minAnswered = Infinity;
  let maxLatency = 0;
  let preferred = 0;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = await runNetcheck(map, { ipv6: false });
    walls.push(performance.now() - t0);
    const answered = r.regions.filter((x) => x.method === 'stun').length;
    minAnswered = Math.min(minAnswered, answered);
    for (const x of r.regions) if (x.latencyMs !== null) maxLatency = Math.max(maxLatency, x.latencyMs);
    preferred = r.preferredDERP;
  }
  if (walls.length === 0) throw new ConnectError('netcheck bench: no runs');
  walls.sort((a, b) => a - b);
  return {
    regions: ports.length,
    runs,
    wallP50Ms: walls[Math.floor((walls.length - 1) / 2)]!,
    wallMaxMs: walls[walls.length - 1]!,
    minAnswered,
    maxRegionLatencyMs: maxLatency,
    preferredDERP: preferred,
  };
}
