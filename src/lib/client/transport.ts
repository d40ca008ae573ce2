/**
 * The two ways to carry the DERP byte stream (spec §3.4, §3.6): the HTTP/1.1 `Upgrade: DERP`
 * exchange on a raw socket, or binary WebSocket messages with subprotocol `derp`. Both end as a
 * `Transport`: a byte pipe the connection layer frames.
 */
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { ConnectError, DerpError, ProtocolError } from '../errors.js';
import { WS_MAX_CLIENT_MESSAGE, WS_SUBPROTOCOL } from '../protocol/constants.js';
import { buildUpgradeRequest } from '../protocol/http.js';
import { wsUrl, type DialTarget } from './target.js';

export type TransportKind = 'derp' | 'websocket';

export interface Transport {
  readonly kind: TransportKind;
  /** Writes one flushed batch. */
  write(data: Buffer): void;
  /** True while the socket's write buffer is above its high-water mark. */
  readonly needsDrain: boolean;
  /** Bytes written but not yet taken by the kernel. */
  readonly bufferedBytes: number;
  onDrain(cb: () => void): void;
  /** Delivers inbound bytes and the end of the stream (with the error, if any). Call once. */
  start(onData: (chunk: Buffer) => void, onClose: (err?: Error) => void): void;
  /** Flushes what was written, then closes. */
  close(): void;
  destroy(err?: Error): void;
}

/** Bound on the HTTP response head we accept before the upgrade (derper's is ~200 bytes). */
const MAX_RESPONSE_HEAD = 16 << 10;
/** How much of a non-101 response body to quote in the error. */
const BODY_SNIPPET_LEN = 200;
/** After a WebSocket close frame, how long to wait for the peer's close before dropping the socket. */
export const WS_CLOSE_GRACE_MS = 1_000;

const HEAD_END = Buffer.from('\r\n\r\n');

function snippet(b: Buffer): string {
  return b.subarray(0, BODY_SNIPPET_LEN).toString('utf8').trim();
}

/** HTTP/1.1 `Upgrade: DERP` on a connected socket. Resolves with the transport and any bytes after the head. */
export function upgradeDerp(sock: Socket, t: DialTarget, signal: AbortSignal): Promise<{ transport: Transport; leftover: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let status: { code: number; line: string; rest: Buffer } | undefined;
    const done = (err: Error | undefined, result?: { transport: Transport; leftover: Buffer }) => {
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onError);
      signal.removeEventListener('abort', onAbort);
      if (err) {
        sock.destroy();
        reject(err);
      } else resolve(result!);
    };
    const httpError = (body: Buffer) =>
      new ConnectError(`server answered the DERP upgrade with "${status!.line}"${body.length ? `: ${snippet(body)}` : ''}`, {
        context: { status: status!.code, url: t.url.href },
      });
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      if (status) {
        // Non-101: we were only waiting for a bit of body to quote.
        done(httpError(buf));
        return;
      }
      const end = buf.indexOf(HEAD_END);
      if (end < 0) {
        if (buf.length > MAX_RESPONSE_HEAD) done(new ProtocolError(`HTTP response head exceeds ${MAX_RESPONSE_HEAD} bytes`));
        return;
      }
      const head = buf.subarray(0, end).toString('latin1');
      const line = head.split('\r\n', 1)[0]!;
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(line);
      if (!m) {
        done(new ProtocolError(`not an HTTP response: ${JSON.stringify(line.slice(0, 80))}`, { context: { url: t.url.href } }));
        return;
      }
      const rest = buf.subarray(end + HEAD_END.length);
      status = { code: Number(m[1]), line, rest };
      if (status.code === 101) {
        // Hold further bytes in the socket until the connection layer attaches its reader.
        sock.pause();
        done(undefined, { transport: new UpgradeTransport(sock), leftover: rest });
        return;
      }
      const len = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (rest.length > 0 || (len && Number(len[1]) === 0)) done(httpError(rest));
      else buf = Buffer.alloc(0);
    };
    const onEnd = () => {
      if (status) done(httpError(buf));
      else done(new ConnectError(`server closed the connection during the DERP upgrade`, { context: { url: t.url.href } }));
    };
    const onError = (err: Error) => done(new ConnectError(`connection failed during the DERP upgrade: ${err.message}`, { cause: err }));
    const onAbort = () => done(signal.reason instanceof Error ? signal.reason : new ConnectError('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) {
      onAbort();
      return;
    }
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', onError);
    sock.write(buildUpgradeRequest({ host: t.hostHeader, path: t.path }));
  });
}

class UpgradeTransport implements Transport {
  readonly kind = 'derp' as const;
  constructor(private readonly sock: Socket) {}
  write(data: Buffer): void {
    this.sock.write(data);
  }
  get needsDrain(): boolean {
    return this.sock.writableNeedDrain;
  }
  get bufferedBytes(): number {
    return this.sock.writableLength;
  }
  onDrain(cb: () => void): void {
    this.sock.once('drain', cb);
  }
  start(onData: (chunk: Buffer) => void, onClose: (err?: Error) => void): void {
    let error: Error | undefined;
    this.sock.on('data', onData);
    this.sock.on('error', (e) => (error = e));
    this.sock.on('close', () => onClose(error));
    this.sock.resume();
  }
  close(): void {
    this.sock.end(() => this.sock.destroy());
  }
  destroy(err?: Error): void {
    this.sock.destroy(err);
  }
}

/** RFC 6455 with subprotocol `derp` over an already connected (and verified) socket. */
export function upgradeWebSocket(sock: Socket, t: DialTarget, signal: AbortSignal): Promise<{ transport: Transport; leftover: Buffer }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(t), WS_SUBPROTOCOL, {
      perMessageDeflate: false,
      createConnection: () => sock,
      followRedirects: false,
    });
    // Messages (and a close) that arrive between 'open' and start() are kept for start() to replay.
    const early: Buffer[] = [];
    const earlyClose: { err?: Error; closed: boolean } = { closed: false };
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      if (err) {
        ws.terminate();
        reject(err);
      } else resolve({ transport: new WsTransport(ws, sock, early, earlyClose), leftover: Buffer.alloc(0) });
    };
    const onAbort = () => settle(signal.reason instanceof Error ? signal.reason : new ConnectError('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      let got = 0;
      const finish = () =>
        settle(
          new ConnectError(`server answered the WebSocket upgrade with "${res.statusCode} ${res.statusMessage ?? ''}"${got ? `: ${snippet(Buffer.concat(chunks))}` : ''}`, {
            context: { status: res.statusCode ?? 0, url: t.url.href },
          }),
        );
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (got >= BODY_SNIPPET_LEN) finish();
      });
      res.on('end', finish);
      res.on('error', finish);
    });
    ws.on('error', (err) => settle(err instanceof DerpError ? err : new ConnectError(`WebSocket connect to ${t.url.href} failed: ${err.message}`, { cause: err })));
    ws.on('close', (code, reason) => {
      earlyClose.closed = true;
      settle(new ConnectError(`WebSocket closed during connect (${code} ${reason.toString()})`));
    });
    ws.on('error', (err) => {
      if (settled) earlyClose.err = err;
    });
    ws.on('message', (data: Buffer, isBinary) => {
      if (!isBinary) ws.close(1003, 'text message');
      else early.push(data);
    });
    ws.on('open', () => {
      if (ws.protocol !== WS_SUBPROTOCOL) settle(new ProtocolError(`server selected WebSocket subprotocol ${JSON.stringify(ws.protocol)}, not "${WS_SUBPROTOCOL}"`));
      else settle();
    });
  });
}

class WsTransport implements Transport {
  readonly kind = 'websocket' as const;
  constructor(
    private readonly ws: WebSocket,
    private readonly sock: Socket,
    private early: Buffer[],
    private readonly earlyClose: { err?: Error; closed: boolean },
  ) {}
  write(data: Buffer): void {
    // Deployed reference servers close client messages above 32 KiB with 1009.
    for (let off = 0; off < data.length; off += WS_MAX_CLIENT_MESSAGE) this.ws.send(data.subarray(off, off + WS_MAX_CLIENT_MESSAGE), { binary: true });
  }
  get needsDrain(): boolean {
    return this.sock.writableNeedDrain;
  }
  get bufferedBytes(): number {
    return this.sock.writableLength;
  }
  onDrain(cb: () => void): void {
    this.sock.once('drain', cb);
  }
  start(onData: (chunk: Buffer) => void, onClose: (err?: Error) => void): void {
    let error: Error | undefined;
    this.ws.removeAllListeners('message');
    this.ws.removeAllListeners('close');
    this.ws.removeAllListeners('error');
    this.ws.on('message', (data: Buffer, isBinary) => {
      if (!isBinary) {
        error = new ProtocolError('server sent a text WebSocket message');
        this.ws.close(1003, 'text message');
        return;
      }
      onData(data);
    });
    this.ws.on('error', (e) => (error = e));
    this.ws.on('close', (code, reason) => {
      // 1000/1001 are a normal end of stream (wsconn.go).
      if (!error && code !== 1000 && code !== 1001 && code !== 1005) error = new ConnectError(`WebSocket closed with ${code} ${reason.toString()}`.trim(), { context: { code } });
      onClose(error);
    });
    const early = this.early;
    this.early = [];
    for (const d of early) onData(d);
    if (this.earlyClose.closed) onClose(this.earlyClose.err ?? new ConnectError('WebSocket closed right after the upgrade'));
  }
  close(): void {
    this.ws.close(1000);
    setTimeout(() => this.ws.terminate(), WS_CLOSE_GRACE_MS).unref();
  }
  destroy(err?: Error): void {
    this.ws.terminate();
    if (err) this.sock.destroy(err);
  }
}
