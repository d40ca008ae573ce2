// The JUnit XML read back with an independent XML parser: structure, counts, names, messages, escaping.
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReportWriteError } from '../../src/lib/errors.js';
import { probeReportToJUnit, writeJUnitReport } from '../../src/lib/probe/junit.js';
import type { ProbeReport } from '../../src/lib/probe/types.js';
import { buildReport, fullReport } from './fixtures.js';

interface Prop { name: string; value: string }
interface Case {
  classname: string;
  name: string;
  time: string;
  failure?: { message?: string; type?: string; '#text'?: string };
  skipped?: { message?: string } | string;
  'system-out'?: string;
  properties?: { property: Prop[] };
}
interface Suite { name: string; tests: string; failures: string; skipped: string; errors: string; timestamp?: string; properties?: { property: Prop[] }; testcase?: Case[] }
interface Doc { testsuites: { name: string; tests: string; failures: string; skipped: string; testsuite?: Suite[] } }

function parse(xml: string): Doc {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new Error(`not well-formed XML: ${JSON.stringify(valid.err)}\n${xml}`);
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '',
    parseAttributeValue: false,
    parseTagValue: false,
    // Numeric character references (&#x9; for a tab in an attribute) are decoded only with this on.
    htmlEntities: true,
    isArray: (name) => ['testsuite', 'testcase', 'property'].includes(name),
  });
  return parser.parse(xml) as Doc;
}

const props = (p: { property: Prop[] } | undefined): Record<string, string> => Object.fromEntries((p?.property ?? []).map((x) => [x.name, x.value]));
const cases = (d: Doc): Case[] => (d.testsuites.testsuite ?? []).flatMap((s) => s.testcase ?? []);

describe('probeReportToJUnit', () => {
  const report = fullReport();
  const doc = parse(probeReportToJUnit(report));

  it('has one suite per region, named "region <id> <code>", with version and start time', () => {
    const suites = doc.testsuites.testsuite ?? [];
    expect(suites.map((s) => s.name)).toEqual(['region 900 fra', 'region 901 nyc']);
    for (const s of suites) {
      expect(s.timestamp).toBe('2026-12-01T10:00:00');
      expect(props(s.properties)).toMatchObject({ 'derp.version': '0.1.0', 'derp.startedAt': report.startedAt, 'derp.map': report.source.map });
    }
  });

  it('has one case per node × check; counts match the report summary', () => {
    const all = report.nodes.flatMap((n) => n.checks);
    expect(cases(doc)).toHaveLength(all.length);
    expect(Number(doc.testsuites.tests)).toBe(report.summary.checks);
    expect(Number(doc.testsuites.failures)).toBe(report.summary.bad);
    expect(Number(doc.testsuites.skipped)).toBe(report.summary.skipped);
    const [fra, nyc] = doc.testsuites.testsuite!;
    expect([fra!.tests, fra!.failures, fra!.skipped]).toEqual(['11', '1', '1']);
    expect([nyc!.tests, nyc!.failures, nyc!.skipped]).toEqual(['2', '1', '0']);
    expect(cases(doc).filter((c) => c.failure !== undefined)).toHaveLength(report.summary.bad);
    expect(cases(doc).filter((c) => c.skipped !== undefined)).toHaveLength(report.summary.skipped);
  });

  it('names cases by check (mesh by peer), classes by region and node, time in seconds', () => {
    const fra = doc.testsuites.testsuite![0]!.testcase!;
    expect(fra.map((c) => `${c.classname} ${c.name}`)).toEqual([
      ...['stun4', 'stun6', 'tls', 'http', 'derp', 'packet', 'mesh → 900b', 'bandwidth'].map((n) => `derp.fra.900a ${n}`),
      ...['stun4', 'tls', 'mesh → 900a'].map((n) => `derp.fra.900b ${n}`),
    ]);
    expect(fra[0]!.time).toBe('0.013');
  });

  it('carries the check message on failures (details as the body), the reason on skipped', () => {
    const byName = new Map(cases(doc).map((c) => [`${c.classname} ${c.name}`, c]));
    const mesh = byName.get('derp.fra.900a mesh → 900b')!;
    expect(mesh.failure?.message).toBe('no packet from 900a reached 900b within 5000 ms');
    expect(mesh.failure?.type).toBe('mesh');
    expect(mesh.failure?.['#text']).toBe('timeoutMs: 5000');
    expect(byName.get('derp.nyc.901a stun4')!.failure?.message).toBe('no STUN answer from 198.51.100.7:3478 within 3000 ms');
    expect(byName.get('derp.fra.900a stun6')!.skipped).toEqual({ message: 'the map gives the node no IPv6 address' });
  });

  it('lets a warning pass, visibly: no failure, a warning property and system-out', () => {
    const tls = cases(doc).find((c) => c.classname === 'derp.fra.900a' && c.name === 'tls')!;
    expect(tls.failure).toBeUndefined();
    expect(tls.skipped).toBeUndefined();
    expect(props(tls.properties)).toMatchObject({ status: 'warn', warning: 'certificate expires in 9 days (warn below 14)', value: '9', unit: 'days' });
    expect(tls['system-out']).toBe('warning: certificate expires in 9 days (warn below 14)\nvalue: 9 days\nnotAfter: 2026-12-10T00:00:00.000Z');
  });

  it('keeps <, &, quotes and non-ASCII, and makes control characters and "]]>" safe', () => {
    const nasty = `a < b && "c" 'd' > e — Grüße, 東京 🚀 \u0007bell \u0000nul \uD800lone ]]> x ]]> y\tz`;
    const r = buildReport([
      { regionId: 7, regionCode: 'x<&>"y', node: 'n"1', checks: [
        { check: 'tls', status: 'bad', message: nasty, details: { note: nasty } },
        { check: 'derp', status: 'skipped', message: nasty },
        { check: 'http', status: 'warn', message: nasty },
      ] },
    ]);
    const d = parse(probeReportToJUnit(r));
    const safe = nasty.replace('\u0007', '\\u0007').replace('\u0000', '\\u0000').replace('\uD800', '\\ud800');
    expect(d.testsuites.testsuite![0]!.name).toBe('region 7 x<&>"y');
    const [bad, skipped, warn] = d.testsuites.testsuite![0]!.testcase!;
    expect(bad!.classname).toBe('derp.x<&>"y.n"1');
    expect(bad!.failure?.message).toBe(safe);
    expect(bad!.failure?.['#text']).toBe(`note: ${safe.replaceAll(']]>', ']] >')}`);
    expect((skipped!.skipped as { message: string }).message).toBe(safe);
    expect(props(warn!.properties).warning).toBe(safe);
    expect(warn!['system-out']).toBe(`warning: ${safe.replaceAll(']]>', ']] >')}`);
  });

  it('writes an empty report as an empty <testsuites>', () => {
    const d = parse(probeReportToJUnit(buildReport([])));
    expect(d.testsuites.tests).toBe('0');
    expect(d.testsuites.testsuite).toBeUndefined();
  });
});

describe('writeJUnitReport', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'derp-junit-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the document (creating the directory) and leaves no temporary file', async () => {
    const file = join(dir, 'reports', 'derp-probe.xml');
    const report: ProbeReport = fullReport();
    await writeJUnitReport(file, report);
    expect(await readFile(file, 'utf8')).toBe(probeReportToJUnit(report));
    expect(await readdir(join(dir, 'reports'))).toEqual(['derp-probe.xml']);
  });

  it('fails with ReportWriteError naming the file, and cleans up', async () => {
    const target = join(dir, 'is-a-dir');
    await mkdir(target);
    await writeFile(join(target, 'keep'), 'x');
    const err = await writeJUnitReport(target, fullReport()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReportWriteError);
    expect((err as ReportWriteError).code).toBe('DERP_ERR_REPORT_WRITE');
    expect((err as ReportWriteError).file).toBe(target);
    expect((err as Error).message).toContain(target);
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);

    const under = join(dir, 'is-a-dir', 'keep', 'x.xml');
    const err2 = await writeJUnitReport(under, fullReport()).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(ReportWriteError);
    expect((err2 as Error).message).toMatch(/x\.xml: cannot write the report: .*(ENOTDIR|EEXIST)/);
  });
});
