import { Command, Flags } from '@oclif/core';
import Table from 'cli-table3';
import { DEFAULT_DERP_MAP_URL, loadDerpMap, regionsOf, type DERPMap } from '../lib/derpmap/index.js';
import { mapExitCode } from '../lib/derpmap/exit.js';
import { describeError } from '../lib/errors.js';
import { progress } from '../lib/cli/progress.js';
import { formatTailscaleReport, NetcheckHistory, REPORT_TIMEOUT_MS, runNetcheck, type NetcheckReport } from '../lib/netcheck/index.js';
import { parseDuration } from '../lib/util/duration.js';

export const EXIT_NETCHECK_OK = 0;
export const EXIT_NETCHECK_USAGE = 2;
/** Neither STUN nor HTTPS reached any region. */
export const EXIT_NETCHECK_UNREACHABLE = 7;

/** Version marker of the --json document (schemas/netcheck.schema.json). */
export const NETCHECK_SCHEMA_ID = 'derp.netcheck/v1';

export const NETCHECK_FORMATS = ['text', 'json', 'tailscale'] as const;
export type NetcheckFormat = (typeof NETCHECK_FORMATS)[number];

/** Latency like Go's Duration rounded to 0.1 ms (`11.2ms`, `1.2s`). */
export function formatLatency(ms: number | null): string {
  if (ms === null) return '';
  return ms >= 1000 ? `${Math.round(ms / 100) / 10}s` : `${Math.round(ms * 10) / 10}ms`;
}

export default class Netcheck extends Command {
  static override description = `Measure latency to every DERP region (STUN, HTTPS fallback) and pick the nearest, like \`tailscale netcheck\`

Every region is probed at once: up to 3 STUN requests per region and address family (0, 100, 200 ms), all
from one UDP socket per family so a NAT that maps per destination is detected. Regions STUN cannot reach
are timed with GET /derp/latency-check on an established connection. A report takes at most --timeout.
With --every the home region keeps hysteresis across reports (a new one must be ≥ 10 ms and ≥ 1/3 faster).

--json (= --format json) prints one object per line per report (latencies in milliseconds; schema
schemas/netcheck.schema.json):
  type Report = {
    schema: "derp.netcheck/v1"; now: string; durationMs: number; udp: boolean; ipv4: boolean; ipv6: boolean;
    ipv4CanSend: boolean; ipv6CanSend: boolean; osHasIPv6: boolean;
    mappingVariesByDestIP: boolean | null; preferredDERP: number /* 0 = none */;
    regionLatency: Record<id, ms>; regionV4Latency: Record<id, ms>; regionV6Latency: Record<id, ms>;
    globalV4Counters: Record<"ip:port", n>; globalV6Counters: Record<"[ip]:port", n>;
    globalV4: string; globalV6: string; captivePortal: boolean | null;
    regions: { regionId: number; regionCode: string; regionName: string; latencyMs: number | null;
      v4LatencyMs: number | null; v6LatencyMs: number | null; method: "stun" | "https" | null;
      node: string | null; probes: number; errors: string[] }[] }
  e.g. {"schema":"derp.netcheck/v1","now":"2025-06-01T12:34:56.789Z","durationMs":212.5,"udp":true,"ipv4":true,"ipv6":false,...,
        "mappingVariesByDestIP":false,"preferredDERP":1,"regionLatency":{"1":11.234},...,
        "globalV4":"203.0.113.7:41641","globalV6":"","captivePortal":null,
        "regions":[{"regionId":1,"regionCode":"nyc","regionName":"New York City","latencyMs":11.234,
        "v4LatencyMs":11.234,"v6LatencyMs":null,"method":"stun","node":"1a","probes":1,"errors":[]}]}

--format tailscale prints each report as \`tailscale netcheck --format=json\` does: Tailscale's netcheck.Report
(Now, UDP, IPv4, …, PreferredDERP, RegionLatency in integer nanoseconds keyed by region ID, GlobalV4 as
"ip:port"), tab-indented; UPnP/PMP/PCP and ICMPv4 are false (not probed) (schema
schemas/netcheck-tailscale.schema.json).

Exit codes:
  0  at least one region answered (always 0 when --every is stopped with Ctrl-C)
  2  bad usage
  5  bad map (syntax or validation)
  6  cannot fetch or read the map
  7  nothing reachable: no STUN and no HTTPS answer from any region`;

  static override examples = [
    '<%= config.bin %> netcheck',
    '<%= config.bin %> netcheck --map derpmap.json --json',
    '<%= config.bin %> netcheck --format tailscale | jq .PreferredDERP',
    '<%= config.bin %> netcheck --every 30s --region nyc --region 2',
  ];

  static override flags = {
    map: Flags.string({ description: 'DERP map: URL, file or "-" (stdin)', default: DEFAULT_DERP_MAP_URL }),
    json: Flags.boolean({ description: 'one JSON object per report on stdout (same as --format json)' }),
    format: Flags.option({ options: NETCHECK_FORMATS, description: 'text (default), json (our report) or tailscale (the JSON of `tailscale netcheck --format=json`)' })(),
    every: Flags.string({ description: 'repeat every <duration> (e.g. 30s) until interrupted' }),
    timeout: Flags.string({ description: 'cap for one report', default: `${REPORT_TIMEOUT_MS / 1000}s` }),
    region: Flags.string({ description: 'only this region (ID or code); repeatable', multiple: true }),
    'ipv4-only': Flags.boolean({ description: 'probe over IPv4 only', exclusive: ['ipv6-only'] }),
    'ipv6-only': Flags.boolean({ description: 'probe over IPv6 only', exclusive: ['ipv4-only'] }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Netcheck);
    if (flags.json && flags.format !== undefined && flags.format !== 'json') this.error(`--json conflicts with --format ${flags.format} (--json is --format json)`, { exit: EXIT_NETCHECK_USAGE });
    const format: NetcheckFormat = flags.json ? 'json' : (flags.format ?? 'text');
    const every = flags.every === undefined ? undefined : parseDuration(flags.every);
    if (flags.every !== undefined && every === undefined) this.error(`--every: bad duration ${JSON.stringify(flags.every)} (e.g. 30s, 500ms, 2m)`, { exit: EXIT_NETCHECK_USAGE });
    const timeout = parseDuration(flags.timeout);
    if (timeout === undefined) this.error(`--timeout: bad duration ${JSON.stringify(flags.timeout)}`, { exit: EXIT_NETCHECK_USAGE });

    let map: DERPMap;
    try {
      map = (await loadDerpMap(flags.map)).map;
    } catch (err) {
      this.error(describeError(err), { exit: mapExitCode(err) });
    }
    if (flags.region?.length) map = this.selectRegions(map, flags.region);

    const ctl = new AbortController();
    const onSigint = (): void => ctl.abort();
    process.on('SIGINT', onSigint);
    const history = new NetcheckHistory();
    const spin = progress(format === 'text');
    try {
      for (;;) {
        let report: NetcheckReport;
        try {
          spin.step('Probing DERP regions…');
          report = await runNetcheck(map, {
            signal: ctl.signal,
            reportTimeoutMs: timeout,
            ipv4: !flags['ipv6-only'],
            ipv6: flags['ipv4-only'] ? false : flags['ipv6-only'] ? true : 'auto',
            history,
            onProgress: (done, total, r) => spin.step(`Probing DERP regions… ${done}/${total} (${r.regionCode})`),
          });
          spin.stop();
        } catch (err) {
          spin.stop();
          if (ctl.signal.aborted && every !== undefined) return;
          throw err;
        }
        this.log(format === 'json' ? JSON.stringify({ schema: NETCHECK_SCHEMA_ID, ...report }) : format === 'tailscale' ? formatTailscaleReport(report) : this.render(map, report));
        if (every === undefined) {
          if (Object.keys(report.regionLatency).length === 0) this.exit(EXIT_NETCHECK_UNREACHABLE);
          return;
        }
        try {
          await new Promise<void>((resolve, reject) => {
            const t = setTimeout(resolve, every);
            ctl.signal.addEventListener('abort', () => (clearTimeout(t), reject(ctl.signal.reason)), { once: true });
          });
        } catch {
          return; // Ctrl-C between reports ends --every normally
        }
      }
    } finally {
      process.off('SIGINT', onSigint);
    }
  }

  private selectRegions(map: DERPMap, wanted: string[]): DERPMap {
    const regions: DERPMap['regions'] = {};
    for (const w of wanted) {
      const r = regionsOf(map).find((x) => String(x.regionId) === w || x.regionCode.toLowerCase() === w.toLowerCase());
      if (!r) this.error(`--region ${JSON.stringify(w)}: no such region ID or code in the map`, { exit: EXIT_NETCHECK_USAGE });
      regions[r.regionId] = r;
    }
    return { ...map, regions };
  }

  private render(map: DERPMap, r: NetcheckReport): string {
    const lines = ['', 'Report:', `\t* Time: ${r.now}`, `\t* UDP: ${r.udp}`];
    lines.push(`\t* IPv4: ${r.ipv4 ? (r.globalV4 ? `yes, ${r.globalV4}` : '(no addr found)') : 'no'}`);
    lines.push(`\t* IPv6: ${r.globalV6 ? `yes, ${r.globalV6}` : r.ipv6 ? '(no addr found)' : r.osHasIPv6 ? 'no, but OS has support' : 'no, unavailable in OS'}`);
    lines.push(`\t* MappingVariesByDestIP: ${r.mappingVariesByDestIP ?? ''}`);
    if (r.captivePortal !== null) lines.push(`\t* CaptivePortal: ${r.captivePortal}`);
    let nearest: string;
    if (Object.keys(r.regionLatency).length === 0) nearest = 'unknown (no response to latency probes)';
    else if (r.preferredDERP === 0) nearest = '[none]';
    else nearest = map.regions[r.preferredDERP]?.regionName ?? `${r.preferredDERP} (region not found in map)`;
    lines.push(`\t* Nearest DERP: ${nearest}`);
    const table = new Table({ head: ['ID', 'Code', 'Name', 'Latency', 'Method', 'Node'], style: { head: [], border: [] } });
    const sorted = [...r.regions].sort((a, b) => (a.latencyMs ?? Infinity) - (b.latencyMs ?? Infinity) || a.regionId - b.regionId);
    for (const g of sorted) {
      table.push([String(g.regionId), g.regionCode, g.regionName, formatLatency(g.latencyMs), g.method ?? (g.errors.length ? 'unreachable' : '-'), g.node ?? '']);
    }
    lines.push('', table.toString());
    return lines.join('\n');
  }
}
