// The soak's outputs: the CSV (header, one row per sample, missing readings as empty cells, read back
// the same) and the SVG (well-formed XML with one panel per series, the warm-up, the fit and the verdict).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { afterAll, describe, expect, it } from 'vitest';
import { writeOutputs } from '../../soak/outputs.js';
import type { SoakResult } from '../../soak/run.js';
import { CSV_HEADER, fromCsv, toCsv, type Sample } from '../../soak/series.js';
import { PANELS, soakSvg, ticks } from '../../soak/svg.js';
import { judge } from '../../soak/verdict.js';

function samples(n: number, rss: (t: number) => number): Sample[] {
  return Array.from({ length: n }, (_, i) => ({
    t: i + 1,
    rssMiB: rss(i + 1),
    heapUsedMiB: 40 + (i % 7),
    externalMiB: 6,
    heapTotalMiB: 60,
    loopP99Ms: i === 5 ? NaN : 1.5,
    fds: 64,
    deliveredPps: 2000,
    churnPerS: 50,
    connections: 42,
  }));
}

function verdictOf(s: Sample[]) {
  return judge({ samples: s, durationS: s.length, warmupS: 30, load: { sent: 100, received: 100, gaps: 0, stalls: 0, errors: [] }, churn: { cycles: 10, failed: 0 }, fdInFlight: 31 });
}

const META = { date: '2026-12-01T22:00:00.000Z', durationS: 90, command: 'npm run soak -- --duration 90s' };

type Node = Record<string, unknown>;
const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', isArray: (name) => ['g', 'text', 'polyline', 'line', 'rect'].includes(name) });

describe('soak CSV', () => {
  it('has the documented header, one row per sample, and reads back', () => {
    const s = samples(90, () => 150);
    const csv = toCsv(s);
    const lines = csv.trim().split('\n');
    expect(lines[0]).toBe(CSV_HEADER);
    expect(CSV_HEADER).toBe('t_s,rss_mib,heap_used_mib,external_mib,heap_total_mib,eventloop_p99_ms,fds,delivered_pps,churn_per_s,connections');
    expect(lines).toHaveLength(91);
    expect(lines[6]).toBe('6.0,150.00,45.00,6.00,60.00,,64,2000,50,42');
    const back = fromCsv(csv);
    expect(back).toHaveLength(90);
    expect(back[5]!.loopP99Ms).toBeNaN();
    expect(back[89]).toEqual(s[89]);
  });

  it('refuses a file that is not a soak CSV', () => {
    expect(() => fromCsv('a,b\n1,2\n')).toThrow(/not a soak CSV/);
  });
});

describe('soak SVG', () => {
  it('is well-formed and has a panel per series, the warm-up, the fits and the verdict in the title', () => {
    const s = samples(90, () => 150);
    const svg = soakSvg(s, verdictOf(s), META);
    expect(XMLValidator.validate(svg)).toBe(true);
    const root = (parser.parse(svg) as Node).svg as Node;
    const panels = root.g as Node[];
    expect(panels.map((g) => g['@data-series'])).toEqual(PANELS.map((p) => p.lines.map((l) => l.key).join(' ')));
    expect(panels.map((g) => (g.text as Array<string | Node>)[0])).toEqual(expect.arrayContaining([expect.objectContaining({ '#text': expect.stringMatching(/^Server RSS \(MiB; fails/) })]));
    // Every panel: its series drawn and the warm-up shaded; RSS, heap and fds also get the fit.
    for (const g of panels) {
      expect((g.polyline as Node[]).length).toBeGreaterThan(0);
      expect((g.rect as Node[]).some((r) => r['@class'] === 'warm')).toBe(true);
    }
    const fits = panels.filter((g) => (g.line as Node[]).some((l) => l['@class'] === 'fit'));
    expect(fits).toHaveLength(3);
    // The missing event-loop reading breaks that line in two.
    expect((panels[3]!.polyline as Node[]).length).toBe(2);
    expect(String(root.title)).toBe('derp soak 2026-12-01 22:00:00 UTC, 90 s: PASS');
    expect(svg).toContain('slope +0.00 MiB/min');
  });

  it('prints the failure in the subtitle of a failed run', () => {
    const s = samples(90, (t) => 150 + t);
    const v = verdictOf(s);
    expect(v.pass).toBe(false);
    const svg = soakSvg(s, v, META);
    expect(XMLValidator.validate(svg)).toBe(true);
    expect(svg).toContain('>FAIL</tspan>');
    expect(svg).toContain('rss_mib grows 60.0 MiB/min');
  });

  it('ticks are round numbers covering the range', () => {
    expect(ticks(0, 100)).toEqual([0, 25, 50, 75, 100]);
    expect(ticks(118, 166)).toEqual([120, 140, 160]);
    expect(ticks(5, 5)).toEqual([5]);
  });
});

describe('writeOutputs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'soak-out-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes soak-<duration>.csv, .svg and .json (the verdict without the samples)', () => {
    const s = samples(90, () => 150);
    const r: SoakResult = {
      date: META.date,
      command: META.command,
      settings: { durationS: 90, warmupS: 30, churnPerMin: 3000, pairs: 8, rate: 2000, size: 1024, hostile: true, server: 'test' },
      samples: s,
      verdict: verdictOf(s),
      steady: null,
      hostile: null,
      scrapeErrors: 0,
      notes: [],
    };
    const p = writeOutputs(r, dir, '90s');
    expect(p.csv).toBe(join(dir, 'soak-90s.csv'));
    expect(fromCsv(readFileSync(p.csv, 'utf8'))).toHaveLength(90);
    expect(XMLValidator.validate(readFileSync(p.svg, 'utf8'))).toBe(true);
    const j = JSON.parse(readFileSync(p.json, 'utf8')) as { verdict: { pass: boolean }; samples?: unknown };
    expect(j.verdict.pass).toBe(true);
    expect(j.samples).toBeUndefined();
  });
});
