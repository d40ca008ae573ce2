/**
 * A bare DERP client connection for the load generator: HTTP upgrade (plain TCP or TLS) or WebSocket
 * with subprotocol `derp`, then ServerKey → ClientInfo → ServerInfo (spec §3.4, §3.6, §6). After the
 * handshake every received chunk goes straight to a FrameScanner whose handler the caller swaps in;
 * nothing else runs per packet.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { rootCertificates, connect as tlsConnect } from 'node:tls';
import WebSocket from 'ws';
import { ConnectError, HandshakeError, TimeoutError } from '../errors.js';
import {
  FrameType,
  KEY_LEN,
  MAGIC,
  MIN_SERVER_KEY_LEN,
  NodePrivateKey,
  PROTOCOL_VERSION,
  buildClientInfoFrame,
  buildUpgradeRequest,
  openServerInfo,
} from '../protocol/index.js';
import { FrameScanner, type FrameHandler } from './scanner.js';

export type Transport = 'tcp' | 'tls' | 'ws';

/** How a TLS (https, wss) target's certificate is checked. Plain-data, so it crosses the worker IPC. */
export interface LoadTls {
  /** Skip verification (self-signed test relays; the bench's own servers). */
  insecure?: boolean;
  /** Extra trusted CA certificates, PEM text. */
  ca?: string;
}

export interface Target {
  host: string;
  port: number;
  path: string;
  transport: Transport;
  /** WebSocket only: use wss. */
  secure: boolean;
  tls: LoadTls;
}

/** http → plain TCP upgrade, https → TLS upgrade, ws/wss → WebSocket; `transport` 'ws' over an http(s) URL → ws(s). */
export function parseTarget(url: string, transport?: Transport, tls: LoadTls = {}): Target {
  const u = new URL(url);
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  const defaultPort = secure ? 443 : 80;
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const t: Transport = transport ?? (u.protocol.startsWith('ws') ? 'ws' : secure ? 'tls' : 'tcp');
  return { host, port: u.port ? Number(u.port) : defaultPort, path: u.pathname || '/derp', transport: t, secure, tls };
}

function tlsOptions(t: Target): { rejectUnauthorized: boolean; ca?: string[] } {
  // Extra CAs are added to the system roots, as `derp connect --ca-file` does.
  return { rejectUnauthorized: !t.tls.insecure, ...(t.tls.ca ? { ca: [...rootCertificates, t.tls.ca] } : {}) };
}

/** Go client's whole-connect budget (derphttp_client.go: connect, 10 s). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Response headers larger than this are not a derper 101. */
const MAX_HTTP_HEADER = 16 << 10;
const HEADER_END = Buffer.from('\r\n\r\n');
/**
 * Plain-TCP reads land in this one buffer (net `onread`), shared by every connection of the process:
 * each chunk is consumed synchronously (the scanner copies only frames that span reads). Without it
 * Node allocates a fresh 64 KiB ArrayBuffer per read, and at hundreds of MB/s that external memory
 * drives back-to-back mark-compact GCs whose pauses show up as generator latency.
 */
const READ_BUF_BYTES = 256 << 10;
let sharedReadBuf: Buffer | null = null;

export interface DialOptions {
  timeoutMs?: number;
  /** Open and parse the ServerInfo box (one X25519 per handshake); off for cheap repeated handshakes. */
  verifyServerInfo?: boolean;
  /** Supplies the ClientInfo frame for a server key, e.g. from a cache; defaults to sealing a fresh one. */
  clientInfo?: (serverKey: Buffer) => Buffer;
  /** Local source address (the flood's attackers come from 127.0.0.2, the canary from 127.0.0.1). */
  localAddress?: string;
  /**
   * Takes over the scanner at once after ServerInfo: frames in the same read (packets the relay sent
   * straight after) would otherwise pass before the caller could swap its handler in.
   */
  onFrame?: FrameHandler;
}

export function clientInfoFor(key: NodePrivateKey, serverKey: Buffer): Buffer {
  return buildClientInfoFrame(key.keyObject, key.publicKey, serverKey, { version: PROTOCOL_VERSION, canAckPings: false });
}

export class BenchConn {
  readonly scanner: FrameScanner;
  serverKey: Buffer | null = null;
  /** Called once when the connection closes after a successful handshake. */
  onClose: ((err: Error | undefined) => void) | null = null;
  private socket: Socket | null = null;
  private ws: WebSocket | null = null;
  private closed = false;

  private constructor(handler: FrameHandler) {
    this.scanner = new FrameScanner(handler);
  }

  /** `done` runs once `buf` may be reused (handed to the kernel, or copied into a WebSocket frame). */
  write(buf: Buffer, done?: () => void): void {
    if (this.socket) this.socket.write(buf, done);
    else if (this.ws) this.ws.send(buf, { binary: true }, done);
  }

  /** Writes and resolves once the socket can take more (TCP back-pressure); plain TCP only. */
  async writeBackpressured(buf: Buffer): Promise<void> {
    const sock = this.socket;
    if (!sock || this.closed) return;
    if (!sock.write(buf)) {
      await new Promise<void>((res) => {
        const done = (): void => {
          sock.off('drain', done);
          sock.off('close', done);
          res();
        };
        sock.on('drain', done);
        sock.on('close', done);
      });
    }
  }

  /** Stops reading (a peer that does not read: the relay's queue to it fills). Plain TCP only. */
  pauseReading(): void {
    this.socket?.pause();
  }

  /** Bytes written but not yet taken by the kernel (plain TCP and TLS; 0 for WebSocket). */
  get backlog(): number {
    return this.socket?.writableLength ?? 0;
  }

  resumeReading(): void {
    this.socket?.resume();
  }

  /** The client's TCP port (plain TCP and TLS; undefined for WebSocket): which relay process holds it. */
  get localPort(): number | undefined {
    return this.socket?.localPort;
  }

  /** Half-closes (FIN, or a WebSocket close): the peer may still write, and onClose runs once it is done. */
  end(): void {
    if (this.socket) this.socket.end();
    else this.ws?.close(1000);
  }

  destroy(): void {
    this.closed = true;
    if (this.socket) this.socket.destroy();
    else this.ws?.terminate();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Connects and completes the DERP handshake; resolves once ServerInfo has arrived. */
  static dial(target: Target, key: NodePrivateKey, opts: DialOptions = {}): Promise<BenchConn> {
    const conn = new BenchConn(() => undefined);
    const timeoutMs = opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    const verify = opts.verifyServerInfo ?? true;
    const what = `${target.transport}://${target.host}:${target.port}${target.path}`;
    return new Promise<BenchConn>((resolve, reject) => {
      let done = false;
      const fail = (err: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        conn.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new TimeoutError(`DERP handshake with ${what} took over ${timeoutMs} ms`)), timeoutMs);
      const closedEarly = (err?: Error): void => {
        if (done) {
          if (!conn.closed) {
            conn.closed = true;
            conn.onClose?.(err);
          }
          return;
        }
        fail(err instanceof Error ? new ConnectError(`connection to ${what} failed during handshake`, { cause: err }) : new ConnectError(`${what} closed during handshake`));
      };
      conn.scanner.onFrame = (type, buf, off, len) => {
        if (done) return;
        if (type === FrameType.ServerKey) {
          if (len < MIN_SERVER_KEY_LEN || buf.compare(MAGIC, 0, MAGIC.length, off, off + MAGIC.length) !== 0) {
            fail(new HandshakeError(`${what} sent a ServerKey frame without the DERP magic`));
            return;
          }
          const sk = Buffer.from(buf.subarray(off + MAGIC.length, off + MAGIC.length + KEY_LEN));
          conn.serverKey = sk;
          conn.write(opts.clientInfo ? opts.clientInfo(sk) : clientInfoFor(key, sk));
        } else if (type === FrameType.ServerInfo) {
          if (!conn.serverKey) {
            fail(new HandshakeError(`${what} sent ServerInfo before ServerKey`));
            return;
          }
          if (verify) {
            try {
              openServerInfo(key.keyObject, conn.serverKey, Buffer.from(buf.subarray(off, off + len)));
            } catch (err) {
              fail(err as Error);
              return;
            }
          }
          done = true;
          clearTimeout(timer);
          if (opts.onFrame) conn.scanner.onFrame = opts.onFrame;
          resolve(conn);
        }
      };
      const push = (chunk: Buffer): void => {
        try {
          conn.scanner.push(chunk);
        } catch (err) {
          // A malformed stream ends this connection; during the handshake the dial fails with it.
          if (!done) fail(err as Error);
          else {
            conn.onClose?.(err as Error);
            conn.destroy();
          }
        }
      };
      if (target.transport === 'ws') {
        const url = `${target.secure ? 'wss' : 'ws'}://${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}${target.path}`;
        const ws = new WebSocket(url, 'derp', { perMessageDeflate: false, ...tlsOptions(target), handshakeTimeout: timeoutMs });
        conn.ws = ws;
        ws.on('message', (data: Buffer) => push(data));
        ws.on('error', (err) => closedEarly(err));
        ws.on('close', () => closedEarly());
        return;
      }
      let header: Buffer | null = Buffer.alloc(0);
      const onChunk = (chunk: Buffer): void => {
        if (header === null) {
          push(chunk);
          return;
        }
        // Copied: with the shared read buffer the chunk is overwritten by the next read.
        header = Buffer.concat([header, chunk]);
        const end = header.indexOf(HEADER_END);
        if (end < 0) {
          if (header.length > MAX_HTTP_HEADER) fail(new HandshakeError(`${what} sent over ${MAX_HTTP_HEADER} bytes without ending its HTTP response`));
          return;
        }
        const status = header.toString('latin1', 0, header.indexOf('\r\n'));
        if (!/^HTTP\/1\.[01] 101 /.test(status)) {
          fail(new HandshakeError(`${what} answered the upgrade with "${status}"`));
          return;
        }
        const rest = header.subarray(end + HEADER_END.length);
        header = null;
        if (rest.length > 0) push(rest);
      };
      let socket: Socket;
      if (target.transport === 'tls') {
        socket = tlsConnect({ host: target.host, port: target.port, ...tlsOptions(target), servername: isIp(target.host) ? undefined : target.host });
        socket.on('data', onChunk);
      } else {
        sharedReadBuf ??= Buffer.allocUnsafeSlow(READ_BUF_BYTES);
        socket = netConnect({
          host: target.host,
          port: target.port,
          localAddress: opts.localAddress,
          onread: {
            buffer: sharedReadBuf,
            callback: (nread: number, buf: Uint8Array) => {
              onChunk((buf as Buffer).subarray(0, nread));
              return true;
            },
          },
        });
      }
      conn.socket = socket;
      socket.setNoDelay(true);
      const port = target.port === (target.transport === 'tls' ? 443 : 80) ? '' : `:${target.port}`;
      socket.write(buildUpgradeRequest({ host: `${target.host.includes(':') ? `[${target.host}]` : target.host}${port}`, path: target.path }));
      socket.on('error', (err) => closedEarly(err));
      socket.on('close', () => closedEarly());
    });
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}
