/**
 * The metrics listener: `GET /metrics` (Prometheus text) on its own address, loopback by default.
 * Everything else is 404; a non-loopback address works but is logged as a warning, since the page
 * shows traffic volumes and process details to whoever can reach it.
 */
import * as http from 'node:http';
import { DerpError, describeError } from '../errors.js';
import { parseListenAddr, type RouteHandler } from '../server/relay.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { isLoopbackAddress } from '../util/net.js';
import { DEFAULT_METRICS_ADDR, METRICS_ADDR_OFF } from './constants.js';
import type { RelayMetrics } from './registry.js';

export interface MetricsServerInit {
  metrics: RelayMetrics;
  /** "host:port" ([v6]:port; ":port" = all interfaces); default 127.0.0.1:9090. */
  addr?: string;
  logger?: Logger;
  /** Further endpoints by exact path (derp serve adds /healthz, so probes need not reach the relay port). */
  routes?: Record<string, RouteHandler>;
}

/** True when `--metrics-addr` asks for a listener (anything but "none"). */
export function metricsEnabled(addr: string): boolean {
  return addr.trim().toLowerCase() !== METRICS_ADDR_OFF;
}

export class MetricsServer {
  private readonly metrics: RelayMetrics;
  private readonly addr: string;
  private readonly logger: Logger;
  private readonly routes: Record<string, RouteHandler>;
  private server: http.Server | null = null;
  private boundPort = 0;
  private boundHost = '127.0.0.1';

  constructor(init: MetricsServerInit) {
    this.metrics = init.metrics;
    this.addr = init.addr ?? DEFAULT_METRICS_ADDR;
    this.logger = init.logger ?? silentLogger;
    this.routes = init.routes ?? {};
    // Validate now (ConfigError), not at start.
    parseListenAddr(this.addr);
  }

  get port(): number {
    return this.boundPort;
  }

  get listening(): boolean {
    return this.server?.listening === true;
  }

  /** `http://host:port/metrics` (an all-interfaces listener is reported as 127.0.0.1). */
  get url(): string {
    const h = this.boundHost.includes(':') ? `[${this.boundHost}]` : this.boundHost;
    return `http://${h}:${this.boundPort}/metrics`;
  }

  async start(): Promise<void> {
    if (this.server !== null) throw new DerpError('DERP_ERR_SERVER', 'metrics server already started');
    const { host, port } = parseListenAddr(this.addr);
    const srv = http.createServer(this.onRequest);
    this.server = srv;
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: Error): void => {
        this.server = null;
        reject(new DerpError('DERP_ERR_SERVER', `cannot listen for metrics on ${this.addr}: ${describeError(err)}`, { cause: err, context: { addr: this.addr } }));
      };
      srv.once('error', onErr);
      srv.listen({ host, port }, () => {
        srv.off('error', onErr);
        resolve();
      });
    });
    srv.on('error', (err: Error) => this.logger.log('error', 'metrics listener error', { reason: describeError(err) }));
    const a = srv.address();
    if (a !== null && typeof a === 'object') {
      this.boundPort = a.port;
      this.boundHost = a.address === '::' || a.address === '0.0.0.0' ? '127.0.0.1' : a.address;
    }
    if (host === undefined || (!isLoopbackAddress(host) && host !== 'localhost')) {
      this.logger.log('warn', 'metrics listener is reachable beyond this host; restrict it with a firewall or use a loopback --metrics-addr', { addr: this.addr });
    }
    this.logger.log('debug', 'metrics listening', { url: this.url });
  }

  async stop(): Promise<void> {
    const srv = this.server;
    if (srv === null) return;
    this.server = null;
    await new Promise<void>((resolve) => {
      srv.close(() => resolve());
      srv.closeAllConnections();
    });
  }

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const q = (req.url ?? '/').indexOf('?');
    const path = q < 0 ? (req.url ?? '/') : (req.url ?? '/').slice(0, q);
    const route = this.routes[path];
    if (route !== undefined) {
      route(req, res);
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('404 page not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'Content-Type': 'text/plain; charset=utf-8', Allow: 'GET, HEAD' }).end('method not allowed\n');
      return;
    }
    this.metrics.metrics().then(
      (body) => {
        res.writeHead(200, { 'Content-Type': this.metrics.contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        this.logger.log('error', 'metrics scrape failed', { reason: describeError(err) });
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('metrics collection failed\n');
      },
    );
  };
}
