/**
 * `derp probe --junit <file>`: the ProbeReport as JUnit XML, the format GitHub (through a report action),
 * GitLab and Jenkins display. One <testsuite> per region, one <testcase> per node × check (mesh: per
 * peer); bad → <failure>, skipped → <skipped message>, warn → a passing case that carries the warning.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import junitModule, { type Builder, type TestCase } from 'junit-report-builder';
import { ReportWriteError, describeError } from '../errors.js';
import type { CheckResult, NodeReport, ProbeReport } from './types.js';

/** The root element's name attribute. */
export const JUNIT_ROOT_NAME = 'derp probe';

type Element = ReturnType<TestCase['build']>;

// The package's types declare `export default`, but its CommonJS build sets module.exports to the builder,
// which is what Node's ESM import hands over; accept either shape.
const junitExports: unknown = junitModule;
const junit: Builder = (junitExports as { default?: Builder }).default ?? (junitExports as Builder);

// XML 1.0 cannot carry these at all (not even as character references): C0 controls other than tab, LF
// and CR, U+FFFE/U+FFFF, and lone surrogates. Shown as \uXXXX so the reader still sees something was there.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const INVALID_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Text made safe for an XML attribute or text node (xmlbuilder escapes &, <, >, quotes). */
export function xmlSafe(text: string): string {
  return text.replace(INVALID_XML, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Text for a CDATA section: junit-report-builder splits only the first "]]>", so none may reach it. */
function cdataSafe(text: string): string {
  return xmlSafe(text).replaceAll(']]>', ']] >');
}

/** `mesh → 900b` for mesh, else the check's name. */
export function junitCaseName(c: CheckResult): string {
  return c.check === 'mesh' && c.peer !== undefined ? `mesh → ${c.peer}` : c.check;
}

/** `derp.<regionCode>.<node>`: groups a node's cases in every viewer. */
export function junitClassName(n: NodeReport): string {
  return `derp.${n.regionCode || `region${n.regionId}`}.${n.node}`;
}

/** The value and details as lines, for the failure body and system-out. */
function describeCheck(c: CheckResult): string {
  const lines: string[] = [];
  if (c.value !== undefined) lines.push(`value: ${c.value}${c.unit === undefined ? '' : ` ${c.unit}`}`);
  for (const [k, v] of Object.entries(c.details ?? {})) lines.push(`${k}: ${String(v)}`);
  return lines.join('\n');
}

function seconds(ms: number): number {
  return Math.round(Math.max(0, ms)) / 1000;
}

function addCase(tc: TestCase, node: NodeReport, c: CheckResult): void {
  tc.className(xmlSafe(junitClassName(node))).name(xmlSafe(junitCaseName(c))).time(seconds(c.durationMs));
  tc.property('status', c.status);
  if (c.value !== undefined) tc.property('value', String(c.value));
  if (c.unit !== undefined) tc.property('unit', c.unit);
  const text = describeCheck(c);
  switch (c.status) {
    case 'bad':
      tc.failure(xmlSafe(c.message) || `${c.check} failed`, c.check);
      // stacktrace() is the library's only way to put text inside <failure>.
      if (text !== '') tc.stacktrace(cdataSafe(text));
      break;
    case 'skipped': {
      tc.skipped();
      // The library writes a bare <skipped/>; the reason goes on it as the message attribute.
      const reason = xmlSafe(c.message);
      const build = tc.build.bind(tc);
      tc.build = (parent): Element => {
        const el = build(parent);
        for (const child of el.children) if (isElement(child, 'skipped')) child.att('message', reason);
        return el;
      };
      break;
    }
    case 'warn':
      tc.property('warning', xmlSafe(c.message));
      tc.standardOutput(cdataSafe(`warning: ${c.message}${text === '' ? '' : `\n${text}`}`));
      break;
    case 'good':
      tc.standardOutput(cdataSafe(`${c.message}${text === '' ? '' : `\n${text}`}`));
      break;
  }
}

function isElement(n: Element['children'][number], name: string): n is Element {
  return (n as { name?: unknown }).name === name;
}

/** The report as a JUnit XML document (UTF-8). */
export function probeReportToJUnit(report: ProbeReport): string {
  const b = junit.newBuilder().name(JUNIT_ROOT_NAME);
  // Regions in first-seen order; nodes keep map order within each.
  const regions = new Map<number, NodeReport[]>();
  for (const n of report.nodes) {
    const list = regions.get(n.regionId);
    if (list === undefined) regions.set(n.regionId, [n]);
    else list.push(n);
  }
  // JUnit's timestamp has no zone; UTC, so the file does not depend on the machine's TZ.
  const started = new Date(report.startedAt);
  const timestamp = Number.isNaN(started.getTime()) ? undefined : started.toISOString().slice(0, 19);
  for (const [id, nodes] of regions) {
    const suite = b.testSuite().name(xmlSafe(`region ${id} ${nodes[0]!.regionCode}`));
    if (timestamp !== undefined) suite.timestamp(timestamp);
    // Checks run concurrently, so this is the work done, not the wall time.
    suite.time(seconds(nodes.reduce((sum, n) => sum + n.checks.reduce((s, c) => s + c.durationMs, 0), 0)));
    suite.property('derp.version', xmlSafe(report.version));
    suite.property('derp.startedAt', xmlSafe(report.startedAt));
    if (report.source.map !== undefined) suite.property('derp.map', xmlSafe(report.source.map));
    for (const n of nodes) for (const c of n.checks) addCase(suite.testCase(), n, c);
  }
  return b.build();
}

/**
 * Writes `data` to `file` through a temporary file in the same directory and a rename, so a reader never
 * sees half a report. Creates the directory. Fails with ReportWriteError naming the file.
 */
export async function writeReportFile(file: string, data: string): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`);
  try {
    await mkdir(dirname(file), { recursive: true });
    await writeFile(tmp, data, { encoding: 'utf8', mode: 0o644 });
    await rename(tmp, file);
  } catch (cause) {
    let note = '';
    try {
      await rm(tmp, { force: true });
    } catch (rmErr) {
      note = ` (and the temporary file ${tmp} could not be removed: ${describeError(rmErr)})`;
    }
    throw new ReportWriteError(file, `cannot write the report: ${describeError(cause)}${note}`, { cause });
  }
}

export async function writeJUnitReport(file: string, report: ProbeReport): Promise<void> {
  await writeReportFile(file, probeReportToJUnit(report));
}
