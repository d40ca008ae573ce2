/**
 * The throughput baseline: the least a Node process must do to relay DERP packets over TCP. It
 * answers the HTTP upgrade, sends ServerKey, reads ClientInfo (key only, the box is not opened),
 * answers ServerInfo, then rewrites each SendPacket into a RecvPacket for the connection that
 * registered the destination key, batching everything bound for one socket into one write per
 * event-loop turn. No verification, queues, drops, stats, keepalives or logging.
 *
 * Run: node --import tsx bench/baseline-forwarder.ts [--addr 127.0.0.1:0]
 * Prints one JSON line {"msg":"listening","url":...,"publicKey":...} like `derp serve --json`.
 */
import { createServer, type Socket } from 'node:net';
import {
  FRAME_HEADER_LEN,
  FrameType,
  KEY_LEN,
  NodePrivateKey,
  buildServerInfoFrame,
  buildUpgradeResponse,
  encode,
  writeFrameHeader,
} from '../src/lib/protocol/index.js';
import { FrameScanner } from '../src/lib/loadgen/index.js';

/** Smallest batch buffer per socket; sized to hold a burst of 32 full-MTU frames without growing. */
const MIN_BATCH_BYTES = 64 << 10;
/** A request head longer than this is not a DERP upgrade. */
const MAX_REQUEST_HEAD = 16 << 10;
const HEAD_END = Buffer.from('\r\n\r\n');

interface Peer {
  socket: Socket;
  key: Buffer | null;
  out: Buffer | null;
  outLen: number;
  queued: boolean;
  /** Batch buffers whose writes completed; reused so steady state allocates no ArrayBuffers for output. */
  free: Buffer[];
}

/** Registered peers by the first 6 key bytes (a number: no string per lookup); the full key is compared on hit. */
const peers = new Map<number, Peer>();
const dirty: Peer[] = [];
let flushScheduled = false;

function keyId(buf: Buffer, off: number): number {
  return buf.readUIntBE(off, 6);
}

function writeOut(p: Peer): void {
  const out = p.out;
  if (out && p.outLen > 0 && !p.socket.destroyed) {
    p.socket.write(out.subarray(0, p.outLen), () => {
      if (out.length === MIN_BATCH_BYTES) p.free.push(out);
    });
  }
  p.out = null;
  p.outLen = 0;
}

function flush(): void {
  flushScheduled = false;
  for (const p of dirty) {
    writeOut(p);
    p.queued = false;
  }
  dirty.length = 0;
}

function forward(src: Peer, buf: Buffer, off: number, len: number): void {
  if (len < KEY_LEN || !src.key) return;
  const dst = peers.get(keyId(buf, off));
  if (!dst || !dst.key || buf.compare(dst.key, 0, KEY_LEN, off, off + KEY_LEN) !== 0) return;
  const frameLen = FRAME_HEADER_LEN + len;
  if (dst.out && dst.outLen + frameLen > dst.out.length) writeOut(dst);
  if (!dst.out) dst.out = (frameLen <= MIN_BATCH_BYTES ? dst.free.pop() : undefined) ?? Buffer.allocUnsafeSlow(Math.max(MIN_BATCH_BYTES, frameLen));
  if (!dst.queued) {
    dst.queued = true;
    dirty.push(dst);
  }
  const o = dst.outLen;
  writeFrameHeader(dst.out, o, FrameType.RecvPacket, len);
  src.key.copy(dst.out, o + FRAME_HEADER_LEN);
  buf.copy(dst.out, o + FRAME_HEADER_LEN + KEY_LEN, off + KEY_LEN, off + len);
  dst.outLen += frameLen;
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

function main(): void {
  const addrArg = process.argv.indexOf('--addr');
  const addr = addrArg > 0 ? process.argv[addrArg + 1]! : '127.0.0.1:0';
  const colon = addr.lastIndexOf(':');
  const host = addr.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(addr.slice(colon + 1));
  const serverKey = NodePrivateKey.generate();
  const hello = Buffer.concat([Buffer.from(buildUpgradeResponse(serverKey.publicKey), 'latin1'), encode.serverKey(serverKey.publicKey)]);

  const server = createServer((socket) => {
    socket.setNoDelay(true);
    const peer: Peer = { socket, key: null, out: null, outLen: 0, queued: false, free: [] };
    const scanner = new FrameScanner((type, buf, off, len) => {
      if (type === FrameType.SendPacket) forward(peer, buf, off, len);
      else if (type === FrameType.ClientInfo && !peer.key && len >= KEY_LEN) {
        peer.key = Buffer.from(buf.subarray(off, off + KEY_LEN));
        peers.set(keyId(peer.key, 0), peer);
        socket.write(buildServerInfoFrame(serverKey.keyObject, peer.key));
      }
    });
    let head: Buffer | null = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      try {
        if (head === null) {
          scanner.push(chunk);
          return;
        }
        head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
        const end = head.indexOf(HEAD_END);
        if (end < 0) {
          if (head.length > MAX_REQUEST_HEAD) socket.destroy();
          return;
        }
        const rest = head.subarray(end + HEAD_END.length);
        head = null;
        socket.write(hello);
        if (rest.length > 0) scanner.push(rest);
      } catch (err) {
        // Malformed stream: this forwarder's only answer is to drop the connection.
        process.stderr.write(`baseline: dropping connection: ${(err as Error).message}\n`);
        socket.destroy();
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      if (peer.key && peers.get(keyId(peer.key, 0)) === peer) peers.delete(keyId(peer.key, 0));
    });
  });
  server.listen(port, host, () => {
    const a = server.address();
    const p = typeof a === 'object' && a ? a.port : port;
    const h = host.includes(':') ? `[${host}]` : host;
    process.stdout.write(`${JSON.stringify({ msg: 'listening', url: `http://${h}:${p}/derp`, publicKey: serverKey.publicText() })}\n`);
  });
  const stop = (): void => {
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
