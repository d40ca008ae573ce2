import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { createSecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { Command, Flags } from '@oclif/core';
import { DerpError, describeError } from '../lib/errors.js';
import { loadOrCreateKeyFile } from '../lib/keys/keyfile.js';
import { MetricsServer, RelayMetrics, debugRoutes } from '../lib/metrics/index.js';
import { NodePrivateKey } from '../lib/protocol/keys.js';
import { givenFieldFlags, serveFieldFlags } from '../lib/cli/serve-flags.js';
import { ConfigFileError, formatConfigIssue, loadConfigFile, resolveServeConfig, type ServeConfig } from '../lib/config/index.js';
import { RelayServer, generateSelfSigned, parseListenAddr } from '../lib/server/index.js';
import { StunServer } from '../lib/stun/index.js';
import { JsonLogger, TextLogger, type Logger } from '../lib/util/logger.js';

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
    'TLS comes from --tls-cert/--tls-key or --self-signed <host-or-ip> (prints the sha256-raw CertName and a',
    'DERP map node to pin it). Plain HTTP is only served with --dev (127.0.0.1:3340, ephemeral key allowed) or',
    'when explicitly asked for with --insecure-http (e.g. behind a TLS-terminating proxy).',
    'On start one line reports the URL and the server key (with --json: a JSON object with "msg":"listening").',
    'A STUN server (RFC 5389, answers any client) runs on UDP --stun-port (default 3478) on the same host as --addr',
    '(IPv4 and, when --addr names no host, IPv6 too); --no-stun turns it off.',
    'SIGINT/SIGTERM stop gracefully: every client gets a Restarting frame, then the process exits 0.',
    '',
    'Exit codes:',
    '0  stopped by SIGINT/SIGTERM',
    '1  unexpected error',
    '2  bad usage or configuration (flags, config file, plain HTTP without --dev, key file, certificate)',
    '3  cannot listen on --addr or the STUN port (in use, no permission, no such address)',
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
    let config: ServeConfig;
    try {
      const file = flags.config === undefined ? undefined : await loadConfigFile(flags.config);
      config = resolveServeConfig(file, givenFieldFlags(flags));
    } catch (err) {
      if (!(err instanceof ConfigFileError)) throw err;
      // One problem per line, unwrapped, as `derp config check` prints them.
      process.stderr.write(`derp serve: ${err.message.split('\n')[0]}\n${err.issues.map((i) => `${formatConfigIssue(i)}\n`).join('')}`);
      this.exit(EXIT_USAGE);
    }
    // Listen for SIGINT/SIGTERM from the start, and keep listening: a signal during start-up or a second
    // one during the graceful stop must not fall through to Node's default (death by signal, no exit code).
    const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
      process.on('SIGINT', resolve);
      process.on('SIGTERM', resolve);
    });
    const logger: Logger = config.log.json ? new JsonLogger(process.stdout) : new TextLogger(process.stderr);

    let privateKey: NodePrivateKey;
    if (config.keyFile !== null) {
      try {
        privateKey = (await loadOrCreateKeyFile(config.keyFile)).key;
      } catch (err) {
        this.error(describeError(err), { exit: EXIT_USAGE });
      }
    } else privateKey = NodePrivateKey.generate(); // the resolver allows no key file only with dev

    let tls: { cert: string; key: string } | undefined;
    let certName: string | undefined;
    const { certFile, keyFile, selfSigned } = config.tls;
    if (config.tls.certMode === 'manual' && certFile !== undefined && keyFile !== undefined) {
      tls = { cert: await this.readPem(certFile, 'TLS certificate'), key: await this.readPem(keyFile, 'TLS key') };
      try {
        createSecureContext(tls);
      } catch (err) {
        this.error(`TLS certificate ${certFile} / key ${keyFile} rejected: ${describeError(err)}`, { exit: EXIT_USAGE });
      }
    } else if (config.tls.certMode === 'self-signed' && selfSigned !== undefined) {
      const c = await generateSelfSigned(selfSigned);
      tls = { cert: c.certPem, key: c.keyPem };
      certName = c.certName;
    } else if (config.tls.certMode === 'acme') {
      // ACME issuance is wired by the certs work; until then refuse rather than serve without TLS.
      this.error('tls.certMode acme is not available in this build yet', { exit: EXIT_USAGE });
    }

    const addr = config.addr;
    // Metrics: /debug/varz on the relay port always (loopback only); /metrics on metrics.addr unless off.
    const metrics = new RelayMetrics();
    if (tls) metrics.setCertificate(new Date(new X509Certificate(tls.cert).validTo), selfSigned !== undefined ? 'self-signed' : 'manual');
    let metricsServer: MetricsServer | undefined;
    const server = new RelayServer({ privateKey, addr, tls, logger, trustedProxies: config.trustedProxies, routes: debugRoutes(metrics) });
    metrics.attachRelay(server);
    let stun: StunServer | undefined;
    try {
      if (config.metrics.addr !== null) metricsServer = new MetricsServer({ metrics, addr: config.metrics.addr, logger });
      await server.start();
      if (config.stun.enabled) {
        stun = new StunServer({ ...stunBinding(addr), port: config.stun.port, rateLimitPerSecond: config.stun.rateLimit, logger });
        await stun.start();
        metrics.attachStun(stun);
      }
      await metricsServer?.start();
    } catch (err) {
      await stun?.stop();
      if (server.healthCheck().listening) await server.stop({ restarting: false });
      this.error(describeError(err), {
        exit: err instanceof DerpError && err.code === 'DERP_ERR_CONFIG' ? EXIT_USAGE : err instanceof DerpError && err.code === 'DERP_ERR_SERVER' ? EXIT_LISTEN : EXIT_RUNTIME,
      });
    }

    const publicKey = privateKey.publicText();
    const stunPort = stun?.port;
    const derpNode = selfSigned !== undefined && certName !== undefined ? this.derpNode(selfSigned, server.port, certName, stunPort) : undefined;
    if (config.log.json) {
      // Same shape as JsonLogger's lines, written directly so the DERP node stays a nested object.
      const line = { time: new Date().toISOString(), level: 'info', msg: 'listening', url: server.url, publicKey, certName, derpNode, stunPort: stunPort ?? null, metricsUrl: metricsServer?.url ?? null };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    } else {
      this.log(`listening on ${server.url} as ${publicKey}`);
      if (stunPort !== undefined) this.log(`STUN on UDP port ${stunPort}`);
      if (metricsServer !== undefined) this.log(`metrics on ${metricsServer.url}`);
      if (certName) this.log(`certName ${certName}\nDERP map node: ${JSON.stringify(derpNode)}`);
    }

    const signal = await stopSignal;
    logger.log('info', 'stopping', { signal });
    await Promise.all([server.stop(), stun?.stop(), metricsServer?.stop()]);
  }

  private async readPem(file: string, what: string): Promise<string> {
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      this.error(`cannot read ${what} ${file}: ${describeError(err)}`, { exit: EXIT_USAGE });
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

/** STUN binds where the relay listens: the same host, or every interface (IPv4 and, if present, IPv6). */
function stunBinding(addr: string): { host?: string; ipv6?: boolean | 'auto' } {
  const { host } = parseListenAddr(addr);
  if (host === undefined || host === '') return { host: '0.0.0.0', ipv6: 'auto' };
  return { host };
}
