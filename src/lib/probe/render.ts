/** `derp probe`'s text output: one table row per node × check, and a summary line. */
import Table from 'cli-table3';
import type { CheckResult, ProbeReport } from './types.js';

export function formatValue(r: CheckResult): string {
  if (r.value === undefined) return '';
  return `${r.value} ${r.unit ?? ''}`.trim();
}

/** Columns: region, node, check (mesh: `mesh→<peer>`), status, value, message. No colours: it goes to logs too. */
export function renderTable(report: ProbeReport): string {
  const table = new Table({ head: ['region', 'node', 'check', 'status', 'value', 'message'], style: { head: [], border: [] }, chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' } });
  for (const n of report.nodes) {
    for (const c of n.checks) {
      table.push([`${n.regionId} ${n.regionCode}`, n.node, c.peer ? `${c.check}→${c.peer}` : c.check, c.status, formatValue(c), c.message]);
    }
  }
  return table.toString();
}

/** `2 nodes, 14 checks: 11 good, 1 warn, 1 bad, 1 skipped; status bad (1.4 s)`. */
export function summaryLine(report: ProbeReport): string {
  const s = report.summary;
  const secs = Math.round(report.durationMs / 100) / 10;
  return `${s.nodes} node${s.nodes === 1 ? '' : 's'}, ${s.checks} check${s.checks === 1 ? '' : 's'}: ${s.good} good, ${s.warn} warn, ${s.bad} bad, ${s.skipped} skipped; status ${report.status} (${secs} s)`;
}
