/**
 * The plain-HTTP listener beside a TLS relay (derper's --http-port): `/generate_204` for captive-portal
 * checks, ACME HTTP-01 tokens, and a 302 to `https://<host><path>` for everything else (derper:
 * tsweb.Port80Handler; non-GET/HEAD get 400 "Use HTTPS").
 */
import * as http from 'node:http';
import type { ChallengeResponder } from '../certs/source.js';
import { ConfigError, DerpError, describeError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { serveNoContent } from './nocontent.js';

/** derper's port-80 server: ReadTimeout 30 s. */
const PORT80_TIMEOUT_MS = 30_000;
const ACME_PREFIX = '/.well-known/acme-challenge/';
/** RFC 8555 §8.3: tokens are base64url. */
const TOKEN_RE = /^[A-Za-z0-9_-]{1,256}$/;
/** A Host header we are willing to put into a Location (name or IP literal, optional port). */
const HOST_RE = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$/;

/** derper's --http-port default. */
export const DEFAULT_HTTP_PORT = 80;

/**
 * The port-80 listener's port from `--http-port`: default 80 when TLS is on; null (not started) when
 * TLS is off or the flag is -1. Other negative values and ports above 65535 are a ConfigError.
 */
export function resolveHttpPort(flag: number | undefined, tlsOn: boolean): number | null {
  if (flag !== undefined && (!Number.isInteger(flag) || flag < -1 || flag > 65535)) {
    throw new ConfigError(`--http-port must be -1 (off) or a port from 0 to 65535, found ${flag}`, { context: { field: 'httpPort' } });
  }
  if (!tlsOn || flag === -1) return null;
  return flag ?? DEFAULT_HTTP_PORT;
}

export interface Port80Options {
  /** Bind host (undefined = all interfaces), as the relay's --addr host. */
  host?: string;
  /** Default 80; 0 = ephemeral. */
  port?: number;
  /** Redirect to this name instead of the request's Host (derper's FQDN). */
  hostname?: string;
  /** Port of the HTTPS listener, added to redirects unless 443. */
  httpsPort?: number;
  challenges?: ChallengeResponder;
  logger?: Logger;
}

function text(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'X-Content-Type-Options': 'nosniff' }).end(body);
}

export class Port80Server {
  private server: http.Server | null = null;
  private boundPort = 0;
  private readonly logger: Logger;

  constructor(private readonly opts: Port80Options = {}) {
    this.logger = opts.logger ?? silentLogger;
  }

  get port(): number {
    return this.boundPort;
  }

  get listening(): boolean {
    return this.server?.listening === true;
  }

  async start(): Promise<void> {
    if (this.server !== null) throw new DerpError('DERP_ERR_SERVER', 'port-80 listener already started');
    const srv = http.createServer({ requestTimeout: PORT80_TIMEOUT_MS, headersTimeout: PORT80_TIMEOUT_MS }, this.onRequest);
    srv.on('clientError', (err: Error & { code?: string }, sock) => {
      if (err.code !== 'ECONNRESET' && sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else sock.destroy();
    });
    const port = this.opts.port ?? 80;
    const where = `${this.opts.host ?? ''}:${port}`;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (err) => reject(new DerpError('DERP_ERR_SERVER', `cannot listen on ${where} (HTTP): ${describeError(err)}`, { cause: err, context: { addr: where } })));
      srv.listen({ host: this.opts.host, port }, () => resolve());
    });
    srv.on('error', (err) => this.logger.log('error', 'port-80 listener error', { reason: describeError(err) }));
    const a = srv.address();
    if (a !== null && typeof a === 'object') this.boundPort = a.port;
    this.server = srv;
  }

  async stop(): Promise<void> {
    const srv = this.server;
    if (srv === null) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => srv.close(() => resolve()));
    srv.closeAllConnections();
    await closed;
  }

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path === '/generate_204') {
      serveNoContent(req, res);
      return;
    }
    if (path.startsWith(ACME_PREFIX)) {
      const token = path.slice(ACME_PREFIX.length);
      const answer = TOKEN_RE.test(token) ? this.opts.challenges?.http01(token) : undefined;
      if (answer === undefined) text(res, 404, 'no such ACME challenge\n');
      else {
        this.logger.log('info', 'answered HTTP-01 validation', { remote: `${req.socket.remoteAddress}:${req.socket.remotePort}` });
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': Buffer.byteLength(answer) }).end(answer);
      }
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      text(res, 400, 'Use HTTPS\n');
      return;
    }
    const hostHeader = req.headers.host ?? '';
    const host = this.opts.hostname ?? (HOST_RE.test(hostHeader) ? hostHeader.replace(/:\d+$/, '') : undefined);
    if (host === undefined) {
      text(res, 400, 'Use HTTPS\n');
      return;
    }
    const p = this.opts.httpsPort;
    const target = `https://${host}${p === undefined || p === 443 ? '' : `:${p}`}${url.startsWith('/') ? url : '/'}`;
    const body = req.method === 'GET' ? `<a href="${target.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;')}">Found</a>.\n` : '';
    res.writeHead(302, { Location: target, 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(body) }).end(body);
  };
}
