/**
 * ProbeReport fixtures for the output tests (JUnit, schema, continuous mode): describe nodes and their
 * checks, get a consistent report (node status, summary, overall status computed as the runner does).
 */
import {
  PROBE_SCHEMA,
  type CheckResult,
  type CheckStatus,
  type NodeReport,
  type ProbeReport,
} from '../../src/lib/probe/types.js';

export interface NodeSpec {
  regionId: number;
  regionCode: string;
  node: string;
  hostname?: string;
  checks: Array<Partial<CheckResult> & Pick<CheckResult, 'check' | 'status'>>;
}

const RANK: Record<Exclude<CheckStatus, 'skipped'>, number> = { good: 0, warn: 1, bad: 2 };

function worst(statuses: CheckStatus[]): Exclude<CheckStatus, 'skipped'> {
  let w: Exclude<CheckStatus, 'skipped'> = 'good';
  for (const s of statuses) if (s !== 'skipped' && RANK[s] > RANK[w]) w = s;
  return w;
}

export function check(c: NodeSpec['checks'][number]): CheckResult {
  return { message: `${c.check} ${c.status}`, durationMs: 12.5, ...c };
}

export function buildReport(nodes: NodeSpec[], over: Partial<ProbeReport> = {}): ProbeReport {
  const reports: NodeReport[] = nodes.map((n) => {
    const hostname = n.hostname ?? `${n.node}.example.net`;
    const checks = n.checks.map(check);
    return { regionId: n.regionId, regionCode: n.regionCode, node: n.node, hostname, url: `https://${hostname}/derp`, checks, status: worst(checks.map((c) => c.status)) };
  });
  const all = reports.flatMap((r) => r.checks);
  const count = (s: CheckStatus): number => all.filter((c) => c.status === s).length;
  return {
    schema: PROBE_SCHEMA,
    version: '0.1.0',
    startedAt: '2026-12-01T10:00:00.000Z',
    finishedAt: '2026-12-01T10:00:02.500Z',
    durationMs: 2500,
    source: { map: 'https://derp.example.net/derpmap.json' },
    checks: ['stun4', 'stun6', 'tls', 'http', 'derp', 'packet', 'mesh'],
    transports: ['upgrade', 'websocket'],
    nodes: reports,
    summary: { nodes: reports.length, checks: all.length, good: count('good'), warn: count('warn'), bad: count('bad'), skipped: count('skipped') },
    status: worst(reports.map((r) => r.status)),
    ...over,
  };
}

/** Two regions, three nodes: every status, every unit, mesh in both directions, details. */
export function fullReport(): ProbeReport {
  return buildReport([
    {
      regionId: 900,
      regionCode: 'fra',
      node: '900a',
      checks: [
        { check: 'stun4', status: 'good', value: 11.2, unit: 'ms', message: 'mapped 203.0.113.9:41641', details: { mapped: '203.0.113.9:41641' } },
        { check: 'stun6', status: 'skipped', message: 'the map gives the node no IPv6 address' },
        { check: 'tls', status: 'warn', value: 9, unit: 'days', message: 'certificate expires in 9 days (warn below 14)', details: { notAfter: '2026-12-10T00:00:00.000Z' } },
        { check: 'http', status: 'good', value: 8, unit: 'ms', message: '/derp/probe 200, /generate_204 ok' },
        { check: 'derp', status: 'good', value: 31, unit: 'ms', message: 'upgrade 31 ms, websocket 35 ms', details: { upgradeMs: 31, websocketMs: 35 } },
        { check: 'packet', status: 'good', value: 1.4, unit: 'ms', message: '10/10 packets, p50 1.4 ms', details: { p50Ms: 1.4, maxMs: 2.2, loss: 0 } },
        { check: 'mesh', status: 'bad', peer: '900b', message: 'no packet from 900a reached 900b within 5000 ms', details: { timeoutMs: 5000 } },
        { check: 'bandwidth', status: 'good', value: 412.5, unit: 'Mbit/s', message: '1 MiB in 20 ms' },
      ],
    },
    {
      regionId: 900,
      regionCode: 'fra',
      node: '900b',
      checks: [
        { check: 'stun4', status: 'good', value: 10.1, unit: 'ms' },
        { check: 'tls', status: 'good', value: 80, unit: 'days' },
        { check: 'mesh', status: 'good', peer: '900a', value: 2.1, unit: 'ms' },
      ],
    },
    {
      regionId: 901,
      regionCode: 'nyc',
      node: '901a',
      checks: [
        { check: 'stun4', status: 'bad', message: 'no STUN answer from 198.51.100.7:3478 within 3000 ms' },
        { check: 'derp', status: 'good', value: 90, unit: 'ms' },
      ],
    },
  ]);
}
