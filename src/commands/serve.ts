import { isIP } from 'node:net';
import { Command, Flags } from '@oclif/core';
import { SelfSignedCertSource } from '../lib/certs/index.js';
import { givenFieldFlags, serveFieldFlags } from '../lib/cli/serve-flags.js';
import { ConfigFileError, formatConfigIssue, loadConfigFile, reloadServeConfig, resolveServeConfig, type ServeConfig } from '../lib/config/index.js';
import { DerpError, describeError } from '../lib/errors.js';
import { RelayMetrics } from '../lib/metrics/index.js';
import { RelayNode } from '../lib/node/index.js';
import { PinoLogger, defaultLogFormat } from '../lib/util/pino.js';
import { RepeatLimitedLogger } from '../lib/util/repeat-limit.js';

/** Exit code for usage and configuration errors (bad flags, unreadable key or certificate files). */
const EXIT_USAGE = 2;
/** Exit code when the server cannot start (e.g. the address is in use). */
const EXIT_RUNTIME = 1;
/** The listen address could not be bound (in use, no permission, no such address). */
const EXIT_LISTEN = 3;
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
    '',
    'Exit codes:',
    '0  stopped by SIGINT/SIGTERM',
    '1  unexpected error',
    '2  bad usage or configuration (flags, config file, plain HTTP without --dev, key file, certificate)',
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
    let node: RelayNode | undefined;
    process.on('SIGHUP', () => void node?.reload());

    // JSON on stdout with --json; otherwise stderr, readable on a terminal and JSON when not.
    const fd = config.log.json ? 1 : 2;
    const pinoLogger = new PinoLogger({ format: config.log.json ? 'json' : defaultLogFormat(fd), fd, level: config.log.level });
    const metrics = new RelayMetrics();
    const logger = new RepeatLimitedLogger(pinoLogger, { onSuppressed: (level) => metrics.noteSuppressedLog(level) });
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

    const server = node.relay;
    const publicKey = node.privateKey.publicText();
    const stunPort = node.stun?.port;
    const certName = node.certs instanceof SelfSignedCertSource ? node.certs.certName : undefined;
    const selfSigned = config.tls.selfSigned;
    const derpNode = selfSigned !== undefined && certName !== undefined ? this.derpNode(selfSigned, server.port, certName, stunPort) : undefined;
    const metricsUrl = node.metricsServer?.url;
    const httpPort = node.port80?.port;
    if (config.log.json) {
      // Same shape as the JSON log lines, written directly so the DERP node stays a nested object.
      const line = { time: new Date().toISOString(), level: 'info', msg: 'listening', url: server.url, publicKey, certName, derpNode, stunPort: stunPort ?? null, metricsUrl: metricsUrl ?? null, httpPort: httpPort ?? null };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    } else {
      this.log(`listening on ${server.url} as ${publicKey}`);
      if (stunPort !== undefined) this.log(`STUN on UDP port ${stunPort}`);
      if (httpPort !== undefined) this.log(`HTTP (port-80 listener) on port ${httpPort}`);
      if (metricsUrl !== undefined) this.log(`metrics on ${metricsUrl}`);
      if (certName) this.log(`certName ${certName}\nDERP map node: ${JSON.stringify(derpNode)}`);
    }

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

/** Bad input → 2; cannot listen → 3; anything else → 1. */
function exitCodeOf(err: unknown): number {
  if (!(err instanceof DerpError)) return EXIT_RUNTIME;
  switch (err.code) {
    case 'DERP_ERR_CONFIG':
    case 'DERP_ERR_KEY_FILE':
    case 'DERP_ERR_CERT':
      return EXIT_USAGE;
    case 'DERP_ERR_SERVER':
      return EXIT_LISTEN;
    default:
      return EXIT_RUNTIME;
  }
}
