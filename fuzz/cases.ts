/**
 * The fuzzer's case generators, one per family. A case is plain bytes plus how to send them, derived
 * only from (seed, index) and the run's context, so a finding can be replayed from its record.
 */
import { FRAME_HEADER_LEN, FrameType, KEY_LEN, MAX_PACKET_SIZE } from '../src/lib/protocol/index.js';
import { Rng } from './rng.js';

export const FAMILIES = ['frames', 'prehandshake', 'http', 'websocket', 'stun'] as const;
export type Family = (typeof FAMILIES)[number];

/** What a case needs to know about the relay under test. */
export interface CaseContext {
  host: string;
  /** The relay's public key (the ClientInfo box and ServerKey). */
  serverKey: Buffer;
  /** A canary's key: hostile SendPackets sometimes aim at it (it must shrug them off). */
  canaryKey: Buffer;
  /** Sealed ClientInfo frames of the fuzzer's own keys; a case gets one that no other live case uses. */
  clientInfo: Buffer;
}

export interface FuzzCase {
  index: number;
  family: Family;
  /** 'tcp': write `chunks` (each a separate write) to the relay port; 'udp': each chunk is one datagram to the STUN port. */
  transport: 'tcp' | 'udp';
  chunks: Buffer[];
  /** WebSocket: `chunks` after the 101 answer to `upgrade`. */
  upgrade?: Buffer;
  /**
   * Appended after the chunks when the stream is complete: the relay's answer to it (`marker`) proves
   * it read everything and kept the connection, so the case ends without waiting.
   */
  probe?: Buffer;
  marker?: Buffer;
  /** The case says goodbye itself (a WebSocket close frame): the relay closing after it is no offence. */
  goodbye?: boolean;
}

const crlf = '\r\n';

function frame(type: number, payload: Buffer, declared = payload.length): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_LEN);
  h[0] = type;
  h.writeUInt32BE(declared >>> 0, 1);
  return Buffer.concat([h, payload]);
}

/** Whether `b` is a whole number of DERP frames (so the relay is not left waiting for bytes). */
export function completeFrames(b: Buffer): boolean {
  let off = 0;
  while (off + FRAME_HEADER_LEN <= b.length) off += FRAME_HEADER_LEN + b.readUInt32BE(off + 1);
  return off === b.length;
}

/** Splits at random points into 1..5 writes. */
function split(rng: Rng, b: Buffer): Buffer[] {
  const n = rng.chance(0.5) ? 1 : rng.range(2, 5);
  if (n === 1 || b.length < 2) return [b];
  const cuts = new Set<number>();
  for (let i = 1; i < n; i++) cuts.add(rng.range(1, b.length - 1));
  const sorted = [...cuts].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of sorted) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  out.push(b.subarray(prev));
  return out;
}

/** Bit flips, overwrites, truncation, insertion, duplication. */
function mutate(rng: Rng, b: Buffer, keep = 0): Buffer {
  let out: Buffer = Buffer.from(b);
  const n = rng.range(1, 4);
  for (let i = 0; i < n && out.length > keep; i++) {
    const at = rng.range(keep, out.length - 1);
    switch (rng.int(6)) {
      case 0:
      case 1:
        out[at] = out[at]! ^ (1 << rng.int(8));
        break;
      case 2:
        out[at] = rng.pick([0x00, 0xff, 0x7f, 0x80, 0x0a, 0x0d, 0x20, rng.int(256)]);
        break;
      case 3:
        out = out.subarray(0, at);
        break;
      case 4:
        out = Buffer.concat([out.subarray(0, at), rng.bytes(rng.size(256)), out.subarray(at)]);
        break;
      default: {
        const len = rng.range(1, Math.min(64, out.length - at));
        out = Buffer.concat([out.subarray(0, at + len), out.subarray(at, at + len), out.subarray(at + len)]);
      }
    }
  }
  return out;
}

const SERVER_ONLY = [FrameType.ServerKey, FrameType.ClientInfo, FrameType.ServerInfo, FrameType.RecvPacket, FrameType.KeepAlive, FrameType.PeerGone, FrameType.PeerPresent, FrameType.Health, FrameType.Restarting];
const PRIVILEGED = [FrameType.ForwardPacket, FrameType.WatchConns, FrameType.ClosePeer];

function randomFrame(rng: Rng, ctx: CaseContext): Buffer {
  const key = (): Buffer => (rng.chance(0.2) ? ctx.canaryKey : rng.bytes(KEY_LEN));
  switch (rng.int(11)) {
    case 0:
    case 1:
      return frame(FrameType.SendPacket, Buffer.concat([key(), rng.bytes(rng.size(1500))]));
    case 2:
      return frame(FrameType.SendPacket, rng.bytes(rng.int(KEY_LEN)));
    case 3: {
      // Oversized: the header claims more than a packet may be; only a little of it follows.
      const declared = KEY_LEN + MAX_PACKET_SIZE + rng.range(1, 1 << 20);
      return frame(FrameType.SendPacket, rng.bytes(rng.size(512)), declared);
    }
    case 4:
      return frame(FrameType.NotePreferred, rng.bytes(rng.chance(0.6) ? 1 : rng.int(8)));
    case 5:
      return frame(FrameType.Ping, rng.bytes(rng.chance(0.6) ? 8 : rng.size(1200)));
    case 6:
      return frame(FrameType.Pong, rng.bytes(rng.chance(0.5) ? 8 : rng.size(64)));
    case 7:
      return frame(rng.pick(PRIVILEGED), rng.bytes(rng.size(128)));
    case 8: {
      let t = rng.int(256);
      while (t >= 1 && t <= 0x15) t = rng.int(256);
      return frame(t, rng.bytes(rng.size(256)));
    }
    case 9:
      return frame(rng.pick(SERVER_ONLY), rng.bytes(rng.size(256)));
    default:
      // A length field from anywhere in u32 (mostly far more than follows).
      return frame(rng.int(256), rng.bytes(rng.size(64)), rng.u32());
  }
}

function derpUpgrade(rng: Rng, ctx: CaseContext): { head: Buffer; fastStart: boolean } {
  const fastStart = rng.chance(0.5);
  const head = `GET /derp HTTP/1.1${crlf}Host: ${ctx.host}${crlf}Upgrade: DERP${crlf}Connection: Upgrade${crlf}${fastStart ? `Derp-Fast-Start: 1${crlf}` : ''}${crlf}`;
  return { head: Buffer.from(head, 'latin1'), fastStart };
}

function pingProbe(rng: Rng): { probe: Buffer; marker: Buffer } {
  const data = rng.bytes(8);
  return { probe: frame(FrameType.Ping, data), marker: frame(FrameType.Pong, data) };
}

/** (a) A valid handshake, then mutated and random frames. */
function framesCase(rng: Rng, ctx: CaseContext, index: number): FuzzCase {
  const { head } = derpUpgrade(rng, ctx);
  let body: Buffer = Buffer.concat(Array.from({ length: rng.range(1, 5) }, () => randomFrame(rng, ctx)));
  if (rng.chance(0.5)) body = mutate(rng, body);
  const c: FuzzCase = { index, family: 'frames', transport: 'tcp', chunks: split(rng, Buffer.concat([head, ctx.clientInfo, body])) };
  if (completeFrames(body)) Object.assign(c, pingProbe(rng));
  return c;
}

const NOT_HTTP: readonly string[] = ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03', 'SSH-2.0-OpenSSH_9.6\r\n', '\r\n\r\n', 'GET', 'GET /derp HTTP/1.1\r\nHo'];

/** (b) Bytes before (or instead of) the handshake. */
function preHandshakeCase(rng: Rng, ctx: CaseContext, index: number): FuzzCase {
  let b: Buffer;
  switch (rng.int(5)) {
    case 0:
      b = rng.bytes(rng.range(1, rng.chance(0.9) ? 512 : 8192));
      break;
    case 1:
      b = Buffer.concat([Buffer.from(rng.pick(NOT_HTTP), 'latin1'), rng.bytes(rng.size(512))]);
      break;
    case 2: {
      // Random bytes inside the head.
      const { head } = derpUpgrade(rng, ctx);
      const at = rng.int(head.length);
      b = Buffer.concat([head.subarray(0, at), rng.bytes(rng.range(1, 64)), head.subarray(at)]);
      break;
    }
    case 3:
      // A valid head, then garbage instead of ClientInfo.
      b = Buffer.concat([derpUpgrade(rng, ctx).head, rng.chance(0.5) ? rng.bytes(rng.size(512)) : randomFrame(rng, ctx)]);
      break;
    default:
      // A valid head and a damaged ClientInfo (the box or its frame header).
      b = Buffer.concat([derpUpgrade(rng, ctx).head, mutate(rng, ctx.clientInfo)]);
  }
  return { index, family: 'prehandshake', transport: 'tcp', chunks: split(rng, b) };
}

const METHODS = ['GET', 'POST', 'HEAD', 'PUT', 'OPTIONS', 'CONNECT', 'DELETE', 'PATCH', 'TRACE', 'get', 'G ET', 'GET\x00', ''];
const PATHS = ['/derp', '/derp?x=1', '/derp/', '/derp/probe', '/derp/latency-check', '/', '/generate_204', '/robots.txt', '/debug/varz', '/debug/', '//derp', '*', 'derp', '/%00', '/derp#x', 'http://x/derp'];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.1x', 'HTTP/9.9', 'http/1.1', ''];

/** (c) Mutated HTTP upgrade requests. */
function httpCase(rng: Rng, ctx: CaseContext, index: number): FuzzCase {
  let method = 'GET';
  let path = '/derp';
  let version = 'HTTP/1.1';
  const ws = rng.chance(0.3);
  const headers: [string, string][] = ws
    ? [['Host', ctx.host], ['Upgrade', 'websocket'], ['Connection', 'Upgrade'], ['Sec-WebSocket-Key', rng.bytes(16).toString('base64')], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Protocol', 'derp']]
    : [['Host', ctx.host], ['Upgrade', 'DERP'], ['Connection', 'Upgrade']];
  if (rng.chance(0.3)) headers.push(['Derp-Fast-Start', rng.pick(['1', '0', 'yes', ''])]);
  const n = rng.range(1, 3);
  for (let i = 0; i < n; i++) {
    const h = headers.length > 0 ? rng.int(headers.length) : -1;
    switch (rng.int(10)) {
      case 0:
        method = rng.chance(0.7) ? rng.pick(METHODS) : rng.bytes(rng.range(1, 12)).toString('latin1');
        break;
      case 1:
        path = rng.chance(0.7) ? rng.pick(PATHS) : `/${rng.bytes(rng.size(300)).toString('latin1')}`;
        break;
      case 2:
        version = rng.pick(VERSIONS);
        break;
      case 3:
        if (h >= 0) headers.splice(h, 1);
        break;
      case 4:
        if (h >= 0) headers.push([headers[h]![0], rng.pick(['', 'x', headers[h]![1].toUpperCase(), 'websocket', 'DERP'])]);
        break;
      case 5:
        if (h >= 0) headers[h]![0] = rng.chance(0.5) ? headers[h]![0].toLowerCase() : rng.bytes(rng.range(0, 16)).toString('latin1');
        break;
      case 6:
        if (h >= 0) headers[h]![1] = rng.bytes(rng.size(256)).toString('latin1');
        break;
      case 7:
        // Huge headers: past Node's 16 KiB limit or just below it.
        headers.push([`X-${rng.int(1000)}`, 'a'.repeat(rng.pick([8000, 16_000, 17_000, 70_000]))]);
        break;
      case 8:
        headers.push(rng.pick([['Content-Length', String(rng.int(100))], ['Transfer-Encoding', 'chunked'], ['Content-Length', '-1'], ['Transfer-Encoding', 'chunked, identity'], ['Expect', '100-continue']] as [string, string][]));
        break;
      default:
        headers.push(['X-Forwarded-For', rng.pick(['1.2.3.4', 'garbage', '', '::1, 10.0.0.1'])]);
    }
  }
  const eol = rng.chance(0.85) ? crlf : rng.pick(['\n', '\r', '', '\r\r\n']);
  const end = rng.chance(0.9) ? eol : rng.pick(['', '\n', crlf + crlf]);
  const text = `${method} ${path} ${version}${eol}${headers.map(([k, v]) => `${k}: ${v}${eol}`).join('')}${end}`;
  let b: Buffer = Buffer.from(text, 'latin1');
  if (rng.chance(0.2)) b = mutate(rng, b);
  if (!ws && rng.chance(0.5)) b = Buffer.concat([b, ctx.clientInfo]);
  return { index, family: 'http', transport: 'tcp', chunks: split(rng, b) };
}

/** A WebSocket frame; `len` lies about the payload length when given. */
function wsFrame(o: { fin?: boolean; rsv?: number; opcode: number; payload: Buffer; mask?: Buffer | null; len?: number; lenForm?: 7 | 16 | 64 }): Buffer {
  const len = o.len ?? o.payload.length;
  const form = o.lenForm ?? (len < 126 ? 7 : len < 65536 ? 16 : 64);
  const mask = o.mask === undefined ? Buffer.from([1, 2, 3, 4]) : o.mask;
  const b0 = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | (o.opcode & 0x0f);
  const m = mask === null ? 0 : 0x80;
  let head: Buffer;
  if (form === 7) head = Buffer.from([b0, m | (len & 0x7f)]);
  else if (form === 16) {
    head = Buffer.from([b0, m | 126, 0, 0]);
    head.writeUInt16BE(len & 0xffff, 2);
  } else {
    head = Buffer.from([b0, m | 127, 0, 0, 0, 0, 0, 0, 0, 0]);
    head.writeUInt32BE(Math.floor(len / 2 ** 32) >>> 0, 2);
    head.writeUInt32BE(len >>> 0, 6);
  }
  const p = Buffer.from(o.payload);
  if (mask !== null) for (let i = 0; i < p.length; i++) p[i] = p[i]! ^ mask[i & 3]!;
  return Buffer.concat([head, ...(mask === null ? [] : [mask]), p]);
}

function randomWsFrame(rng: Rng, ctx: CaseContext): Buffer {
  const mask = rng.bytes(4);
  switch (rng.int(12)) {
    case 0:
      return wsFrame({ opcode: rng.int(16), payload: rng.bytes(rng.size(200)), mask });
    case 1:
      return wsFrame({ opcode: 2, payload: Buffer.concat([frame(FrameType.SendPacket, Buffer.concat([ctx.canaryKey, rng.bytes(rng.size(200))]))]), mask });
    case 2:
      return wsFrame({ opcode: 2, payload: randomFrame(rng, ctx), mask });
    case 3:
      return wsFrame({ opcode: 2, payload: rng.bytes(rng.size(64)), mask: null });
    case 4:
      return wsFrame({ opcode: rng.pick([2, 1, 0]), rsv: rng.range(1, 7), payload: rng.bytes(rng.size(64)), mask });
    case 5:
      // Control frames: too long, fragmented, close with odd codes and bad UTF-8.
      return wsFrame({ opcode: rng.pick([8, 9, 10]), fin: rng.chance(0.5), payload: rng.bytes(rng.chance(0.5) ? rng.range(126, 300) : rng.int(126)), mask, lenForm: rng.pick([7, 16] as const) });
    case 6: {
      const code = Buffer.alloc(2);
      code.writeUInt16BE(rng.pick([0, 999, 1000, 1004, 1005, 1006, 1015, 2999, 3000, 4999, 5000, 65535]));
      return wsFrame({ opcode: 8, payload: Buffer.concat([rng.chance(0.2) ? code.subarray(0, 1) : code, rng.bytes(rng.int(20))]), mask });
    }
    case 7: {
      // A fragmented binary message, its pieces sometimes out of order or interleaved with a ping.
      const p = randomFrame(rng, ctx);
      const cut = rng.int(p.length + 1);
      const first = wsFrame({ opcode: 2, fin: false, payload: p.subarray(0, cut), mask });
      const ping = wsFrame({ opcode: 9, payload: rng.bytes(rng.int(10)), mask });
      const last = wsFrame({ opcode: rng.chance(0.8) ? 0 : 2, fin: true, payload: p.subarray(cut), mask });
      return rng.chance(0.3) ? Buffer.concat([last, first]) : Buffer.concat(rng.chance(0.5) ? [first, ping, last] : [first, last]);
    }
    case 8:
      return wsFrame({ opcode: 0, fin: rng.chance(0.5), payload: rng.bytes(rng.size(64)), mask });
    case 9:
      // Lengths: over maxPayload, a 64-bit length with the top bit set, or more than follows.
      return wsFrame({ opcode: 2, payload: rng.bytes(rng.size(256)), mask, len: rng.pick([1 << 20, (1 << 20) + 1, 2 ** 63, 2 ** 40, rng.u32()]), lenForm: 64 });
    case 10:
      return wsFrame({ opcode: 1, payload: rng.chance(0.5) ? Buffer.from('hello', 'utf8') : Buffer.from([0xc3, 0x28, 0xff]), mask });
    default:
      return mutate(rng, wsFrame({ opcode: 2, payload: randomFrame(rng, ctx), mask }));
  }
}

/** Whether a well-formed masked close frame is among the frames (walked as the relay would). */
function hasCloseFrame(b: Buffer): boolean {
  let i = 0;
  while (i + 2 <= b.length) {
    const op = b[i]! & 0x0f;
    let len = b[i + 1]! & 0x7f;
    let j = i + 2;
    if (len === 126) {
      if (j + 2 > b.length) return false;
      len = b.readUInt16BE(j);
      j += 2;
    } else if (len === 127) {
      if (j + 8 > b.length) return false;
      len = b.readUInt32BE(j) * 2 ** 32 + b.readUInt32BE(j + 4);
      j += 8;
    }
    if (b[i + 1]! & 0x80) j += 4;
    if (op === 8) return true;
    i = j + len;
  }
  return false;
}

/** (d) A real WebSocket upgrade, then mutated WebSocket frames. */
function websocketCase(rng: Rng, ctx: CaseContext, index: number): FuzzCase {
  const upgrade = Buffer.from(
    `GET /derp HTTP/1.1${crlf}Host: ${ctx.host}${crlf}Upgrade: websocket${crlf}Connection: Upgrade${crlf}Sec-WebSocket-Key: ${rng.bytes(16).toString('base64')}${crlf}Sec-WebSocket-Version: 13${crlf}Sec-WebSocket-Protocol: derp${crlf}${crlf}`,
    'latin1',
  );
  const parts: Buffer[] = [];
  if (rng.chance(0.7)) parts.push(wsFrame({ opcode: 2, payload: ctx.clientInfo, mask: rng.bytes(4) }));
  for (let i = rng.range(1, 3); i > 0; i--) parts.push(randomWsFrame(rng, ctx));
  const data = rng.bytes(8);
  const body = Buffer.concat(parts);
  return {
    index,
    family: 'websocket',
    goodbye: hasCloseFrame(body),
    transport: 'tcp',
    upgrade,
    chunks: split(rng, body),
    probe: wsFrame({ opcode: 9, payload: data, mask: rng.bytes(4) }),
    marker: Buffer.concat([Buffer.from([0x8a, 8]), data]),
  };
}

const STUN_MAGIC = 0x2112a442;

/** (e) Random and mutated STUN datagrams. */
function stunCase(rng: Rng, _ctx: CaseContext, index: number): FuzzCase {
  const req = Buffer.alloc(20);
  req.writeUInt16BE(rng.chance(0.7) ? 0x0001 : rng.int(0x10000), 0);
  req.writeUInt32BE(STUN_MAGIC, 4);
  rng.bytes(12).copy(req, 8);
  const attrs: Buffer[] = [];
  for (let i = rng.int(4); i > 0; i--) {
    const v = rng.bytes(rng.size(64));
    const a = Buffer.alloc(4);
    a.writeUInt16BE(rng.pick([0x8022, 0x8028, 0x0006, 0x0008, 0x0024, 0x802a, rng.int(0x10000)]), 0);
    a.writeUInt16BE(rng.chance(0.8) ? v.length : rng.int(0x10000), 2);
    attrs.push(a, v, Buffer.alloc((4 - (v.length % 4)) % 4));
  }
  let b: Buffer = Buffer.concat([req, ...attrs]);
  b.writeUInt16BE(rng.chance(0.8) ? b.length - 20 : rng.int(0x10000), 2);
  if (rng.chance(0.5)) b = mutate(rng, b);
  if (rng.chance(0.15)) b = rng.bytes(rng.size(1400));
  return { index, family: 'stun', transport: 'udp', chunks: [b] };
}

const GENERATORS: Record<Family, (rng: Rng, ctx: CaseContext, index: number) => FuzzCase> = {
  frames: framesCase,
  prehandshake: preHandshakeCase,
  http: httpCase,
  websocket: websocketCase,
  stun: stunCase,
};

/** Case `index` of a run: its family round-robin over `families`, its bytes from (seed, index). */
export function makeCase(seed: number, index: number, families: readonly Family[], ctx: CaseContext): FuzzCase {
  const family = families[index % families.length]!;
  return GENERATORS[family](Rng.forCase(seed, index), ctx, index);
}
