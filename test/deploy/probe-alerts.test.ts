// deploy/prometheus/derp-probe-alerts.yml: every rule's PromQL parses and names only metrics a real
// ProbeMonitor exports, and the failing-check rule selects exactly the bad results of a report.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { ProbeMonitor } from '../../src/lib/probe/continuous.js';
import { ROOT } from '../helpers/cli.js';
import { promqlMetrics, scrape, type Families } from '../metrics/helpers.js';
import { fullReport } from '../probe/fixtures.js';

interface Rule { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }


describe('deploy/prometheus/derp-probe-alerts.yml', () => {
  let rules: Rule[];
  let monitor: ProbeMonitor;
  let fams: Families;
  beforeAll(async () => {
    const doc = parseYaml(await readFile(join(ROOT, 'deploy/prometheus/derp-probe-alerts.yml'), 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> };
    rules = doc.groups.flatMap((g) => g.rules);
    const report = fullReport();
    monitor = new ProbeMonitor({ run: () => Promise.resolve(report), everyMs: 3_600_000, listen: { host: '127.0.0.1', port: 0 } });
    const first = new Promise<void>((resolve) => monitor.once('run', () => resolve()));
    await monitor.start();
    await first;
    fams = await scrape(`${monitor.url}/metrics`);
  });
  afterAll(async () => {
    await monitor?.stop();
  });

  it('has the failing-check, certificate and probe-not-running alerts', () => {
    expect(rules.map((r) => r.alert)).toEqual(['DerpProbeCheckFailing', 'DerpProbeCertificateExpiring', 'DerpProbeNotRunning']);
    for (const r of rules) expect(r.annotations?.summary, r.alert).toBeTruthy();
  });

  it('names only metrics the probe exports, in valid PromQL', () => {
    for (const r of rules) {
      const names = promqlMetrics(r.expr);
      expect(names.length, r.alert).toBeGreaterThan(0);
      for (const n of names) expect(fams.has(n), `${r.alert}: ${n} is not exported`).toBe(true);
    }
  });

  it('DerpProbeCheckFailing selects exactly the bad results of the report', () => {
    const bad = fams.get('derp_probe_check_status')!.metrics.filter((m) => m.labels?.status === 'bad' && m.value === '1');
    const expected = fullReport().nodes.flatMap((n) => n.checks.filter((c) => c.status === 'bad').map((c) => `${n.node} ${c.check} ${c.peer ?? ''}`));
    expect(bad.map((m) => `${m.labels!.node} ${m.labels!.check} ${m.labels!.peer}`).sort()).toEqual(expected.sort());
  });
});
