/**
 * A minimal raw DERP client for tests and benchmarks, built only from the protocol codecs: TCP or TLS
 * with the HTTP upgrade (normal or fast start), or WebSocket with the `derp` subprotocol. It exposes the
 * bytes and frames as they arrive so tests can check exact wire behaviour.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { WebSocket, type RawData } from 'ws';
import {
  FrameReader,
  FrameType,
  MAX_CLIENT_FRAME_LEN,
  NodePrivateKey,
  buildClientInfoFrame,
  buildUpgradeRequest,
  decodeFrame,
  encode,
  openServerInfo,
  type ClientInfo,
  type Frame,
  type ServerInfo,
} from '../../src/lib/protocol/index.js';

export type RawTransport = 'derp' | 'websocket';

export interface RawClientOptions {
  port: number;
  host?: string;
  /** PEM of the server certificate to trust (TLS); absent = plain TCP. */
  ca?: string;
  transport?: RawTransport;
  fastStart?: boolean;
  key?: NodePrivateKey;
  path?: string;
  /** Extra request header lines, e.g. "Ideal-Node: 1a" (WebSocket: sent as handshake headers). */
  extraHeaders?: string[];
  /** Local source address to connect from (e.g. 127.0.0.2, to look like a distinct client). */
  localAddress?: string;
}

const HTTP_END = Buffer.from('\r\n\r\n');

/** Connects a plain TCP or TLS socket (resolves once connected / TLS established). */
export function dial(port: number, host = '127.0.0.1', ca?: string, localAddress?: string): Promise<net.Socket> {
  // tls.connect passes socket options such as localAddress on to net; its types just do not say so.
  const tcp: net.TcpNetConnectOpts = { host, port, localAddress };
  return new Promise((resolve, reject) => {
    const s = ca
      ? tls.connect({ ...tcp, ca, ALPNProtocols: ['http/1.1'], servername: net.isIP(host) ? undefined : host }, () => {
          s.off('error', reject);
          resolve(s);
        })
      : net.connect(tcp, () => {
          s.off('error', reject);
          resolve(s);
        });
    s.once('error', reject);
  });
}

export class RawClient {
  readonly key: NodePrivateKey;
  serverKey: Buffer | null = null;
  serverInfo: ServerInfo | null = null;
  /** Status line + headers of the HTTP response (raw transport, normal start). */
  httpResponse = '';
  /** The bytes of the first read after the request (101 + whatever came with it). */
  firstChunk: Buffer | null = null;
  /** Everything that arrived on the DERP stream, in order, unless `onFrame` consumed it. */
  private readonly queue: Frame[] = [];
  private waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | null = null;
  /** Return true to consume a frame instead of queueing it (bulk receivers). */
  onFrame: ((f: Frame) => boolean) | null = null;
  closed = false;
  readonly closedPromise: Promise<void>;
  private markClosed!: () => void;
  private readonly reader: FrameReader;
  wsCloseCode: number | null = null;

  private constructor(
    readonly sock: net.Socket | null,
    readonly ws: WebSocket | null,
    key: NodePrivateKey,
  ) {
    this.key = key;
    this.closedPromise = new Promise((resolve) => (this.markClosed = resolve));
    this.reader = new FrameReader(
      () => MAX_CLIENT_FRAME_LEN,
      (type, payload) => this.deliver(decodeFrame(type, Buffer.from(payload))),
    );
  }

  /** Connects and upgrades; the DERP handshake is left to `handshake()`. */
  static async open(o: RawClientOptions): Promise<RawClient> {
    const key = o.key ?? NodePrivateKey.generate();
    const host = o.host ?? '127.0.0.1';
    if (o.transport === 'websocket') {
      const hostPart = host.includes(':') ? `[${host}]` : host;
      const url = `${o.ca ? 'wss' : 'ws'}://${hostPart}:${o.port}${o.path ?? '/derp'}`;
      const headers = Object.fromEntries((o.extraHeaders ?? []).map((h) => [h.slice(0, h.indexOf(':')), h.slice(h.indexOf(':') + 1).trim()]));
      const ws = new WebSocket(url, ['derp'], { perMessageDeflate: false, ca: o.ca, headers, localAddress: o.localAddress });
      const c = new RawClient(null, ws, key);
      ws.on('message', (data: RawData) => c.push(Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)));
      ws.on('close', (code: number) => {
        c.wsCloseCode = code;
        c.onClose();
      });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      ws.on('error', () => c.onClose());
      return c;
    }
    const sock = await dial(o.port, host, o.ca, o.localAddress);
    sock.setNoDelay(true);
    const c = new RawClient(sock, null, key);
    let req = buildUpgradeRequest({ host: `${host}:${o.port}`, path: o.path ?? '/derp', fastStart: o.fastStart ?? false });
    if (o.extraHeaders?.length) req = req.replace(/\r\n\r\n$/, `\r\n${o.extraHeaders.join('\r\n')}\r\n\r\n`);
    sock.on('close', () => c.onClose());
    sock.on('error', () => c.onClose());
    if (o.fastStart) {
      sock.on('data', (d: Buffer) => {
        c.firstChunk ??= d;
        c.push(d);
      });
      sock.write(req);
      return c;
    }
    await new Promise<void>((resolve, reject) => {
      let acc = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        c.firstChunk ??= d;
        acc = Buffer.concat([acc, d]);
        const end = acc.indexOf(HTTP_END);
        if (end < 0) return;
        sock.off('data', onData);
        sock.off('close', onEarlyClose);
        c.httpResponse = acc.subarray(0, end + HTTP_END.length).toString('latin1');
        sock.on('data', (x: Buffer) => c.push(x));
        if (!c.httpResponse.startsWith('HTTP/1.1 101 ')) reject(new Error(`upgrade refused: ${c.httpResponse.split('\r\n')[0]}`));
        else {
          const rest = acc.subarray(end + HTTP_END.length);
          if (rest.length > 0) c.push(rest);
          resolve();
        }
      };
      const onEarlyClose = () => reject(new Error('connection closed before the HTTP response'));
      sock.on('data', onData);
      sock.once('close', onEarlyClose);
      sock.write(req);
    });
    return c;
  }

  /** open() + handshake(). */
  static async connect(o: RawClientOptions, info: ClientInfo = { version: 2, canAckPings: true }): Promise<RawClient> {
    const c = await RawClient.open(o);
    await c.handshake(info);
    return c;
  }

  /** Waits for ServerKey, sends ClientInfo, waits for ServerInfo (the first frame after ServerKey). */
  async handshake(info: ClientInfo = { version: 2, canAckPings: true }): Promise<ServerInfo> {
    const sk = await this.next();
    if (sk.type !== 'ServerKey') throw new Error(`expected ServerKey, got ${sk.type}`);
    this.serverKey = Buffer.from(sk.serverKey);
    this.write(buildClientInfoFrame(this.key.keyObject, this.key.publicKey, this.serverKey, info));
    const si = await this.next();
    if (si.type !== 'ServerInfo') throw new Error(`expected ServerInfo, got ${si.type}`);
    this.serverInfo = openServerInfo(this.key.keyObject, this.serverKey, si.sealed);
    return this.serverInfo;
  }

  get publicKey(): Buffer {
    return this.key.publicKey;
  }

  private push(d: Buffer): void {
    try {
      this.reader.push(d);
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  private deliver(f: Frame): void {
    if (this.onFrame?.(f)) return;
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      w.resolve(f);
    } else this.queue.push(f);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.markClosed();
    const w = this.waiter;
    this.waiter = null;
    w?.reject(new Error('connection closed'));
  }

  /** The next frame (queued or future); rejects when the connection closes first. */
  next(): Promise<Frame> {
    const f = this.queue.shift();
    if (f !== undefined) return Promise.resolve(f);
    if (this.closed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /** Skips frames until one of `type` arrives. */
  async nextOf<T extends Frame['type']>(type: T): Promise<Extract<Frame, { type: T }>> {
    for (;;) {
      const f = await this.next();
      if (f.type === type) return f as Extract<Frame, { type: T }>;
    }
  }

  /** Frames currently queued (not consumed). */
  drainQueue(): Frame[] {
    return this.queue.splice(0);
  }

  write(b: Uint8Array): void {
    if (this.ws !== null) this.ws.send(b, { binary: true });
    else this.sock!.write(b);
  }

  /** Sends one WebSocket message per buffer (to split or join frames across messages). */
  writeMessages(parts: Uint8Array[]): void {
    for (const p of parts) this.ws!.send(p, { binary: true });
  }

  sendPacket(dst: Uint8Array, data: Uint8Array): void {
    this.write(encode.sendPacket(dst, data));
  }

  /** Sends a Ping and resolves with the matching Pong; other frames stay queued. */
  async ping(data: Uint8Array = Buffer.from('pingpong')): Promise<void> {
    this.write(encode.ping(data));
    const skipped: Frame[] = [];
    for (;;) {
      const f = await this.next();
      if (f.type === 'Pong' && Buffer.compare(f.data, Buffer.from(data).subarray(0, 8)) === 0) break;
      skipped.push(f);
    }
    this.queue.unshift(...skipped);
  }

  pause(): void {
    if (this.sock) this.sock.pause();
    else (this.ws as unknown as { pause(): void }).pause();
  }

  resume(): void {
    if (this.sock) this.sock.resume();
    else (this.ws as unknown as { resume(): void }).resume();
  }

  /** Graceful close (FIN / WebSocket close); resolves when fully closed. */
  async close(): Promise<void> {
    if (!this.closed) {
      if (this.ws !== null) this.ws.close(1000);
      else this.sock!.end();
    }
    await this.closedPromise;
  }

  destroy(): void {
    if (this.ws !== null) this.ws.terminate();
    else this.sock!.destroy();
  }
}

export { FrameType };
