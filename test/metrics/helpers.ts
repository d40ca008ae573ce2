/** Scrape helpers for the metrics tests: real HTTP GETs, parsed by an independent Prometheus text parser. */
import parsePrometheusTextFormat, { type PromFamily } from 'parse-prometheus-text-format';
import { parser } from '@prometheus-io/lezer-promql';

export type Families = Map<string, PromFamily>;

export async function scrape(url: string): Promise<Families> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
  return parseText(await res.text());
}

/**
 * The parser keeps only one label set per histogram (it flattens them); so histogram series are parsed
 * a second time without their TYPE lines, which yields `<name>_bucket`, `_sum`, `_count` as untyped
 * families with every label set.
 */
export function parseText(text: string): Families {
  const fams: Families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
  const histograms = new Set([...fams.values()].filter((f) => f.type === 'HISTOGRAM').map((f) => f.name));
  const untyped = text
    .split('\n')
    .filter((l) => !/^# (TYPE|HELP) /.test(l) || !histograms.has(l.split(' ')[2]!))
    .join('\n');
  for (const f of parsePrometheusTextFormat(untyped)) {
    const base = f.name.replace(/_(bucket|sum|count)$/, '');
    if (base === f.name || !histograms.has(base)) continue;
    // Series of one histogram alternate (bucket…, sum, count per label set): gather them.
    const seen = fams.get(f.name);
    if (seen === undefined) fams.set(f.name, { ...f, metrics: [...f.metrics] });
    else seen.metrics.push(...f.metrics);
  }
  return fams;
}

/** Sum of a family's sample values whose labels include `labels`; undefined when the family is absent. */
export function value(fams: Families, name: string, labels: Record<string, string> = {}): number | undefined {
  const f = fams.get(name);
  if (f === undefined) return undefined;
  let sum = 0;
  for (const m of f.metrics) {
    if (Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)) sum += Number(m.value ?? m.count ?? 0);
  }
  return sum;
}

/** A histogram's observation count (over all label sets matching `labels`). */
export function histogramCount(fams: Families, name: string, labels: Record<string, string> = {}): number {
  const f = fams.get(name);
  if (f === undefined || f.type !== 'HISTOGRAM') throw new Error(`${name} is not an exported histogram`);
  return value(fams, `${name}_count`, labels) ?? 0;
}

/** Scrapes until `pred` holds (bounded by attempts, not by time thresholds in the assertion). */
export async function scrapeUntil(url: string, pred: (f: Families) => boolean, what: string, attempts = 200): Promise<Families> {
  for (let i = 0; i < attempts; i++) {
    const fams = await scrape(url);
    if (pred(fams)) return fams;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`metrics never showed ${what}`);
}

/** Metric names a PromQL expression selects; throws on a syntax error (lezer marks them as ⚠ nodes). */
export function promqlMetrics(q: string): string[] {
  const names: string[] = [];
  const errors: number[] = [];
  parser.parse(q).iterate({
    enter(n) {
      if (n.type.isError) errors.push(n.from);
      if (n.name === 'Identifier' && n.node.parent?.name === 'VectorSelector') names.push(q.slice(n.from, n.to));
    },
  });
  if (errors.length > 0) throw new Error(`PromQL syntax error at offset ${errors[0]} in ${JSON.stringify(q)}`);
  return names;
}
