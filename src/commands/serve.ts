import { isIP } from 'node:net';
import { Command, Flags } from '@oclif/core';
import { SelfSignedCertSource } from '../lib/certs/index.js';
import { givenFieldFlags, serveFieldFlags } from '../lib/cli/serve-flags.js';
import { ConfigFileError, formatConfigIssue, loadConfigFile, reloadServeConfig, resolveServeConfig, type ServeConfig } from '../lib/config/index.js';
import { describeError } from '../lib/errors.js';
import { loadOrCreateKeyFile } from '../lib/keys/keyfile.js';
import { readMeshKeyFile } from '../lib/mesh/index.js';
import { RelayMetrics } from '../lib/metrics/index.js';
import { EXIT_USAGE, RelayNode, Supervisor, WorkerStartError, exitCodeOf, runningAllocator } from '../lib/node/index.js';
import { NodePrivateKey } from '../lib/protocol/keys.js';
import type { Logger } from '../lib/util/logger.js';
import { PinoLogger, defaultLogFormat } from '../lib/util/pino.js';
import { RepeatLimitedLogger } from '../lib/util/repeat-limit.js';
import type { WarmUpResult } from '../lib/server/index.js';

/** What the "listening" line reports, from the node or (with --workers) from worker 0. */
interface Listening {
  url: string;
  port: number;
  publicKey: string;
  certName: string | undefined;
  stunPort: number | undefined;
  metricsUrl: string | undefined;
  httpPort: number | undefined;
  pids?: number[];
  /** The relay's warm-up; one per worker with --workers. */
  warmUps: (WarmUpResult | null)[];
}
/** The listening line's warm-up: handshakes of every process, the longest time; null when none warmed up. */
function warmUpSummary(all: (WarmUpResult | null)[]): { handshakes: number; ms: number } | null {
  const done = all.filter((w): w is WarmUpResult => w !== null);
  if (done.length === 0) return null;
  return { handshakes: done.reduce((n, w) => n + w.handshakes, 0), ms: Math.round(Math.max(...done.map((w) => w.ms))) };
}

/** User-run DERP regions are 900–999 (spec derp-map.md §4); used in the printed DERP map node. */
const EXAMPLE_REGION_ID = 900;

export default class Serve extends Command {
  static override description = [
    'Run a DERP relay server (derper-compatible wire protocol, HTTP/1.1 upgrade and WebSocket).',
    '',
    'Every setting can also come from --config FILE (YAML or JSON; `derp config example` shows every field);',
    'flags given on the command line win over the file.',
    'TLS: --cert-mode manual (--tls-cert/--tls-key, re-read when the files change), acme (--hostname, --cert-dir;',
    'HTTP-01 on --http-port and TLS-ALPN-01, renewed at 2/3 of the lifetime) or self-signed (--self-signed',
    '<host-or-ip>; prints the sha256-raw CertName and a DERP map node to pin it). Plain HTTP is only served with',
    '--dev (127.0.0.1:3340, ephemeral key allowed) or --insecure-http (e.g. behind a TLS-terminating proxy).',
    'On start one line reports the URL and the server key (with --json: a JSON object with "msg":"listening").',
    'A STUN server (RFC 5389, answers any client) runs on UDP --stun-port (default 3478) on the same host as --addr',
    '(IPv4 and, when --addr names no host, IPv6 too); --no-stun turns it off. Prometheus metrics and /healthz on',
    '--metrics-addr (default 127.0.0.1:9090); /healthz, /derpmap and loopback-only /debug/ on the relay port too.',
    'SIGHUP reloads the config file and certificates without dropping connections (an invalid file is refused).',
    'SIGINT/SIGTERM stop gracefully: /healthz reports draining for --drain-seconds, every client gets a Restarting',
    'frame, then the process exits 0.',
    '--workers N (default: the CPU count; 1 with --dev or an ephemeral port): N worker processes share the ports',
    '(SO_REUSEPORT), meshed over loopback; the parent restarts a worker that dies, relays SIGHUP/SIGTERM to every',
    'worker and serves one /metrics for the host.',
    'Memory: the relay re-executes itself once (same pid) with V8\'s young generation capped and, when installed,',
    'jemalloc preloaded (freed memory goes back to the system); DERP_MALLOC=system keeps the system allocator.',
    '',
    'Exit codes:',
    '0  stopped by SIGINT/SIGTERM',
    '1  unexpected error (with --workers: also a worker that keeps dying, given up after a crash loop)',
    '2  bad usage or configuration (flags, config file, plain HTTP without --dev, key file, certificate, DERP_MALLOC)',
    '3  cannot listen on --addr, the STUN port, --http-port or --metrics-addr (in use, no permission, no such address)',
  ].join('\n');
  static override examples = [
    '<%= config.bin %> serve --dev',
    '<%= config.bin %> serve --addr :8443 --key-file derper.key --self-signed 203.0.113.7',
    '<%= config.bin %> serve --addr :443 --key-file /var/lib/derper/derper.key --tls-cert cert.pem --tls-key key.pem --json',
    '<%= config.bin %> serve --config /etc/derp/derp.yaml --log-level debug',
  ];
  static override flags = {
    config: Flags.string({ description: 'serve configuration file (YAML or JSON; see `derp config example`); flags given here win over it' }),
    ...serveFieldFlags(),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Serve);
    const given = givenFieldFlags(flags);
    const configFile = flags.config;
    let config: ServeConfig;
    try {
      const file = configFile === undefined ? undefined : await loadConfigFile(configFile);
      config = resolveServeConfig(file, given);
    } catch (err) {
      if (!(err instanceof ConfigFileError)) throw err;
      // One problem per line, unwrapped, as `derp config check` prints them.
      process.stderr.write(`derp serve: ${err.message.split('\n')[0]}\n${err.issues.map((i) => `${formatConfigIssue(i)}\n`).join('')}`);
      this.exit(EXIT_USAGE);
    }
    // Listen for signals from the start, and keep listening: a signal during start-up or a second one
    // during the graceful stop must not fall through to Node's default (death by signal, no exit code).
    const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
      process.on('SIGINT', resolve);
      process.on('SIGTERM', resolve);
    });
    // JSON on stdout with --json; otherwise stderr, readable on a terminal and JSON when not.
    const fd = config.log.json ? 1 : 2;
    const format = config.log.json ? 'json' : defaultLogFormat(fd);
    const pinoLogger = new PinoLogger({ format, fd, level: config.log.level });
    const metrics = new RelayMetrics();
    const logger = new RepeatLimitedLogger(pinoLogger, { onSuppressed: (level) => metrics.noteSuppressedLog(level) });
    if (config.workers > 1) {
      await this.supervise(config, logger, stopSignal, { configFile, given, colorize: format === 'pretty' && process.stderr.isTTY });
      return;
    }
    let node: RelayNode | undefined;
    process.on('SIGHUP', () => void node?.reload());
    try {
      node = await RelayNode.start({
        config,
        logger,
        metrics,
        setLogLevel: (level) => pinoLogger.setLevel(level),
        loadConfig: configFile === undefined ? undefined : async () => (await reloadServeConfig(configFile, given)).config,
      });
    } catch (err) {
      this.error(describeError(err), { exit: exitCodeOf(err) });
    }
    this.printListening(config, {
      url: node.relay.url,
      port: node.relay.port,
      publicKey: node.privateKey.publicText(),
      certName: node.certs instanceof SelfSignedCertSource ? node.certs.certName : undefined,
      stunPort: node.stun?.port,
      metricsUrl: node.metricsServer?.url,
      httpPort: node.port80?.port,
      warmUps: [node.relay.warmUpResult],
    });

    const signal = await stopSignal;
    logger.log('info', 'stopping', { signal });
    // A second SIGINT/SIGTERM cuts the drain period short.
    const hurry = new AbortController();
    const onAgain = (): void => hurry.abort();
    process.on('SIGINT', onAgain);
    process.on('SIGTERM', onAgain);
    await node.stop(hurry.signal);
    logger.flush();
  }

  /** --workers N: this process supervises N workers and serves the host's /metrics (supervisor.ts). */
  private async supervise(
    config: ServeConfig,
    logger: Logger & { flush(): void },
    stopSignal: Promise<NodeJS.Signals>,
    o: { configFile: string | undefined; given: ReturnType<typeof givenFieldFlags>; colorize: boolean },
  ): Promise<void> {
    let sup: Supervisor | undefined;
    process.on('SIGHUP', () => sup?.reload());
    try {
      // Loaded (or created) once here, so N workers never race on the key file.
      const privateKey = config.keyFile !== null ? (await loadOrCreateKeyFile(config.keyFile)).key : NodePrivateKey.generate();
      let meshKey: Buffer | null = null;
      if (config.mesh.pskFile !== null) {
        const f = await readMeshKeyFile(config.mesh.pskFile);
        if (f.warning !== undefined) logger.log('warn', f.warning, { file: config.mesh.pskFile });
        meshKey = f.key;
      }
      sup = new Supervisor({ config, privateKey, meshKey, logger, colorize: o.colorize, ...(o.configFile === undefined ? {} : { configFile: o.configFile, given: o.given }) });
      const r = await sup.start();
      this.printListening(config, { url: r.url, port: r.port, publicKey: privateKey.publicText(), certName: r.certName ?? undefined, stunPort: r.stunPort ?? undefined, metricsUrl: r.metricsUrl ?? undefined, httpPort: r.httpPort ?? undefined, pids: r.pids, warmUps: r.warmUps });
      sup.releaseLogs();
    } catch (err) {
      this.error(describeError(err), { exit: err instanceof WorkerStartError ? err.exitCode : exitCodeOf(err) });
    }
    const started = sup;
    void stopSignal.then((signal) => {
      logger.log('info', 'stopping', { signal, workers: config.workers });
      void started.stop();
      // A second SIGINT/SIGTERM cuts every worker's drain short.
      const onAgain = (): void => void started.stop(true);
      process.on('SIGINT', onAgain);
      process.on('SIGTERM', onAgain);
    });
    const code = await started.exited;
    logger.flush();
    if (code !== 0) this.exit(code);
  }

  private printListening(config: ServeConfig, l: Listening): void {
    const selfSigned = config.tls.selfSigned;
    const derpNode = selfSigned !== undefined && l.certName !== undefined ? this.derpNode(selfSigned, l.port, l.certName, l.stunPort) : undefined;
    const warmUp = warmUpSummary(l.warmUps);
    if (config.log.json) {
      // Same shape as the JSON log lines, written directly so the DERP node stays a nested object.
      const line = { time: new Date().toISOString(), level: 'info', msg: 'listening', url: l.url, publicKey: l.publicKey, certName: l.certName, derpNode, stunPort: l.stunPort ?? null, metricsUrl: l.metricsUrl ?? null, httpPort: l.httpPort ?? null, allocator: runningAllocator(), handshakeThread: config.handshakeThread, warmUp, ...(l.pids === undefined ? {} : { workers: l.pids.length, workerPids: l.pids }) };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    } else {
      this.log(`listening on ${l.url} as ${l.publicKey}`);
      if (l.pids !== undefined) this.log(`${l.pids.length} workers (pids ${l.pids.join(' ')})`);
      if (l.stunPort !== undefined) this.log(`STUN on UDP port ${l.stunPort}`);
      if (l.httpPort !== undefined) this.log(`HTTP (port-80 listener) on port ${l.httpPort}`);
      if (l.metricsUrl !== undefined) this.log(`metrics on ${l.metricsUrl}`);
      this.log(`malloc: ${runningAllocator()}`);
      this.log(`handshake crypto: ${config.handshakeThread ? 'on a worker thread' : 'on the event loop'}`);
      if (warmUp !== null) this.log(`warm-up: ${warmUp.handshakes} handshakes in ${(warmUp.ms / 1000).toFixed(1)} s before listening${l.warmUps.length > 1 ? ` (${l.warmUps.length} workers)` : ''}`);
      if (l.certName) this.log(`certName ${l.certName}\nDERP map node: ${JSON.stringify(derpNode)}`);
    }
  }

  /** A Tailscale DERPNode (tailcfg/derpmap.go) that pins this self-signed certificate. */
  private derpNode(host: string, port: number, certName: string, stunPort: number | undefined): Record<string, string | number> {
    const node: Record<string, string | number> = { Name: `${EXAMPLE_REGION_ID}a`, RegionID: EXAMPLE_REGION_ID, HostName: host, CertName: certName };
    if (isIP(host) === 4) node.IPv4 = host;
    if (isIP(host) === 6) node.IPv6 = host;
    node.DERPPort = port;
    // -1 = no STUN for this node (--no-stun); 3478 is the map's default and may be omitted.
    node.STUNPort = stunPort ?? -1;
    return node;
  }
}
