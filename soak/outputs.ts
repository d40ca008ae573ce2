/** What a soak run leaves behind: soak-<duration>.{csv,svg,json}, and the summary it prints. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SoakResult } from './run.js';
import { toCsv } from './series.js';
import { soakSvg } from './svg.js';

/** Writes soak-<duration>.{csv,svg,json}; returns their paths. */
export function writeOutputs(r: SoakResult, dir: string, label: string): { csv: string; svg: string; json: string } {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `soak-${label}`);
  const paths = { csv: `${base}.csv`, svg: `${base}.svg`, json: `${base}.json` };
  writeFileSync(paths.csv, toCsv(r.samples));
  writeFileSync(paths.svg, soakSvg(r.samples, r.verdict, { date: r.date, durationS: r.settings.durationS, command: r.command }));
  const { samples: _s, ...rest } = r;
  writeFileSync(paths.json, `${JSON.stringify({ ...rest, csv: paths.csv, svg: paths.svg }, null, 2)}\n`);
  return paths;
}

export function summary(r: SoakResult): string {
  const v = r.verdict;
  const f = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : '–');
  return [
    `soak ${r.settings.durationS} s (warm-up ${f(v.warmupS, 0)} s, fitted ${f(v.windowS, 0)} s): ${v.pass ? 'PASS' : 'FAIL'}`,
    `  RSS        ${f(v.rss.start)} → ${f(v.rss.end)} MiB, slope ${f(v.rss.slopePerMin, 2)} MiB/min (bound ${v.rss.boundSlopeMiBPerMin} MiB/min and ${v.rss.boundGrowthMiB} MiB fitted)`,
    `  RSS − heap ${f(v.native.start)} → ${f(v.native.end)} MiB, slope ${f(v.native.slopePerMin, 2)} MiB/min; V8 heap committed ${f(v.heapTotal.start)} → ${f(v.heapTotal.end)} MiB`,
    `  heap used  floor ${f(v.heapFloor.start)} → ${f(v.heapFloor.end)} MiB, slope ${f(v.heapFloor.slopePerMin, 2)} MiB/min; external ${f(v.external.start)} → ${f(v.external.end)} MiB`,
    `  fds        ${f(v.fds.start, 0)} → ${f(v.fds.end, 0)}, drift ${f(v.fds.drift, 0)} (bound ${v.fds.bound}), slope ${f(v.fds.slopePerMin, 2)}/min`,
    `  event loop p99 median ${f(v.loopP99Ms.median, 2)} ms, max ${f(v.loopP99Ms.max, 1)} ms`,
    `  steady     ${f(v.deliveredPps.median, 0)} pkt/s delivered; ${v.load.sent} sent, ${v.load.received} received, ${v.load.gaps} gaps, ${v.load.stalls} stalls`,
    `  churn      ${v.churn ? `${v.churn.cycles} cycles (${f(v.churnPerS.median * 60, 0)}/min), ${v.churn.failed} failed` : 'off'}`,
    ...(r.hostile
      ? [
          `  hostile    slowloris ${r.hostile.slowloris.opened} opened, ${r.hostile.slowloris.closedByRelay} closed by the relay; absent-key packets ${r.hostile.absent.sent}; ` +
            `non-readers closed by the relay ${r.hostile.nonReader.closedByRelay}`,
        ]
      : []),
    ...r.notes.map((n) => `  note: ${n}`),
    ...v.notes.map((n) => `  note: ${n}`),
    ...v.failures.map((x) => `  FAIL: ${x}`),
  ].join('\n');
}

