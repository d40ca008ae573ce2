/**
 * The handshake crypto thread that crypto-thread.ts starts: for each ClientInfo of a batch, the X25519,
 * the box opened and ServerInfo sealed (handshake.ts: openClientInfo), answered in one buffer.
 */
import type { KeyObject } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { describeError } from '../errors.js';
import { ITEM_HEADER_LEN, NO_SERVER_INFO, REPLY_ERROR, REPLY_HEADER_LEN, REPLY_OK, type CryptoBatch } from './crypto-thread.js';
import { openClientInfo } from './handshake.js';

const port = parentPort;
if (port === null) throw new Error('crypto-thread-entry runs as a worker thread');
const { privateKey } = workerData as { privateKey: KeyObject };

port.on('message', (batch: CryptoBatch) => {
  const b = Buffer.from(batch.buf, 0, batch.len);
  const replies: { id: number; status: number; a: Buffer; b: Buffer | null }[] = [];
  let len = 0;
  for (let off = 0; off < batch.len; ) {
    const id = b.readUInt32LE(off);
    const payloadLen = b.readUInt32LE(off + 4);
    const infoLen = b.readUInt32LE(off + 8);
    off += ITEM_HEADER_LEN;
    const payload = b.subarray(off, off + payloadLen);
    off += payloadLen;
    let serverInfo: Buffer | undefined;
    if (infoLen !== NO_SERVER_INFO) {
      serverInfo = b.subarray(off, off + infoLen);
      off += infoLen;
    }
    try {
      const o = openClientInfo(privateKey, payload, serverInfo);
      const plain = Buffer.from(o.plain.buffer, o.plain.byteOffset, o.plain.byteLength);
      replies.push({ id, status: REPLY_OK, a: plain, b: o.serverInfoFrame });
      len += REPLY_HEADER_LEN + plain.length + o.serverInfoFrame.length;
    } catch (err) {
      const text = Buffer.from(describeError(err), 'utf8');
      replies.push({ id, status: REPLY_ERROR, a: text, b: null });
      len += REPLY_HEADER_LEN + text.length;
    }
  }
  // The answers go back in the request's own buffer when they fit (every request was read by now).
  const buf = batch.buf.byteLength >= len ? batch.buf : new ArrayBuffer(Math.max(len, 2 * batch.buf.byteLength));
  const out = Buffer.from(buf, 0, len);
  let off = 0;
  for (const r of replies) {
    out.writeUInt32LE(r.id, off);
    out[off + 4] = r.status;
    out.writeUInt32LE(r.a.length, off + 5);
    out.writeUInt32LE(r.b?.length ?? 0, off + 9);
    off += REPLY_HEADER_LEN;
    off += r.a.copy(out, off);
    if (r.b !== null) off += r.b.copy(out, off);
  }
  const reply: CryptoBatch = { buf, len };
  port.postMessage(reply, [buf]);
});
