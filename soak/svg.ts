/**
 * The soak's chart: one small multiple per series (time on x, the series' unit on y), the warm-up
 * shaded, the least-squares fit after it drawn dashed and printed; the title carries date, duration
 * and verdict. Hand-written SVG: no dependency, readable in any browser or on GitHub.
 */
import type { Sample, SeriesKey } from './series.js';
import { fitSeries, type SoakVerdict } from './verdict.js';

const W = 960;
const COLS = 2;
const PANEL_W = W / COLS;
const PANEL_H = 210;
const HEAD_H = 78;
/** Plot area inside a panel. */
const PAD = { left: 58, right: 18, top: 40, bottom: 32 };
const COLORS = ['#1f5fbf', '#d9730d'];
const FIT_COLOR = '#c0392b';

interface Panel {
  title: string;
  unit: string;
  lines: Array<{ key: SeriesKey; label: string }>;
  /** Draw and print the fit of the first line. */
  fit: boolean;
  /** The line under the title: what the verdict says about this series. */
  note: (v: SoakVerdict) => string;
}

const fmt = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : '–');
const signed = (x: number, d = 1): string => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${x.toFixed(d)}` : '–');

export const PANELS: readonly Panel[] = [
  {
    title: 'Server RSS',
    unit: 'MiB; fails > 2 MiB/min and > 16 MiB',
    lines: [
      { key: 'rssMiB', label: 'VmRSS' },
      { key: 'heapTotalMiB', label: 'V8 heap' },
    ],
    fit: true,
    note: (v) => `slope ${signed(v.rss.slopePerMin, 2)} MiB/min · fitted ${signed(v.rss.fittedGrowth)} MiB · less V8 heap ${signed(v.native.fittedGrowth)} MiB`,
  },
  {
    title: 'V8 heap used and external memory',
    unit: 'MiB',
    lines: [
      { key: 'heapUsedMiB', label: 'heap used' },
      { key: 'externalMiB', label: 'external' },
    ],
    fit: true,
    note: (v) => `floor (10 s min) ${signed(v.heapFloor.slopePerMin, 2)} MiB/min · external ${signed(v.external.slopePerMin, 2)} MiB/min`,
  },
  {
    title: 'Open descriptors',
    unit: 'count',
    lines: [{ key: 'fds', label: 'fds' }],
    fit: true,
    note: (v) => `slope ${signed(v.fds.slopePerMin)}/min, drift ${signed(v.fds.drift)} (fails above ${v.fds.bound})`,
  },
  {
    title: 'Event-loop delay p99 (server)',
    unit: 'ms',
    lines: [{ key: 'loopP99Ms', label: 'p99' }],
    fit: false,
    note: (v) => `median ${fmt(v.loopP99Ms.median, 2)} ms, max ${fmt(v.loopP99Ms.max)} ms (after warm-up)`,
  },
  {
    title: 'Steady load delivered',
    unit: 'pkt/s',
    lines: [{ key: 'deliveredPps', label: 'delivered' }],
    fit: false,
    note: (v) => `median ${fmt(v.deliveredPps.median, 0)} pkt/s; ${v.load.sent.toLocaleString('en-US')} sent, ${v.load.lost.toLocaleString('en-US')} lost`,
  },
  {
    title: 'Connection churn',
    unit: 'cycles/s',
    lines: [{ key: 'churnPerS', label: 'cycles/s' }],
    fit: false,
    note: (v) => (v.churn ? `median ${fmt(v.churnPerS.median, 0)}/s; ${v.churn.cycles.toLocaleString('en-US')} cycles, ${v.churn.failed} failed` : 'churn off'),
  },
];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** About `n` round tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, n = 4): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function tickLabel(v: number): string {
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(Math.abs(v) % 1000 === 0 ? 0 : 1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 1 ? 2 : 1);
}

/** Time axis in seconds for short runs, minutes beyond 3 minutes. */
function timeAxis(maxT: number): { unit: string; div: number } {
  return maxT > 180 ? { unit: 'min', div: 60 } : { unit: 's', div: 1 };
}

function panelSvg(p: Panel, samples: readonly Sample[], v: SoakVerdict, x0: number, y0: number, maxT: number): string {
  const pw = PANEL_W - PAD.left - PAD.right;
  const ph = PANEL_H - PAD.top - PAD.bottom;
  const left = x0 + PAD.left;
  const top = y0 + PAD.top;
  const vals = p.lines.flatMap((l) => samples.map((s) => s[l.key])).filter(Number.isFinite);
  let lo = vals.length > 0 ? Math.min(...vals) : 0;
  let hi = vals.length > 0 ? Math.max(...vals) : 1;
  // Counts and rates start at zero; memory starts a little below its lowest reading so changes show.
  if (!p.unit.startsWith('MiB')) lo = Math.min(0, lo);
  else lo = Math.max(0, lo - (hi - lo) * 0.1 - 1);
  if (hi - lo < 1e-9) hi = lo + 1;
  hi += (hi - lo) * 0.08;
  const xs = (t: number): number => left + (t / maxT) * pw;
  const ys = (y: number): number => top + ph - ((y - lo) / (hi - lo)) * ph;
  const out: string[] = [];
  out.push(`<g class="panel" data-series="${p.lines.map((l) => l.key).join(' ')}">`);
  out.push(`<text x="${x0 + PAD.left}" y="${y0 + 16}" class="pt">${esc(p.title)} (${esc(p.unit)})</text>`);
  out.push(`<text x="${x0 + PAD.left}" y="${y0 + 31}" class="pn">${esc(p.note(v))}</text>`);
  // Warm-up.
  const wx = xs(Math.min(v.warmupS, maxT));
  out.push(`<rect x="${left}" y="${top}" width="${(wx - left).toFixed(1)}" height="${ph}" class="warm"/>`);
  out.push(`<text x="${(left + 4).toFixed(1)}" y="${top + 12}" class="wl">warm-up</text>`);
  // Axes and ticks.
  out.push(`<line x1="${left}" y1="${top + ph}" x2="${left + pw}" y2="${top + ph}" class="ax"/><line x1="${left}" y1="${top}" x2="${left}" y2="${top + ph}" class="ax"/>`);
  for (const t of ticks(lo, hi)) {
    const y = ys(t).toFixed(1);
    out.push(`<line x1="${left}" y1="${y}" x2="${left + pw}" y2="${y}" class="grid"/><text x="${left - 5}" y="${y}" class="yl">${tickLabel(t)}</text>`);
  }
  const ta = timeAxis(maxT);
  for (const t of ticks(0, maxT / ta.div, 6)) {
    const x = xs(t * ta.div).toFixed(1);
    out.push(`<line x1="${x}" y1="${top + ph}" x2="${x}" y2="${top + ph + 4}" class="ax"/><text x="${x}" y="${top + ph + 16}" class="xl">${tickLabel(t)}</text>`);
  }
  out.push(`<text x="${left + pw}" y="${top + ph + 28}" class="xu">time (${ta.unit})</text>`);
  // Series, broken where a reading is missing.
  p.lines.forEach((l, i) => {
    const segs: string[][] = [[]];
    for (const s of samples) {
      if (Number.isFinite(s[l.key])) segs[segs.length - 1]!.push(`${xs(s.t).toFixed(1)},${ys(s[l.key]).toFixed(1)}`);
      else if (segs[segs.length - 1]!.length > 0) segs.push([]);
    }
    for (const seg of segs) if (seg.length > 0) out.push(`<polyline points="${seg.join(' ')}" fill="none" stroke="${COLORS[i]}" stroke-width="1.3"/>`);
    if (p.lines.length > 1) {
      const lx = left + pw - 150 + i * 75;
      out.push(`<line x1="${lx}" y1="${top + 8}" x2="${lx + 14}" y2="${top + 8}" stroke="${COLORS[i]}" stroke-width="2"/><text x="${lx + 18}" y="${top + 12}" class="lg">${esc(l.label)}</text>`);
    }
  });
  if (p.fit) {
    const f = fitSeries(samples, p.lines[0]!.key, v.warmupS);
    if (Number.isFinite(f.slopePerMin)) {
      const ta0 = v.warmupS;
      const at = (t: number): number => f.intercept + (f.slopePerMin / 60) * t;
      out.push(`<line x1="${xs(ta0).toFixed(1)}" y1="${ys(at(ta0)).toFixed(1)}" x2="${xs(maxT).toFixed(1)}" y2="${ys(at(maxT)).toFixed(1)}" stroke="${FIT_COLOR}" stroke-width="1.6" stroke-dasharray="6 4" class="fit"/>`);
    }
  }
  out.push('</g>');
  return out.join('\n');
}

export interface ChartMeta {
  date: string;
  durationS: number;
  command: string;
}

export function soakSvg(samples: readonly Sample[], v: SoakVerdict, meta: ChartMeta): string {
  const rows = Math.ceil(PANELS.length / COLS);
  const h = HEAD_H + rows * PANEL_H + 10;
  const maxT = Math.max(meta.durationS, ...samples.map((s) => s.t));
  const dur = meta.durationS >= 120 ? `${fmt(meta.durationS / 60, meta.durationS % 60 === 0 ? 0 : 1)} min` : `${fmt(meta.durationS, 0)} s`;
  const when = meta.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const verdict = v.pass ? 'PASS' : 'FAIL';
  const sub = v.pass
    ? `RSS ${signed(v.rss.slopePerMin, 2)} MiB/min · fds drift ${signed(v.fds.drift, 0)} · event-loop p99 ${fmt(v.loopP99Ms.median, 2)} ms · ${fmt(v.deliveredPps.median, 0)} pkt/s · churn ${fmt(v.churnPerS.median * 60, 0)}/min`
    : v.failures.join(' · ');
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="system-ui, sans-serif">`);
  out.push(`<title>derp soak ${esc(when)}, ${esc(dur)}: ${verdict}</title>`);
  out.push(
    '<style>.pt{font-size:13px;font-weight:600}.pn{font-size:11px;fill:#444}.yl{font-size:10px;text-anchor:end;dominant-baseline:middle;fill:#333}' +
      '.xl{font-size:10px;text-anchor:middle;fill:#333}.xu{font-size:10px;text-anchor:end;fill:#666}.lg{font-size:10px;fill:#333}.wl{font-size:10px;fill:#777}' +
      '.ax{stroke:#333;stroke-width:1}.grid{stroke:#e4e4e4;stroke-width:1}.warm{fill:#f1f1f1}</style>',
  );
  out.push(`<rect width="${W}" height="${h}" fill="#fff"/>`);
  out.push(
    `<text x="16" y="28" font-size="18" font-weight="700">derp soak · ${esc(when)} · ${esc(dur)} (warm-up ${fmt(v.warmupS, 0)} s) · <tspan fill="${v.pass ? '#1e7d32' : '#c0392b'}">${verdict}</tspan></text>`,
  );
  out.push(`<text x="16" y="48" font-size="12" fill="${v.pass ? '#333' : '#c0392b'}">${esc(sub.length > 150 ? `${sub.slice(0, 147)}…` : sub)}</text>`);
  out.push(`<text x="16" y="66" font-size="11" fill="#666">${esc(meta.command)} · dashed red: least-squares fit after the warm-up</text>`);
  PANELS.forEach((p, i) => out.push(panelSvg(p, samples, v, (i % COLS) * PANEL_W, HEAD_H + Math.floor(i / COLS) * PANEL_H, maxT)));
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
