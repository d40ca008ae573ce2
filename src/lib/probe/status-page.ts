/**
 * The continuous mode's status page: the last result of every check as one self-contained HTML document
 * (inline CSS, no scripts, no external assets; every value escaped).
 */
import type { CheckStatus, ProbeReport } from './types.js';

export interface StatusPageInput {
  report: ProbeReport | undefined;
  state: { runs: number; failures: number; lastSuccessAt?: number; lastFailureAt?: number; lastError?: string; lastRunOk?: boolean };
  everyMs: number;
  /** Shown when there is no report yet. */
  waiting: string;
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

const COLOURS: Record<CheckStatus, string> = { good: '#1a7f37', warn: '#9a6700', bad: '#cf222e', skipped: '#6e7781' };

function iso(ms: number | undefined): string {
  return ms === undefined ? '—' : new Date(ms).toISOString();
}

function fmtValue(v: number | undefined, unit: string | undefined): string {
  if (v === undefined) return '';
  const n = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  return unit === undefined ? n : `${n} ${unit}`;
}

export function renderStatusPage(p: StatusPageInput): string {
  const e = escapeHtml;
  const r = p.report;
  const refresh = Math.max(5, Math.round(p.everyMs / 1000));
  const css = [
    'body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1f2328}',
    'table{border-collapse:collapse}th,td{padding:.25em .6em;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top}',
    'td.num{text-align:right;white-space:nowrap}.msg{max-width:48em;word-break:break-word}',
    ...Object.entries(COLOURS).map(([s, c]) => `.s-${s}{color:#fff;background:${c};font-weight:600}`),
    '.banner{padding:.5em .8em;margin:.8em 0;border-left:4px solid #cf222e;background:#ffebe9}',
  ].join('\n');
  const lines: string[] = [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8">',
    `<meta http-equiv="refresh" content="${refresh}">`,
    `<title>derp probe: ${e(r?.status ?? 'waiting')}</title>`,
    `<style>\n${css}\n</style></head><body>`,
    '<h1>derp probe</h1>',
  ];
  if (p.state.lastRunOk === false) lines.push(`<p class="banner">The last run failed at ${e(iso(p.state.lastFailureAt))}: ${e(p.state.lastError ?? '')}${r ? ' — showing the last good report.' : ''}</p>`);
  lines.push(`<p>runs: ${p.state.runs}, failed: ${p.state.failures}, every ${e(String(p.everyMs / 1000))} s; last good run ended ${e(iso(p.state.lastSuccessAt))}</p>`);
  if (r === undefined) {
    lines.push(`<p>${e(p.waiting)}</p>`, '</body></html>');
    return `${lines.join('\n')}\n`;
  }
  const s = r.summary;
  lines.push(
    `<p>status <span class="s-${e(r.status)}">&nbsp;${e(r.status)}&nbsp;</span> — ${s.nodes} nodes, ${s.checks} checks: ${s.good} good, ${s.warn} warn, ${s.bad} bad, ${s.skipped} skipped</p>`,
    `<p>ran ${e(r.startedAt)} → ${e(r.finishedAt)} (${e(fmtValue(r.durationMs, 'ms'))}); source ${e(r.source.map ?? (r.source.servers ?? []).join(', '))}; derp ${e(r.version)}</p>`,
    '<table><thead><tr><th>region</th><th>node</th><th>check</th><th>status</th><th>value</th><th>message</th><th>took</th></tr></thead><tbody>',
  );
  for (const n of r.nodes) {
    for (const c of n.checks) {
      const name = c.check === 'mesh' && c.peer !== undefined ? `mesh → ${c.peer}` : c.check;
      lines.push(
        `<tr><td>${e(`${n.regionId} ${n.regionCode}`)}</td><td title="${e(n.hostname)}">${e(n.node)}</td><td>${e(name)}</td>` +
          `<td class="s-${e(c.status)}">${e(c.status)}</td><td class="num">${e(fmtValue(c.value, c.unit))}</td>` +
          `<td class="msg">${e(c.message)}</td><td class="num">${e(fmtValue(c.durationMs, 'ms'))}</td></tr>`,
      );
    }
  }
  lines.push('</tbody></table>', '</body></html>');
  return `${lines.join('\n')}\n`;
}
