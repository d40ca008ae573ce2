/**
 * The soak's per-second samples and their CSV form. One row per second; the header is the column list
 * below, each name carrying its unit. Empty cells are readings that failed (e.g. a /metrics scrape).
 */

export interface Sample {
  /** Seconds since the load started. */
  t: number;
  /** Server resident set size (VmRSS of /proc/<pid>/status), MiB. */
  rssMiB: number;
  /** V8 heap in use and memory outside it (Buffers, ArrayBuffers), MiB, from /metrics nodejs_*. */
  heapUsedMiB: number;
  externalMiB: number;
  /** V8 heap committed (nodejs_heap_size_total_bytes), MiB: what the heap costs RSS, used or not. */
  heapTotalMiB: number;
  /** Server event-loop delay p99 over the last second, ms (prom-client, its sampling interval taken off). */
  loopP99Ms: number;
  /** Open descriptors of the server (/proc/<pid>/fd entries). */
  fds: number;
  /** Packets of the steady load delivered per second. */
  deliveredPps: number;
  /** Connect + handshake + close cycles of the churn per second. */
  churnPerS: number;
  /** TCP connections open on the relay port (derp_open_connections), any stage. */
  connections: number;
}

export type SeriesKey = Exclude<keyof Sample, 't'>;

/** CSV columns, in order: name (with unit) and the Sample field. */
export const CSV_COLUMNS: ReadonlyArray<{ name: string; key: keyof Sample; digits: number }> = [
  { name: 't_s', key: 't', digits: 1 },
  { name: 'rss_mib', key: 'rssMiB', digits: 2 },
  { name: 'heap_used_mib', key: 'heapUsedMiB', digits: 2 },
  { name: 'external_mib', key: 'externalMiB', digits: 2 },
  { name: 'heap_total_mib', key: 'heapTotalMiB', digits: 2 },
  { name: 'eventloop_p99_ms', key: 'loopP99Ms', digits: 2 },
  { name: 'fds', key: 'fds', digits: 0 },
  { name: 'delivered_pps', key: 'deliveredPps', digits: 0 },
  { name: 'churn_per_s', key: 'churnPerS', digits: 0 },
  { name: 'connections', key: 'connections', digits: 0 },
];

export const CSV_HEADER = CSV_COLUMNS.map((c) => c.name).join(',');

export function toCsv(samples: readonly Sample[]): string {
  const rows = samples.map((s) => CSV_COLUMNS.map((c) => (Number.isFinite(s[c.key]) ? s[c.key].toFixed(c.digits) : '')).join(','));
  return `${[CSV_HEADER, ...rows].join('\n')}\n`;
}

/** Reads toCsv's output back (tests, and re-plotting a saved run); empty cells become NaN. */
export function fromCsv(text: string): Sample[] {
  const [head, ...lines] = text.trim().split('\n');
  if (head !== CSV_HEADER) throw new Error(`not a soak CSV: header is ${JSON.stringify(head)}, expected ${JSON.stringify(CSV_HEADER)}`);
  return lines.map((line) => {
    const cells = line.split(',');
    const s = {} as Sample;
    CSV_COLUMNS.forEach((c, i) => {
      const v = cells[i] ?? '';
      s[c.key] = v === '' ? NaN : Number(v);
    });
    return s;
  });
}
