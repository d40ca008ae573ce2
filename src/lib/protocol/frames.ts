/**
 * Frame codecs: `type(1) ‖ length(u32 BE) ‖ payload`. Encoders return whole frames; `decodeFrame`
 * turns a (type, payload) pair into a typed value; `FrameReader` splits a byte stream into frames.
 * Pure: buffers in, values out.
 */
import { FrameTooLargeError, ProtocolError } from '../errors.js';
import {
  FRAME_HEADER_LEN,
  FrameType,
  KEY_LEN,
  MAGIC,
  MAX_PACKET_SIZE,
  MIN_SERVER_KEY_LEN,
  PEER_PRESENT_LEN,
  PING_LEN,
  isKnownFrameType,
} from './constants.js';

export function writeFrameHeader(buf: Uint8Array, offset: number, type: number, length: number): void {
  buf[offset] = type;
  buf[offset + 1] = length >>> 24;
  buf[offset + 2] = (length >>> 16) & 0xff;
  buf[offset + 3] = (length >>> 8) & 0xff;
  buf[offset + 4] = length & 0xff;
}

export function frameHeader(type: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER_LEN);
  writeFrameHeader(b, 0, type, length);
  return b;
}

/** A whole frame from its parts, copied once into one buffer. */
export function encodeFrame(type: number, ...parts: Uint8Array[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const b = Buffer.allocUnsafe(FRAME_HEADER_LEN + len);
  writeFrameHeader(b, 0, type, len);
  let off = FRAME_HEADER_LEN;
  for (const p of parts) {
    b.set(p, off);
    off += p.length;
  }
  return b;
}

function key32(k: Uint8Array, what: string): Uint8Array {
  if (k.length !== KEY_LEN) throw new ProtocolError(`${what} must be ${KEY_LEN} bytes, got ${k.length}`);
  return k;
}

function packet(data: Uint8Array): Uint8Array {
  if (data.length > MAX_PACKET_SIZE) throw new ProtocolError(`packet of ${data.length} bytes exceeds ${MAX_PACKET_SIZE}`);
  return data;
}

export const encode = {
  serverKey: (serverPublic: Uint8Array) => encodeFrame(FrameType.ServerKey, MAGIC, key32(serverPublic, 'server key')),
  /** `sealed` = nonce ‖ box, as `seal()` returns it. */
  clientInfo: (clientPublic: Uint8Array, sealed: Uint8Array) => encodeFrame(FrameType.ClientInfo, key32(clientPublic, 'client key'), sealed),
  serverInfo: (sealed: Uint8Array) => encodeFrame(FrameType.ServerInfo, sealed),
  sendPacket: (dst: Uint8Array, data: Uint8Array) => encodeFrame(FrameType.SendPacket, key32(dst, 'destination key'), packet(data)),
  recvPacket: (src: Uint8Array, data: Uint8Array) => encodeFrame(FrameType.RecvPacket, key32(src, 'source key'), packet(data)),
  keepAlive: () => encodeFrame(FrameType.KeepAlive),
  notePreferred: (preferred: boolean) => encodeFrame(FrameType.NotePreferred, Uint8Array.of(preferred ? 1 : 0)),
  peerGone: (peer: Uint8Array, reason: number) => encodeFrame(FrameType.PeerGone, key32(peer, 'peer key'), Uint8Array.of(reason)),
  /** `ip` is 16 bytes (IPv4 as ::ffff:a.b.c.d) or empty for unknown; see `ipTo16`. */
  peerPresent: (peer: Uint8Array, ip16: Uint8Array, port: number, flags: number) => {
    const tail = new Uint8Array(19);
    tail.set(ip16.length === 16 ? ip16 : new Uint8Array(16), 0);
    tail[16] = (port >>> 8) & 0xff;
    tail[17] = port & 0xff;
    tail[18] = flags;
    return encodeFrame(FrameType.PeerPresent, key32(peer, 'peer key'), tail);
  },
  forwardPacket: (src: Uint8Array, dst: Uint8Array, data: Uint8Array) =>
    encodeFrame(FrameType.ForwardPacket, key32(src, 'source key'), key32(dst, 'destination key'), packet(data)),
  watchConns: () => encodeFrame(FrameType.WatchConns),
  closePeer: (peer: Uint8Array) => encodeFrame(FrameType.ClosePeer, key32(peer, 'peer key')),
  ping: (data: Uint8Array) => encodeFrame(FrameType.Ping, pingData(data)),
  pong: (data: Uint8Array) => encodeFrame(FrameType.Pong, pingData(data)),
  health: (problem: string) => encodeFrame(FrameType.Health, Buffer.from(problem, 'utf8')),
  restarting: (reconnectInMs: number, tryForMs: number) => {
    const b = new Uint8Array(8);
    const v = new DataView(b.buffer);
    v.setUint32(0, reconnectInMs);
    v.setUint32(4, tryForMs);
    return encodeFrame(FrameType.Restarting, b);
  },
};

function pingData(d: Uint8Array): Uint8Array {
  if (d.length < PING_LEN) throw new ProtocolError(`ping data must be ${PING_LEN} bytes, got ${d.length}`);
  return d.subarray(0, PING_LEN);
}

/** IPv4 dotted or IPv6 text → 16 bytes (IPv4 as IPv4-mapped). Unknown/unparsable → 16 zero bytes. */
export function ipTo16(ip: string | undefined): Uint8Array {
  const out = new Uint8Array(16);
  if (!ip) return out;
  let s = ip;
  if (s.startsWith('::ffff:') && s.includes('.')) s = s.slice(7);
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (v4) {
    const q = v4.slice(1).map(Number);
    if (q.some((x) => x > 255)) return out;
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(q, 12);
    return out;
  }
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  // A trailing dotted quad (RFC 4291 §2.2, "::1.2.3.4", "64:ff9b::1.2.3.4") is the last two groups.
  const tailV4 = /^(.*:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (tailV4) {
    const q = tailV4.slice(2).map(Number);
    if (q.some((x) => x > 255)) return out;
    s = `${tailV4[1]}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return out;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  // "::" stands for at least one zero group, so at most 7 explicit ones around it.
  if (halves.length === 2 && head.length + tail.length > 7) return out;
  const groups = halves.length === 2 ? [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail] : head;
  if (groups.length !== 8) return new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    const g = parseInt(groups[i]!, 16);
    if (!/^[0-9a-fA-F]{1,4}$/.test(groups[i]!)) return new Uint8Array(16);
    out[2 * i] = g >>> 8;
    out[2 * i + 1] = g & 0xff;
  }
  return out;
}

/** 16 bytes → text; IPv4-mapped addresses come back as dotted IPv4; all-zero → ''. */
export function ip16ToString(b: Uint8Array): string {
  if (b.every((x) => x === 0)) return '';
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

export type Frame =
  | { type: 'ServerKey'; serverKey: Buffer }
  | { type: 'ClientInfo'; clientKey: Buffer; sealed: Buffer }
  | { type: 'ServerInfo'; sealed: Buffer }
  | { type: 'SendPacket'; dst: Buffer; data: Buffer }
  | { type: 'RecvPacket'; src: Buffer; data: Buffer }
  | { type: 'KeepAlive' }
  | { type: 'NotePreferred'; preferred: boolean }
  | { type: 'PeerGone'; peer: Buffer; reason: number }
  | { type: 'PeerPresent'; peer: Buffer; ip: string; port: number; flags: number }
  | { type: 'ForwardPacket'; src: Buffer; dst: Buffer; data: Buffer }
  | { type: 'WatchConns' }
  | { type: 'ClosePeer'; peer: Buffer }
  | { type: 'Ping'; data: Buffer }
  | { type: 'Pong'; data: Buffer }
  | { type: 'Health'; problem: string }
  | { type: 'Restarting'; reconnectInMs: number; tryForMs: number }
  | { type: 'Unknown'; frameType: number; payload: Buffer };

function need(p: Buffer, n: number, what: string): void {
  if (p.length < n) throw new ProtocolError(`${what} frame payload of ${p.length} bytes is shorter than ${n}`);
}

/**
 * Decodes one frame with the reader-side rules the Go client and server share: short payloads are
 * errors, extra bytes are ignored where the reference ignores them, unknown types pass through.
 * Size limits that close a connection are the caller's (they differ between client and server).
 */
export function decodeFrame(type: number, p: Buffer): Frame {
  switch (type) {
    case FrameType.ServerKey:
      need(p, MIN_SERVER_KEY_LEN, 'ServerKey');
      if (!p.subarray(0, MAGIC.length).equals(MAGIC)) throw new ProtocolError('ServerKey frame lacks the DERP magic');
      return { type: 'ServerKey', serverKey: p.subarray(MAGIC.length, MAGIC.length + KEY_LEN) };
    case FrameType.ClientInfo:
      need(p, KEY_LEN, 'ClientInfo');
      return { type: 'ClientInfo', clientKey: p.subarray(0, KEY_LEN), sealed: p.subarray(KEY_LEN) };
    case FrameType.ServerInfo:
      return { type: 'ServerInfo', sealed: p };
    case FrameType.SendPacket:
      need(p, KEY_LEN, 'SendPacket');
      return { type: 'SendPacket', dst: p.subarray(0, KEY_LEN), data: p.subarray(KEY_LEN) };
    case FrameType.RecvPacket:
      need(p, KEY_LEN, 'RecvPacket');
      return { type: 'RecvPacket', src: p.subarray(0, KEY_LEN), data: p.subarray(KEY_LEN) };
    case FrameType.KeepAlive:
      return { type: 'KeepAlive' };
    case FrameType.NotePreferred:
      if (p.length !== 1) throw new ProtocolError(`NotePreferred payload must be 1 byte, got ${p.length}`);
      return { type: 'NotePreferred', preferred: p[0] !== 0 };
    case FrameType.PeerGone:
      need(p, KEY_LEN, 'PeerGone');
      // Older servers send only the key: reason Disconnected.
      return { type: 'PeerGone', peer: p.subarray(0, KEY_LEN), reason: p.length > KEY_LEN ? p[KEY_LEN]! : 0 };
    case FrameType.PeerPresent: {
      need(p, KEY_LEN, 'PeerPresent');
      const hasAddr = p.length >= KEY_LEN + 18;
      return {
        type: 'PeerPresent',
        peer: p.subarray(0, KEY_LEN),
        ip: hasAddr ? ip16ToString(p.subarray(KEY_LEN, KEY_LEN + 16)) : '',
        port: hasAddr ? p.readUInt16BE(KEY_LEN + 16) : 0,
        flags: p.length >= PEER_PRESENT_LEN ? p[KEY_LEN + 18]! : 0,
      };
    }
    case FrameType.ForwardPacket:
      need(p, 2 * KEY_LEN, 'ForwardPacket');
      return { type: 'ForwardPacket', src: p.subarray(0, KEY_LEN), dst: p.subarray(KEY_LEN, 2 * KEY_LEN), data: p.subarray(2 * KEY_LEN) };
    case FrameType.WatchConns:
      return { type: 'WatchConns' };
    case FrameType.ClosePeer:
      if (p.length !== KEY_LEN) throw new ProtocolError(`ClosePeer payload must be ${KEY_LEN} bytes, got ${p.length}`);
      return { type: 'ClosePeer', peer: p };
    case FrameType.Ping:
      need(p, PING_LEN, 'Ping');
      return { type: 'Ping', data: p.subarray(0, PING_LEN) };
    case FrameType.Pong:
      need(p, PING_LEN, 'Pong');
      return { type: 'Pong', data: p.subarray(0, PING_LEN) };
    case FrameType.Health:
      return { type: 'Health', problem: p.toString('utf8') };
    case FrameType.Restarting:
      need(p, 8, 'Restarting');
      return { type: 'Restarting', reconnectInMs: p.readUInt32BE(0), tryForMs: p.readUInt32BE(4) };
    default:
      return { type: 'Unknown', frameType: type, payload: p };
  }
}

/** Max payload per frame type for a reader; return Infinity for "no limit" (unknown types are skipped). */
export type FrameLimit = (type: number) => number;

/**
 * Splits a byte stream into frames. Payloads that arrive whole inside one chunk are zero-copy views
 * of it; frames that span chunks are assembled into one buffer. A header announcing more than the
 * limit for its type throws FrameTooLargeError before any of that payload is buffered. Payloads of
 * unknown types are skipped without buffering when `skipUnknown` is set (the server's behaviour).
 */
export class FrameReader {
  private head = Buffer.alloc(FRAME_HEADER_LEN);
  private headLen = 0;
  private type = 0;
  private body: Buffer | null = null;
  private bodyLen = 0;
  private skipRemaining = 0;
  /** Total bytes of skipped unknown-frame payloads (for metrics). */
  skippedFrames = 0;

  constructor(
    private readonly limit: FrameLimit,
    private readonly onFrame: (type: number, payload: Buffer) => void,
    private readonly skipUnknown = false,
  ) {}

  /** True when no partial frame is buffered. */
  get idle(): boolean {
    return this.headLen === 0 && this.body === null && this.skipRemaining === 0;
  }

  push(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (this.skipRemaining > 0) {
        const k = Math.min(this.skipRemaining, n - off);
        this.skipRemaining -= k;
        off += k;
        continue;
      }
      if (this.body !== null) {
        const k = Math.min(this.body.length - this.bodyLen, n - off);
        chunk.copy(this.body, this.bodyLen, off, off + k);
        this.bodyLen += k;
        off += k;
        if (this.bodyLen === this.body.length) {
          const b = this.body;
          this.body = null;
          this.onFrame(this.type, b);
        }
        continue;
      }
      let type: number;
      let len: number;
      if (this.headLen === 0 && n - off >= FRAME_HEADER_LEN) {
        type = chunk[off]!;
        len = chunk.readUInt32BE(off + 1);
        off += FRAME_HEADER_LEN;
      } else {
        const k = Math.min(FRAME_HEADER_LEN - this.headLen, n - off);
        chunk.copy(this.head, this.headLen, off, off + k);
        this.headLen += k;
        off += k;
        if (this.headLen < FRAME_HEADER_LEN) return;
        this.headLen = 0;
        type = this.head[0]!;
        len = this.head.readUInt32BE(1);
      }
      if (this.skipUnknown && !isKnownFrameType(type)) {
        this.skippedFrames++;
        this.skipRemaining = len;
        continue;
      }
      const max = this.limit(type);
      if (len > max) throw new FrameTooLargeError(type, len, max);
      if (n - off >= len) {
        const payload = chunk.subarray(off, off + len);
        off += len;
        this.onFrame(type, payload);
      } else {
        this.type = type;
        this.body = Buffer.allocUnsafe(len);
        this.bodyLen = 0;
      }
    }
  }
}
