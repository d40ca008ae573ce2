/** The bench's output: one JSON document, or readable tables with references, targets and PASS/MISS. */
import Table from 'cli-table3';
import { NETCHECK_REGIONS, REFERENCE, STUN_REFERENCE, STUN_TARGET_REQ_PER_SEC, TARGETS, THROUGHPUT_SCENARIOS } from './reference.js';
import type { HandshakeResult, IdleResult, ThroughputResult } from '../src/lib/loadgen/index.js';
import type { NetcheckBenchResult, StunResult } from './stun.js';
import { METRICS_MAX_COST_PCT, SCRAPE_INTERVAL_MS, type MetricsCostResult } from './metrics.js';
import { acrossRounds, median, P99_FACTOR, rssSlackKiB, type FloodResult } from './flood.js';
import type { HandshakeBreakdown } from './handshake-breakdown.js';
import { DERPER_HANDSHAKES, HANDSHAKE_TARGET, SCALING_HEAD, handshakeVerdict, predictHost, scalingRows, type ScalingReport } from './scaling.js';

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
    compareUrl: string | null;
    stunSockets: number;
    stunWindow: number;
  };
  throughput: ThroughputResult[];
  baseline: ThroughputResult[];
  halfLoad: ThroughputResult | null;
  idle: IdleResult[];
  handshakes: HandshakeResult | null;
  /** The same handshake load against --compare-url, right after ours. */
  handshakesCompare: HandshakeResult | null;
  /** The same load against the baseline forwarder: what a handshake costs Node with one X25519 and nothing else. */
  handshakesBaseline: HandshakeResult | null;
  handshakeBreakdown: HandshakeBreakdown | null;
  flood: FloodResult | null;
  /** Flood rounds after the first (--flood-rounds), each with a fresh relay. */
  floodRounds: FloodResult[];
  /** Our STUN server: one process (derp serve), then N processes sharing the port (reusePort). */
  stun: StunResult[];
  /** The bare dgram responder under the same load. */
  stunBaseline: StunResult | null;
  netcheck: NetcheckBenchResult | null;
  /** Throughput with metrics off and on (scraped every second), alternating rounds. */
  metricsCost: MetricsCostResult[];
  /** derp serve --workers 1 and --workers N, the generator sharing the cores and pinned apart. */
  scaling: ScalingReport | null;
  notes: string[];
}

/** A report with what the run is and nothing measured yet: each stage fills its part. */
export function emptyReport(head: Pick<BenchReport, 'command' | 'date' | 'machine' | 'settings'>): BenchReport {
  return {
    ...head,
    throughput: [],
    baseline: [],
    halfLoad: null,
    idle: [],
    handshakes: null,
    handshakesCompare: null,
    handshakesBaseline: null,
    handshakeBreakdown: null,
    flood: null,
    floodRounds: [],
    stun: [],
    stunBaseline: null,
    netcheck: null,
    metricsCost: [],
    scaling: null,
    notes: [],
  };
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
  renderHandshakes(r, out);
  if (r.scaling) renderScaling(r.scaling, out);
  renderFlood(r, out);
  renderFloodRounds(r, out);
  renderStun(r, out);
  for (const n of r.notes) out.push(`note: ${n}`);
  out.push('Targets are informational: the bench exits 0 unless something crashed. Go derper figures: Tailscale derper on a 2-core machine.');
  out.push('');
  return out.join('\n');
}

/** Ours beside --compare-url, and where our relay's CPU per handshake goes. */
function renderHandshakes(r: BenchReport, out: string[]): void {
  const hs = r.handshakes;
  const cmp = r.handshakesCompare;
  if (hs && cmp) {
    const ratio = cmp.perSec > 0 ? hs.perSec / cmp.perSec : NaN;
    out.push(
      `handshakes/s in the same run: derp serve ${int(hs.perSec)}/s (srv ${fix(hs.serverCpuUsPerHandshake, 0)} µs CPU each), ` +
        `${cmp.server} ${int(cmp.perSec)}/s (${cmp.serverCpuUsPerHandshake !== null ? `srv ${fix(cmp.serverCpuUsPerHandshake, 0)} µs CPU each` : 'no --compare-pid: CPU unknown'}; ${cmp.failed} failed` +
        `${cmp.firstError ? `, first error: ${cmp.firstError}` : ''}); ours/theirs ${fix(ratio, 2)}× — target ≥ 1.5× ${verdict(Number.isFinite(ratio) ? ratio >= 1.5 : null)}`,
    );
  }
  const fl = r.handshakesBaseline;
  if (hs && fl) {
    out.push(
      `handshake floor: the baseline forwarder (upgrade, ServerKey, one X25519 for ServerInfo; no box opened, no JSON, no hub) ` +
        `${int(fl.perSec)}/s, srv ${fix(fl.serverCpuUsPerHandshake, 0)} µs CPU each (user ${fix(fl.serverUserUsPerHandshake, 0)}, kernel ${fix(fl.serverSysUsPerHandshake, 0)}); ` +
        `derp serve ${int(hs.perSec)}/s, ${fix(hs.serverCpuUsPerHandshake, 0)} µs (user ${fix(hs.serverUserUsPerHandshake, 0)}, kernel ${fix(hs.serverSysUsPerHandshake, 0)})`,
    );
  }
  const b = r.handshakeBreakdown;
  if (!b) return;
  const t = new Table({
    head: ['where a handshake’s relay CPU goes', 'µs', 'share'],
    colAligns: ['left', 'right', 'right'],
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  const total = hs?.serverCpuUsPerHandshake ?? null;
  const share = (us: number | null): string => (total && us !== null && Number.isFinite(us) ? `${fix((us / total) * 100, 0)} %` : '—');
  if (hs && total !== null) {
    t.push(['measured: relay CPU per handshake under load (utime + stime / handshakes)', fix(total, 1), '100 %']);
    t.push(['  kernel (stime: accept, reads, writes, close, epoll)', fix(hs.serverSysUsPerHandshake, 1), share(hs.serverSysUsPerHandshake)]);
    t.push(['  user space (utime)', fix(hs.serverUserUsPerHandshake, 1), share(hs.serverUserUsPerHandshake)]);
  }
  t.push(['    acceptClientInfo, timed alone (server/handshake.ts)', fix(b.acceptUs, 1), share(b.acceptUs)]);
  for (const s of b.steps) t.push([`      ${s.step}`, fix(s.us, 1), share(s.us)]);
  if (hs?.serverUserUsPerHandshake != null) {
    const rest = hs.serverUserUsPerHandshake - b.acceptUs;
    t.push(['    the rest: HTTP upgrade, socket setup and streams in JS, hub registration, GC', fix(rest, 1), share(rest)]);
  }
  t.push([`for scale, not on the relay's path (each step: fastest of 3 rounds × ${b.iterations} calls)`, '', '']);
  for (const s of b.alternatives) t.push([`  ${s.step}`, fix(s.us, 1), '']);
  out.push(t.toString());
}

const PREDICT_CORES = [2, 4, 8, 16];

/** The scaling table, and what predicts a bigger host. */
export function renderScaling(sc: ScalingReport, out: string[]): void {
  out.push(
    `scaling: derp serve --workers 1 and --workers ${sc.n}; throughput ${sc.pairs} pairs × ${sc.size} B (${sc.timing.warmupMs / 1000} s warm-up, ${sc.timing.durationMs / 1000} s measured), ` +
      `handshakes ${sc.concurrency} concurrent for ${sc.timing.durationMs / 1000} s; best of ${sc.rounds} round(s) per row (order W=1, W=N, W=N, W=1); relay CPU = the serve process and all its descendants (/proc); ` +
      `"per relay core" = 10⁶ / relay µs per packet (or handshake): what one core of relay does at that cost`,
  );
  const rows = scalingRows(sc);
  for (const part of ['throughput', 'handshakes'] as const) {
    const head = SCALING_HEAD[part];
    const t = new Table({ head, style: { head: [], border: [] } });
    // A cell without figures: its reason across the figure columns.
    for (const row of rows[part]) t.push(row.length === 4 ? [...row.slice(0, 3), { colSpan: head.length - 3, content: row[3]! }] : row);
    out.push(t.toString());
  }
  if (!sc.workersAvailable && !sc.notes.some((n) => n.startsWith('workers not available'))) out.push(`scaling: workers not available — no W=${sc.n} / W=1 ratio (derp serve --workers ${sc.n} did not run several listening processes)`);
  const p = predictHost(sc, PREDICT_CORES);
  if (p) {
    out.push(
      `predicted relay capacity, one worker per core, generator on other machines (from the ${p.from} cells' per-packet and per-handshake costs; ` +
        `linear in cores, so an upper bound for the relay's CPU alone): ${p.rows.map((x) => `${x.cores} cores ≈ ${int(x.pktsPerSec)} pkts/s, ${int(x.handshakesPerSec)} hs/s`).join('; ')}`,
    );
  }
  const v = handshakeVerdict(sc);
  if (v) {
    const t = HANDSHAKE_TARGET;
    out.push(
      `handshakes vs Tailscale's derper (no derper here; its figures from elsewhere): ours ${int(v.ours)}/s (--workers ${v.workers}, cores shared) = ` +
        `${fix(v.vsReadme, 2)}× the README's ≈ ${int(DERPER_HANDSHAKES.readme)}/s ${verdict(v.vsReadme >= t)}, ${fix(v.vsIssue7, 2)}× issue 7's ≈ ${int(DERPER_HANDSHAKES.issue7.derper)}/s ${verdict(v.vsIssue7 >= t)}; ` +
        `same-run proxy (derper ≈ ${fix(DERPER_HANDSHAKES.issue7.derper / DERPER_HANDSHAKES.issue7.ours, 2)}× our one process, as in issue 7's run): ${fix(v.sameRunProxy, 2)}× ${verdict(v.sameRunProxy === null ? null : v.sameRunProxy >= t)} — target ≥ ${t}×`,
    );
  }
  for (const n of sc.notes) out.push(`scaling: ${n}`);
}

function mib(kib: number): string {
  return Number.isFinite(kib) ? `${(kib / 1024).toFixed(0)}` : '—';
}

function renderFlood(r: BenchReport, out: string[]): void {
  const f = r.flood;
  if (!f) return;
  out.push(
    `flood: canary pair at ${int(f.canaryRate)} pkts/s each way (${f.canarySize} B), attacks one at a time for ${f.phaseMs / 1000} s each from a second worker; ` +
      `relay ${f.serverArgs.length > 0 ? `with ${f.serverArgs.join(' ')}` : 'with its defaults'}; targets: no canary loss, canary p99 ≤ ${P99_FACTOR}× quiet, relay alive, RSS back within ` +
      `${mib(rssSlackKiB(f.baselineRssKiB))} MiB of the quiet baseline (RSS at the end of the quiet phase)`,
  );
  const pl = f.placement;
  out.push(
    pl.mode === 'split'
      ? `flood placement: split — the relay's event loop and the canary's on CPU ${pl.relayCpus}, the attacker and their helper threads on CPU ${pl.attackerCpus} (taskset; as on the internet, the attacker's CPU is not the relay's)`
      : `flood placement: shared — relay, canary and attacker wherever the scheduler puts them${pl.note ? ` (${pl.note})` : ''}`,
  );
  out.push(
    f.warmup === null
      ? 'flood warm-up: none (--flood-warmup 0): the attacks meet the relay as it started (derp serve makes its own warm-up handshakes before it listens: --warm-up-handshakes)'
      : `flood warm-up: ${int(f.warmup.handshakes)} handshakes in ${fix(f.warmup.ms / 1000, 1)} s before the canary started (as on a relay that has served a while; --flood-warmup 0, the default, for the relay as it started)`,
  );
  if (f.decoy) out.push('flood decoy (a control): the attacks went to a second relay on the attacker\'s CPUs; the measured relay carried the canary alone, so its tail here is the machine\'s');
  const t = new Table({
    head: ['phase', 'attack', 'canary sent / lost', 'canary p50 / p99 ms', `p99 ≤ ${P99_FACTOR}× quiet`, 'relay loop ms on CPU / waiting for it', 'RSS MiB before → peak → after', 'heap+ext MiB after', 'alive', 'loss', 'RSS back'],
    colAligns: ['left', 'left', 'right', 'right', 'left', 'right', 'right', 'right', 'left', 'left', 'left'],
    style: { head: [], border: [] },
    colWidths: [34, 44, null, null, null, 16, null, null, null, null, null],
    wordWrap: true,
  });
  const slack = rssSlackKiB(f.baselineRssKiB);
  for (const x of f.phases) {
    const a = x.attack;
    const rate = a && a.elapsedMs > 0 ? `${int(a.count / (a.elapsedMs / 1000))}/s` : '';
    const what = a ? `${int(a.count)} ${a.kind === 'blast' || a.kind === 'absent' ? 'packets' : a.kind === 'slowloris' ? 'held' : 'done'}${a.kind === 'slowloris' ? '' : ` (${rate})`}, ${a.failed} failed; ${a.detail}${a.firstError ? `; first error: ${a.firstError}` : ''}` : '—';
    const p99ok = x.kind === 'quiet' ? null : x.canaryP99Ms <= P99_FACTOR * f.quietP99Ms;
    t.push([
      x.phase,
      what,
      `${int(x.canarySent)} / ${int(x.canaryLost)}`,
      `${fix(x.canaryP50Ms, 2)} / ${fix(x.canaryP99Ms, 2)}${x.kind === 'quiet' ? '' : ` (quiet ${fix(f.quietP99Ms, 2)})`}`,
      x.kind === 'quiet' ? '' : `${fix(x.canaryP99Ms / f.quietP99Ms, 1)}× ${verdict(p99ok)}`,
      x.relayLoopCpuMs === null || x.relayLoopWaitMs === null ? '—' : `${int(x.relayLoopCpuMs)} / ${int(x.relayLoopWaitMs)}`,
      `${mib(x.rssBeforeKiB)} → ${mib(x.rssPeakKiB)} → ${mib(x.rssAfterKiB)}${x.settleMs > RSS_SETTLE_NOTE_MS ? ` (${fix(x.settleMs / 1000, 1)} s)` : ''}`,
      mib(x.heapAfterKiB ?? NaN),
      `${verdict(x.alive)}${x.probe ? ` ${x.probe.detail.replace('handshake in ', '')}` : ''}`,
      `${verdict(x.canaryLost === 0 && x.canaryErrors.length === 0)}${x.canaryErrors.length > 0 ? ` ${x.canaryErrors.join('; ')}` : ''}`,
      x.kind === 'quiet' ? '' : verdict(x.rssAfterKiB <= f.baselineRssKiB + slack),
    ]);
  }
  out.push(t.toString());
  out.push(
    `flood end: canary packets never delivered ${int(f.canaryUndelivered)} ${verdict(f.canaryUndelivered === 0)}; relay RSS ${mib(f.baselineRssKiB)} MiB quiet → ${mib(f.finalRssKiB)} MiB at the end (${fix(f.finalSettleMs / 1000, 1)} s after the last attack) ` +
      `${verdict(Number.isFinite(f.finalRssKiB) && f.finalRssKiB <= f.baselineRssKiB + slack)}; ` +
      (f.finalTrimmedRssKiB === null ? '' : `after malloc_trim(0) ${mib(f.finalTrimmedRssKiB)} MiB ${verdict(f.finalTrimmedRssKiB <= f.baselineRssKiB + slack)}; `) +
      `V8 heap + external ${mib(f.baselineHeapKiB ?? NaN)} → ${mib(f.finalHeapKiB ?? NaN)} MiB`,
  );
}

/** With --flood-rounds: every round's p99 ratio per attack, judged on the median (one run's p99 is its few worst milliseconds). */
function renderFloodRounds(r: BenchReport, out: string[]): void {
  if (!r.flood || r.floodRounds.length === 0) return;
  const rounds = [r.flood, ...r.floodRounds];
  const t = new Table({
    head: ['phase', `canary p99 ÷ quiet p99, rounds 1–${rounds.length}`, 'median', `median ≤ ${P99_FACTOR}×`, 'lost', 'relay alive'],
    colAligns: ['left', 'left', 'right', 'left', 'right', 'left'],
    style: { head: [], border: [] },
    colWidths: [34, 50, null, null, null, null],
    wordWrap: true,
  });
  const quiet = rounds.map((f) => f.quietP99Ms);
  t.push(['quiet p99 ms', quiet.map((q) => fix(q, 2)).join('  '), fix(median(quiet), 2), '', '', '']);
  for (const a of acrossRounds(rounds)) {
    t.push([a.phase, a.ratios.map((x) => `${fix(x, 1)}×`).join('  '), `${fix(a.median, 1)}×`, verdict(a.median <= P99_FACTOR), int(a.lost), a.deadRounds === 0 ? verdict(true) : `${verdict(false)} ${a.deadRounds} of ${a.ratios.length}`]);
  }
  out.push(`flood over ${rounds.length} rounds (a fresh relay each; the first round's detail above):`);
  out.push(t.toString());
  const rss = rounds.map((f) => {
    const ok = Number.isFinite(f.finalRssKiB) && f.finalRssKiB <= f.baselineRssKiB + rssSlackKiB(f.baselineRssKiB);
    return `${mib(f.baselineRssKiB)} → ${mib(f.finalRssKiB)} ${verdict(ok)}`;
  });
  out.push(`flood rounds, relay RSS quiet → end (MiB): ${rss.join(', ')}; canary packets never delivered: ${int(rounds.reduce((n, f) => n + f.canaryUndelivered, 0))}`);
}

/** Settling shorter than this is not worth printing. */
const RSS_SETTLE_NOTE_MS = 500;

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
