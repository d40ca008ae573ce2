// One short real soak, as `npm run soak` runs it (tsx, the pinned node): derp serve --dev as a child,
// the steady load, churn and hostile clients for 10 s; then the files it wrote and the verdict's fields.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLValidator } from 'fast-xml-parser';
import { afterAll, describe, expect, it } from 'vitest';
import { runNode, type CliResult } from '../helpers/cli.js';
import { fromCsv } from '../../soak/series.js';
import type { SoakVerdict } from '../../soak/verdict.js';

const DURATION_S = 10;

function soak(args: string[]): Promise<CliResult> {
  return runNode(['--import', 'tsx', 'soak/index.ts', ...args]);
}

describe('npm run soak (10 s)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'soak-run-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('samples every second, writes CSV, SVG and JSON, and exits by its verdict', { timeout: 60_000 }, async () => {
    const r = await soak(['--duration', `${DURATION_S}s`, '--out', dir, '--json']);
    const out = JSON.parse(r.stdout) as { verdict: SoakVerdict; csv: string; svg: string; json: string };
    const v = out.verdict;
    expect(r.code, r.stderr).toBe(v.pass ? 0 : 1);
    expect(out.csv).toBe(join(dir, `soak-${DURATION_S}s.csv`));
    const rows = fromCsv(readFileSync(out.csv, 'utf8'));
    // One row a second (the last may fall just past the end).
    expect(rows.length).toBeGreaterThanOrEqual(DURATION_S - 2);
    expect(rows.length).toBeLessThanOrEqual(DURATION_S);
    for (const s of rows) {
      expect(s.rssMiB).toBeGreaterThan(0);
      expect(s.fds).toBeGreaterThan(0);
    }
    expect(rows.some((s) => s.deliveredPps > 0)).toBe(true);
    expect(rows.some((s) => s.heapUsedMiB > 0 && s.loopP99Ms >= 0)).toBe(true);
    expect(XMLValidator.validate(readFileSync(out.svg, 'utf8'))).toBe(true);
    // The verdict's fields, and what is not a matter of timing: the steady load lost nothing.
    expect(Object.keys(v)).toEqual(expect.arrayContaining(['pass', 'failures', 'warmupS', 'rss', 'fds', 'loopP99Ms', 'deliveredPps', 'load', 'churn']));
    expect(v.warmupS).toBe(DURATION_S / 2);
    expect(Number.isFinite(v.rss.slopePerMin)).toBe(true);
    expect(Number.isFinite(v.fds.drift)).toBe(true);
    expect(v.load.sent).toBeGreaterThan(0);
    expect(v.load.lost).toBe(0);
    expect(v.churn!.cycles).toBeGreaterThan(0);
    const full = JSON.parse(readFileSync(out.json, 'utf8')) as { hostile: { slowloris: { opened: number }; absent: { sent: number } } };
    expect(full.hostile.slowloris.opened).toBeGreaterThan(0);
    expect(full.hostile.absent.sent).toBeGreaterThan(0);
  });

  it('rejects bad options with exit 2, naming the flag', async () => {
    const r = await soak(['--duration', 'soon']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--duration: bad duration "soon"');
  });
});
