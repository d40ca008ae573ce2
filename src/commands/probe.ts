import { Command, Flags } from '@oclif/core';
import { progress } from '../lib/cli/progress.js';
import { loadDerpMap } from '../lib/derpmap/index.js';
import { mapExitCode } from '../lib/derpmap/exit.js';
import { ConfigError, KeyFileError, describeError } from '../lib/errors.js';
import { loadOrCreateKeyFile } from '../lib/keys/keyfile.js';
import {
  CHECK_NAMES,
  DEFAULT_CHECK_TIMEOUT_MS,
  DEFAULT_CONCURRENCY,
  DEFAULT_FAIL_DAYS,
  DEFAULT_PACKETS,
  DEFAULT_WARN_DAYS,
  DEFAULT_CHECKS,
  probeRegionsFromMap,
  probeRegionsFromServers,
  runProbe,
  type CheckName,
  type ProbeOptions,
  type ProbeRegion,
  type ProbeReport,
  type ProbeTransport,
} from '../lib/probe/index.js';
import { DEFAULT_PROBE_LISTEN, ProbeMonitor, parseProbeListen, type ProbeRunOutcome } from '../lib/probe/continuous.js';
import { writeJUnitReport } from '../lib/probe/junit.js';
import { renderTable, summaryLine } from '../lib/probe/render.js';
import type { NodePrivateKey } from '../lib/protocol/keys.js';
import { JsonLogger, TextLogger, type Logger } from '../lib/util/logger.js';
import { parseDuration } from '../lib/util/duration.js';

export const EXIT_PROBE_OK = 0;
/** A check failed (or warned, with --strict). */
export const EXIT_PROBE_FAILED = 1;
export const EXIT_PROBE_USAGE = 2;
/** The --junit file cannot be written, or the --listen address cannot be bound. */
export const EXIT_PROBE_OUTPUT = 3;
/** Shortest --every: a run of a large map takes seconds; probing faster only loads the relays. */
const MIN_EVERY_MS = 1_000;

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1 << 10, mib: 1 << 20, gib: 1 << 30 };

/** "1MiB", "500KB", "64k"-free sizes: a number and an optional B/KB/MB/GB (10³) or KiB/MiB/GiB (2¹⁰) unit. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?$/i.exec(text.trim());
  if (!m) return undefined;
  const n = Math.floor(Number(m[1]) * SIZE_UNITS[(m[2] ?? '').toLowerCase()]!);
  return n > 0 ? n : undefined;
}

/** Comma lists and repeated flags alike: `--checks tls,http --checks derp`. */
function listOf(values: string[] | undefined): string[] | undefined {
  if (!values) return undefined;
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
}

export default class Probe extends Command {
  static override description = `Probe DERP relays for CI: STUN, TLS, HTTP, DERP handshake, packets, mesh and bandwidth per node

Targets are every node of a DERP map (--map, narrowed by --region) or the --server URLs (probed as one
region 0, so their mesh is checked too; STUN assumed at --stun-port on each URL's host). Per node, in order:
  stun4, stun6  Binding round trip (ms) and the mapped address; skipped without STUN or that address family
  tls           chain (system roots + --ca-file), name (CertName, else the host name) or sha256-raw: pin;
                value = days to expiry, warn ≤ --warn-days, bad ≤ --fail-days; skipped on plain-HTTP nodes
  http          GET /derp/probe = 200, /generate_204 challenge echoed (also port 80 where CanPort80),
                value = GET /derp/latency-check time
  derp          handshake over each --transports; value = the slowest time to ServerInfo
  packet        two clients on the node echo --packets packets: RTT p50 (max, loss in details); any loss is bad
  mesh          per other node of the region: a client there must receive a packet sent from this node
  bandwidth     opt-in (--checks … ,bandwidth --bandwidth 1MiB): throughput between two clients, Mbit/s
Checks run --concurrency at a time, each under --timeout, the whole run under --run-timeout (unfinished
checks are bad). --key-file loads (never creates) the probe's key, so relays that admit only known keys
can be probed; give it twice for the receiving client of packet/mesh/bandwidth (else a fresh key).
With a key file, checks that connect run one at a time (two live connections with one key replace each other).

Output: a table (region, node, check, status, value, message) and a summary line, with progress on a TTY;
--json prints the derp.probe/v1 report: {schema, version, startedAt, finishedAt, durationMs, source,
checks, transports, nodes: [{regionId, regionCode, node, hostname, url, status, checks: [{check, status,
value?, unit?, message, durationMs, peer?, details?}]}], summary: {nodes, checks, good, warn, bad, skipped}, status}.

--junit FILE also writes a JUnit XML report (one suite per region, one case per node × check).

Continuous: --every 60s keeps probing (the map is fetched again for every run) and serves, on --listen
(default ${DEFAULT_PROBE_LISTEN.host}:${DEFAULT_PROBE_LISTEN.port}), Prometheus metrics (/metrics), a status page (/) and the last report (/json).
Each run prints its summary line (with --json: its report, one per line) and rewrites the --junit file;
a run that fails (e.g. the map cannot be fetched) is logged and counted, the last good result stays.
SIGINT or SIGTERM stops it (exit 0).

Exit codes:
  0  every check good or skipped (warnings allowed unless --strict); continuous mode stopped by a signal
  1  a check failed (or warned, with --strict)
  2  bad usage (flags, unknown region or check, unreadable key file)
  3  the --junit file cannot be written, or --listen cannot be bound
  5  bad map (syntax or validation)
  6  cannot fetch or read the map`;

  static override examples = [
    '<%= config.bin %> probe --map https://derp.example.com/derpmap --json',
    '<%= config.bin %> probe --server https://derp1.example.com --server https://derp2.example.com --strict',
    '<%= config.bin %> probe --map derpmap.json --region fra --checks tls,http --warn-days 21',
    '<%= config.bin %> probe --map https://derp.example.com/derpmap --junit derp-probe.xml',
    '<%= config.bin %> probe --map https://derp.example.com/derpmap --every 60s --listen 127.0.0.1:9101',
  ];

  static override flags = {
    map: Flags.string({ description: 'DERP map: URL, file or "-" (stdin)', exclusive: ['server'] }),
    server: Flags.string({ description: 'DERP server URL (https://host[:port][/derp], http:// for plain HTTP); repeatable', multiple: true, exclusive: ['map'] }),
    region: Flags.string({ description: 'only this region of the map (ID or code); repeatable', multiple: true, dependsOn: ['map'] }),
    'stun-port': Flags.integer({ description: 'STUN port of --server targets (-1 = no STUN)', default: 3478, min: -1, max: 65_535 }),
    'key-file': Flags.string({ description: 'node key file for the probe clients (loaded, never created); a second one keys the receiving client', multiple: true }),
    'ca-file': Flags.string({ description: 'extra trusted CA certificate(s), PEM' }),
    insecure: Flags.boolean({ description: 'do not verify TLS certificates (testing only)', default: false }),
    checks: Flags.string({ description: `checks to run, comma list or repeatable (${CHECK_NAMES.join(', ')}; default all but bandwidth)`, multiple: true }),
    transports: Flags.string({ description: 'DERP transports for the derp check: upgrade, websocket (comma list)', default: 'upgrade,websocket' }),
    packets: Flags.integer({ description: 'packets the packet check exchanges', default: DEFAULT_PACKETS, min: 1 }),
    bandwidth: Flags.string({ description: 'bandwidth check size, e.g. 1MiB, 500KB (adds the bandwidth check)' }),
    'warn-days': Flags.integer({ description: 'certificate expiry warning threshold (days)', default: DEFAULT_WARN_DAYS, min: 0 }),
    'fail-days': Flags.integer({ description: 'certificate expiry failure threshold (days)', default: DEFAULT_FAIL_DAYS, min: 0 }),
    concurrency: Flags.integer({ description: 'checks running at once', default: DEFAULT_CONCURRENCY, min: 1 }),
    timeout: Flags.string({ description: 'timeout of each check', default: `${DEFAULT_CHECK_TIMEOUT_MS / 1000}s` }),
    'run-timeout': Flags.string({ description: 'deadline of the whole run (unfinished checks are bad)' }),
    strict: Flags.boolean({ description: 'exit 1 on warnings too', default: false }),
    json: Flags.boolean({ description: 'print the derp.probe/v1 report as one JSON object' }),
    junit: Flags.string({ description: 'also write a JUnit XML report to this file' }),
    every: Flags.string({ description: 'keep probing at this interval (e.g. 60s) and serve metrics and a status page' }),
    listen: Flags.string({ description: `with --every: address of the metrics and status listener (default ${DEFAULT_PROBE_LISTEN.host}:${DEFAULT_PROBE_LISTEN.port})`, dependsOn: ['every'] }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Probe);
    const usage = (msg: string): never => this.error(msg, { exit: EXIT_PROBE_USAGE });
    if (!flags.map && !flags.server?.length) usage('give --map <url|file|-> or at least one --server <url>');
    const checkTimeoutMs = parseDuration(flags.timeout) ?? usage(`--timeout: bad duration ${JSON.stringify(flags.timeout)} (e.g. 10s, 500ms)`);
    const runTimeoutMs = flags['run-timeout'] === undefined ? undefined : (parseDuration(flags['run-timeout']) ?? usage(`--run-timeout: bad duration ${JSON.stringify(flags['run-timeout'])}`));
    const bandwidthBytes = flags.bandwidth === undefined ? undefined : (parseSize(flags.bandwidth) ?? usage(`--bandwidth: bad size ${JSON.stringify(flags.bandwidth)} (e.g. 1MiB, 500KB)`));
    const everyMs = flags.every === undefined ? undefined : (parseDuration(flags.every) ?? usage(`--every: bad duration ${JSON.stringify(flags.every)} (e.g. 60s, 5m)`));
    if (everyMs !== undefined && everyMs < MIN_EVERY_MS) usage(`--every: at least ${MIN_EVERY_MS / 1000}s, got ${flags.every}`);
    let listen: ReturnType<typeof parseProbeListen> | undefined;
    try {
      listen = flags.listen === undefined ? undefined : parseProbeListen(flags.listen);
    } catch (err) {
      usage(`--listen: ${describeError(err)}`);
    }
    const checks = this.checkList(listOf(flags.checks), bandwidthBytes !== undefined, usage);
    const transports = listOf([flags.transports])!;
    for (const t of transports) if (t !== 'upgrade' && t !== 'websocket') usage(`--transports: unknown transport ${JSON.stringify(t)} (upgrade, websocket)`);
    if (transports.length === 0) usage('--transports: give upgrade, websocket or both');
    if ((flags['key-file']?.length ?? 0) > 2) usage('--key-file: at most two (the probe key and the receiving client\'s key)');

    const keys: NodePrivateKey[] = [];
    for (const f of flags['key-file'] ?? []) {
      try {
        keys.push((await loadOrCreateKeyFile(f, false)).key);
      } catch (err) {
        if (err instanceof KeyFileError) usage(`--key-file: ${err.message}`);
        throw err;
      }
    }

    const load = async (): Promise<{ regions: ProbeRegion[]; source: ProbeReport['source'] }> => {
      if (!flags.map) return { regions: probeRegionsFromServers(flags.server!, { stunPort: flags['stun-port'] }), source: { servers: flags.server! } };
      const loaded = await loadDerpMap(flags.map);
      return { regions: probeRegionsFromMap(loaded.map, { ...(flags.region ? { regions: flags.region } : {}) }), source: { map: loaded.source } };
    };
    let first: Awaited<ReturnType<typeof load>>;
    try {
      first = await load();
    } catch (err) {
      if (err instanceof ConfigError) usage(err.message);
      this.error(describeError(err), { exit: mapExitCode(err) });
    }
    const { regions, source } = first;

    const total = regions.reduce((n, r) => n + r.targets.length, 0);
    const spin = progress(!flags.json);
    let done = 0;
    const ctl = new AbortController();
    const onSigint = (): void => ctl.abort();
    process.on('SIGINT', onSigint);
    const opts: ProbeOptions = {
      checks,
      transports: transports as ProbeTransport[],
      packets: flags.packets,
      ...(bandwidthBytes !== undefined ? { bandwidthBytes } : {}),
      warnDays: flags['warn-days'],
      failDays: flags['fail-days'],
      ...(keys[0] ? { privateKey: keys[0] } : {}),
      ...(keys[1] ? { peerPrivateKey: keys[1] } : {}),
      tls: { ...(flags['ca-file'] ? { caFile: flags['ca-file'] } : {}), insecure: flags.insecure },
      concurrency: flags.concurrency,
      checkTimeoutMs,
      ...(runTimeoutMs !== undefined ? { runTimeoutMs } : {}),
      signal: ctl.signal,
      source,
      version: this.config.version,
      onCheck: (t, r) => spin.step(`Probing ${total} node${total === 1 ? '' : 's'}… ${++done} checks done (${t.node.id} ${r.check}: ${r.status})`),
    };
    if (everyMs !== undefined) {
      process.off('SIGINT', onSigint);
      // stdin can be read once: a map from "-" is the first run's for every run.
      const reload = flags.map === '-' ? async () => first : load;
      await this.continuous(everyMs, listen, flags, async (signal) => {
        const next = await reload();
        return runProbe(next.regions, { ...opts, source: next.source, signal, onCheck: () => undefined });
      });
      return;
    }
    let report: ProbeReport;
    try {
      spin.step(`Probing ${total} node${total === 1 ? '' : 's'}…`);
      report = await runProbe(regions, opts);
    } catch (err) {
      spin.fail();
      if (err instanceof ConfigError) usage(err.message);
      throw err;
    } finally {
      process.off('SIGINT', onSigint);
    }
    spin.stop();
    this.log(flags.json ? JSON.stringify(report) : `${renderTable(report)}\n${summaryLine(report)}`);
    if (flags.junit !== undefined) {
      try {
        await writeJUnitReport(flags.junit, report);
      } catch (err) {
        this.error(describeError(err), { exit: EXIT_PROBE_OUTPUT });
      }
    }
    const failed = report.status === 'bad' || (flags.strict && report.status === 'warn');
    if (failed) this.exit(EXIT_PROBE_FAILED);
  }

  /** --every: probe until SIGINT/SIGTERM, serving the last result; each run's summary (or report) on stdout. */
  private async continuous(
    everyMs: number,
    listen: ReturnType<typeof parseProbeListen> | undefined,
    flags: { json?: boolean | undefined; junit?: string | undefined },
    run: (signal: AbortSignal) => Promise<ProbeReport>,
  ): Promise<void> {
    const logger: Logger = flags.json ? new JsonLogger(process.stderr, 'info') : new TextLogger(process.stderr, 'info');
    const monitor = new ProbeMonitor({ run, everyMs, ...(listen ? { listen } : {}), logger });
    monitor.on('run', (o: ProbeRunOutcome) => {
      if (!o.ok) {
        logger.log('error', 'probe run failed', { reason: describeError(o.error) });
        return;
      }
      this.log(flags.json ? JSON.stringify(o.report) : summaryLine(o.report));
      if (flags.junit !== undefined) {
        writeJUnitReport(flags.junit, o.report).catch((err: unknown) => logger.log('error', 'cannot write the JUnit report', { file: flags.junit, reason: describeError(err) }));
      }
    });
    try {
      await monitor.start();
    } catch (err) {
      this.error(describeError(err), { exit: EXIT_PROBE_OUTPUT });
    }
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    await monitor.stop();
  }

  private checkList(given: string[] | undefined, bandwidth: boolean, usage: (msg: string) => never): CheckName[] {
    const list = given ?? [...DEFAULT_CHECKS, ...(bandwidth ? (['bandwidth'] as const) : [])];
    for (const c of list) if (!(CHECK_NAMES as readonly string[]).includes(c)) usage(`--checks: unknown check ${JSON.stringify(c)} (${CHECK_NAMES.join(', ')})`);
    const names = list as CheckName[];
    if (names.includes('bandwidth') && !bandwidth) usage('--checks bandwidth needs --bandwidth <size> (e.g. 1MiB)');
    return names;
  }
}
