// A hand-driven DERP server end for protocol-level client tests: it does the upgrade and handshake
// by the spec, then sends only what the test tells it to and records what the client sends. Used
// where the real RelayServer cannot be made to misbehave (silence, odd frames, bad status).
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  FrameReader,
  FrameType,
  NodePrivateKey,
  buildServerInfoFrame,
  buildUpgradeResponse,
  encode,
  openClientInfo,
  type ClientInfo,
} from '../../src/lib/protocol/index.js';

export interface RawFrame {
  type: number;
  payload: Buffer;
}

export class RawConn {
  readonly frames: RawFrame[] = [];
  /** Sizes of WebSocket messages received (websocket only). */
  readonly messageSizes: number[] = [];
  clientKey: Buffer | undefined;
  clientInfo: ClientInfo | undefined;
  closed = false;
  private waiters: { pred: (f: RawFrame) => boolean; resolve: (f: RawFrame) => void }[] = [];
  private closeWaiters: (() => void)[] = [];
  private handshakeDone!: () => void;
  readonly handshake = new Promise<void>((r) => (this.handshakeDone = r));
  private readonly reader: FrameReader;

  constructor(
    private readonly peer: RawPeer,
    private readonly out: (b: Buffer) => void,
    private readonly kill: () => void,
  ) {
    this.reader = new FrameReader(
      () => 1 << 20,
      (type, payload) => this.onFrame(type, Buffer.from(payload)),
    );
    this.out(peer.opts.serverKeyFrame ? peer.opts.serverKeyFrame(peer.key.publicKey) : encode.serverKey(peer.key.publicKey));
  }

  push(chunk: Buffer): void {
    this.reader.push(chunk);
  }

  private onFrame(type: number, payload: Buffer): void {
    if (!this.clientKey) {
      const { clientKey, info } = openClientInfo(this.peer.key.keyObject, payload);
      this.clientKey = clientKey;
      this.clientInfo = info;
      if (this.peer.opts.sendServerInfo !== false) this.out(buildServerInfoFrame(this.peer.key.keyObject, clientKey));
      this.handshakeDone();
      return;
    }
    const f = { type, payload };
    this.frames.push(f);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(f)) return true;
      w.resolve(f);
      return false;
    });
  }

  write(b: Buffer): void {
    this.out(b);
  }

  waitFrame(pred: (f: RawFrame) => boolean): Promise<RawFrame> {
    const found = this.frames.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.waiters.push({ pred, resolve }));
  }

  waitType(type: number): Promise<RawFrame> {
    return this.waitFrame((f) => f.type === type);
  }

  onClosed(): void {
    this.closed = true;
    for (const w of this.closeWaiters.splice(0)) w();
  }

  waitClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((r) => this.closeWaiters.push(r));
  }

  destroy(): void {
    this.kill();
  }
}

export interface RawPeerOptions {
  tls?: { cert: string; key: string };
  /** Answer the upgrade with this raw HTTP response instead of 101. */
  rawResponse?: string;
  /** Replaces the ServerKey frame sent first (given the peer's public key). */
  serverKeyFrame?: (pub: Buffer) => Buffer;
  /** false: never send ServerInfo (handshake stalls). */
  sendServerInfo?: boolean;
}

export class RawPeer {
  readonly key = NodePrivateKey.generate();
  readonly conns: RawConn[] = [];
  private connWaiters: ((c: RawConn) => void)[] = [];
  private readonly server: Server;
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 << 20, handleProtocols: (p) => (p.has('derp') ? 'derp' : false) });
  private readonly sockets = new Set<Duplex>();

  constructor(readonly opts: RawPeerOptions = {}) {
    this.server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }) : createServer();
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.server.on('secureConnection', (s: Duplex) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.server.on('upgrade', (req: IncomingMessage, sock: Duplex, head: Buffer) => this.onUpgrade(req, sock, head));
  }

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return this;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  url(scheme = this.opts.tls ? 'https' : 'http'): string {
    return `${scheme}://127.0.0.1:${this.port}/derp`;
  }

  private add(c: RawConn): void {
    this.conns.push(c);
    for (const w of this.connWaiters.splice(0)) w(c);
  }

  /** Resolves with the n-th connection (0-based) once its handshake is done. */
  async conn(n: number): Promise<RawConn> {
    while (this.conns.length <= n) await new Promise<RawConn>((r) => this.connWaiters.push(r));
    await this.conns[n]!.handshake;
    return this.conns[n]!;
  }

  private onUpgrade(req: IncomingMessage, sock: Duplex, head: Buffer): void {
    if (this.opts.rawResponse) {
      sock.end(this.opts.rawResponse);
      return;
    }
    if (String(req.headers.upgrade).toLowerCase() === 'websocket') {
      this.wss.handleUpgrade(req, sock, head, (ws: WebSocket) => {
        const c = new RawConn(this, (b) => ws.send(b), () => ws.terminate());
        ws.on('message', (data: Buffer) => {
          c.messageSizes.push(data.length);
          c.push(data);
        });
        ws.on('close', () => c.onClosed());
        this.add(c);
      });
      return;
    }
    sock.write(buildUpgradeResponse(this.key.publicKey));
    const c = new RawConn(this, (b) => sock.write(b), () => sock.destroy());
    sock.on('data', (d: Buffer) => c.push(d));
    sock.on('close', () => c.onClosed());
    sock.on('error', () => c.onClosed());
    if (head.length) c.push(head);
    this.add(c);
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export const T = FrameType;
