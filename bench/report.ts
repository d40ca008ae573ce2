/** The bench's output: one JSON document, or readable tables with references, targets and PASS/MISS. */
import Table from 'cli-table3';
import { NETCHECK_REGIONS, REFERENCE, STUN_REFERENCE, STUN_TARGET_REQ_PER_SEC, TARGETS, THROUGHPUT_SCENARIOS } from './reference.js';
import type { HandshakeResult, IdleResult, ThroughputResult } from './scenarios.js';
import type { NetcheckBenchResult, StunResult } from './stun.js';
import { METRICS_MAX_COST_PCT, SCRAPE_INTERVAL_MS, type MetricsCostResult } from './metrics.js';

export interface BenchReport {
  command: string;
  date: string;
  machine: { cpus: number; cpuModel: string; node: string };
  settings: {
    warmupMs: number;
    durationMs: number;
    window: number;
    workers: number;
    quick: boolean;
    url: string | null;
    stunSockets: number;
    stunWindow: number;
  };
  throughput: ThroughputResult[];
  baseline: ThroughputResult[];
  halfLoad: ThroughputResult | null;
  idle: IdleResult[];
  handshakes: HandshakeResult | null;
  /** Our STUN server: one process (derp serve), then N processes sharing the port (reusePort). */
  stun: StunResult[];
  /** The bare dgram responder under the same load. */
  stunBaseline: StunResult | null;
  netcheck: NetcheckBenchResult | null;
  /** Throughput with metrics off and on (scraped every second), alternating rounds. */
  metricsCost: MetricsCostResult[];
  notes: string[];
}

function int(n: number | null | undefined): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '—' : Math.round(n).toLocaleString('en-US');
}

function fix(n: number | null | undefined, digits: number): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(digits);
}

function verdict(ok: boolean | null): string {
  return ok === null ? '—' : ok ? 'PASS' : 'MISS';
}

function kib(bytes: number): string {
  return Number.isFinite(bytes) ? `${(bytes / 1024).toFixed(1)} KiB` : '—';
}

export function render(r: BenchReport): string {
  const out: string[] = [];
  const s = r.settings;
  out.push('');
  out.push(`derp relay benchmark — ${r.date}`);
  out.push(`machine: ${r.machine.cpus} × ${r.machine.cpuModel}, Node ${r.machine.node}`);
  out.push(`command: ${r.command}`);
  out.push(
    `throughput: window ${s.window} in-flight packets per pair, ${s.warmupMs / 1000} s warm-up then ${s.durationMs / 1000} s measured, ` +
      `generator in ${s.workers} worker process(es); CPU % = share of one core${s.url ? `; target ${s.url}` : ''}`,
  );

  if (r.throughput.length > 0) {
    const t = new Table({
      head: ['pairs × size', 'pkts/s', 'Mbit/s', 'drop %', 'p50 ms', 'p99 ms', 'srv µs/pkt', 'srv CPU %', 'gen CPU %', 'gen lag p99', 'baseline pkts/s', 'relay/baseline', 'Go derper', 'target'],
      colAligns: ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'left'],
      style: { head: [], border: [] },
    });
    for (const x of r.throughput) {
      const b = r.baseline.find((y) => y.pairs === x.pairs && y.size === x.size);
      const sc = THROUGHPUT_SCENARIOS.find((y) => y.pairs === x.pairs && y.size === x.size);
      t.push([
        `${x.pairs} × ${x.size} B`,
        int(x.pps),
        fix(x.mbps, 0),
        fix(x.dropPct, 3),
        fix(x.p50Ms, 2),
        fix(x.p99Ms, 2),
        fix(x.serverCpuUsPerPkt, 2),
        fix(x.serverCpuPct, 0),
        fix(x.genCpuPct, 0),
        `${fix(x.genLoopP99Ms, 1)} ms`,
        b ? `${int(b.pps)} (gen ${fix(b.genCpuPct, 0)}%)` : '—',
        b && b.pps > 0 ? `${fix(x.pps / b.pps, 2)}×` : '—',
        sc?.reference !== undefined ? int(sc.reference) : '—',
        sc?.target ? `≥ ${int(sc.target)} ${verdict(x.pps >= sc.target)}` : '',
      ]);
    }
    out.push(t.toString());
  }

  if (r.metricsCost.length > 0) {
    const t = new Table({
      head: ['metrics cost', 'off pkts/s (rounds)', `on, scraped every ${SCRAPE_INTERVAL_MS / 1000} s`, 'cost (best vs best)', 'srv µs/pkt off / on', 'CPU cost', 'scrapes', 'target'],
      colAligns: ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'left'],
      style: { head: [], border: [] },
    });
    for (const x of r.metricsCost) {
      t.push([
        `${x.pairs} × ${x.size} B`,
        x.offPps.map(int).join(' / '),
        x.onPps.map(int).join(' / '),
        `${fix(x.costPct, 1)} %`,
        `${x.offCpuUsPerPkt.map((v) => fix(v, 2)).join(' / ')} | ${x.onCpuUsPerPkt.map((v) => fix(v, 2)).join(' / ')}`,
        `${fix(x.cpuCostPct, 1)} %`,
        `${x.scrapes} (${int(x.scrapeBytes)} B)${x.scrapeErrors.length > 0 ? ` errors: ${x.scrapeErrors.join('; ')}` : ''}`,
        `≤ ${METRICS_MAX_COST_PCT} % ${verdict(Number.isFinite(x.costPct) ? x.costPct <= METRICS_MAX_COST_PCT : null)}`,
      ]);
    }
    out.push(t.toString());
  }

  const m = new Table({
    head: ['measurement', 'ours', 'Go derper', 'target'],
    colAligns: ['left', 'left', 'left', 'left'],
    style: { head: [], border: [] },
  });
  const h = r.halfLoad;
  if (h) {
    m.push([
      `latency at half load (${h.pairs} × ${h.size} B)`,
      `p50 ${fix(h.p50Ms, 2)} ms, p99 ${fix(h.p99Ms, 2)} ms at ${int(h.pps)} of ${int(h.rate)} pkts/s asked; drop ${fix(h.dropPct, 3)}%; ` +
        `gen loop lag p99 ${fix(h.genLoopP99Ms, 1)} ms`,
      `p99 ≈ ${REFERENCE.halfLoadP99Ms} ms`,
      `p99 ≤ ${TARGETS.halfLoadP99Ms} ms ${verdict(Number.isFinite(h.p99Ms) ? h.p99Ms <= TARGETS.halfLoadP99Ms : false)}`,
    ]);
  }
  for (const i of r.idle) {
    const ref = REFERENCE.idleBytesPerConn[i.transport];
    const target = i.transport === 'tcp' ? `≤ ${kib(TARGETS.idleTcpBytesPerConn)} ${verdict(i.bytesPerConn <= TARGETS.idleTcpBytesPerConn)}` : '';
    m.push([
      `RSS per idle ${i.transport.toUpperCase()} client`,
      `${kib(i.bytesPerConn)} (${int(i.opened)} clients, RSS ${int(i.rssBeforeKiB / 1024)} → ${int(i.rssAfterKiB / 1024)} MiB; ` +
        `fd limit server ${int(i.fdLimits.server)}, generator ${int(i.fdLimits.generator)})${i.note ? `; ${i.note}` : ''}`,
      ref ? `≈ ${Math.round(ref / 1000)} KB` : '—',
      target,
    ]);
  }
  const hs = r.handshakes;
  if (hs) {
    m.push([
      'handshakes/s',
      `${int(hs.perSec)}/s (${hs.concurrency} concurrent, ${int(hs.count)} done, ${hs.failed} failed; srv ${fix(hs.serverCpuUsPerHandshake, 0)} µs CPU each; gen CPU ${fix(hs.genCpuPct, 0)}%)${hs.firstError ? `; first error: ${hs.firstError}` : ''}`,
      `≈ ${int(REFERENCE.handshakesPerSec)}/s`,
      `≥ ${int(TARGETS.handshakesPerSec)} ${verdict(hs.perSec >= TARGETS.handshakesPerSec)}`,
    ]);
  }
  if (m.length > 0) out.push(m.toString());
  renderStun(r, out);
  for (const n of r.notes) out.push(`note: ${n}`);
  out.push('Targets are informational: the bench exits 0 unless something crashed. Go derper figures: Tailscale derper on a 2-core machine.');
  out.push('');
  return out.join('\n');
}

function renderStun(r: BenchReport, out: string[]): void {
  const b = r.stunBaseline;
  const rows = [...r.stun, ...(b ? [b] : [])];
  if (rows.length > 0) {
    const s = r.settings;
    out.push(
      `STUN Binding on loopback: ${s.stunSockets} client sockets × ${s.stunWindow} requests in flight (40-byte Tailscale requests, fresh transaction IDs), ` +
        `generator in ${s.workers} worker process(es); ${s.warmupMs / 1000} s warm-up then ${s.durationMs / 1000} s measured`,
    );
    const t = new Table({
      head: ['server', 'req/s', 'loss %', 'p50 ms', 'p99 ms', 'srv µs/req', 'srv CPU %', 'gen CPU %', 'ours/bare', 'coturn (C)', 'bare Node', 'target'],
      colAligns: ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'left'],
      style: { head: [], border: [] },
    });
    for (const x of rows) {
      const ours = x !== b;
      const single = ours && x.processes === 1;
      t.push([
        x.server,
        int(x.reqPerSec),
        fix(x.lossPct, 3),
        fix(x.p50Ms, 2),
        fix(x.p99Ms, 2),
        fix(x.serverCpuUsPerReq, 2),
        fix(x.serverCpuPct, 0),
        fix(x.genCpuPct, 0),
        ours && b && b.reqPerSec > 0 ? `${fix(x.reqPerSec / b.reqPerSec, 2)}×` : '—',
        `≈ ${int(STUN_REFERENCE.coturnReqPerSec)}`,
        `≈ ${int(STUN_REFERENCE.bareNodeReqPerSec)}`,
        single ? `≥ ${int(STUN_TARGET_REQ_PER_SEC)} ${verdict(x.reqPerSec >= STUN_TARGET_REQ_PER_SEC)}` : '',
      ]);
    }
    out.push(t.toString());
  }
  const n = r.netcheck;
  if (n) {
    out.push(
      `netcheck over ${n.regions} loopback STUN regions (IPv4), ${n.runs} runs: wall time p50 ${fix(n.wallP50Ms, 1)} ms, max ${fix(n.wallMaxMs, 1)} ms; ` +
        `regions answered ${n.minAnswered}/${n.regions} in the worst run ${verdict(n.minAnswered === NETCHECK_REGIONS)}; slowest region RTT ${fix(n.maxRegionLatencyMs, 2)} ms`,
    );
  }
}
