/**
 * Property tests of the pure codecs (src/lib/protocol): every frame type round-trips through
 * encode → FrameReader → decodeFrame, decoding arbitrary bytes throws only the typed errors, and the
 * FrameReader yields the same frames for every chunking of the same stream. Seed and run counts:
 * test/helpers/fc.ts (FC_RUNS / FC_SEED override them).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BoxError, FrameTooLargeError, HandshakeError, ProtocolError } from '../../src/lib/errors.js';
import {
  FRAME_HEADER_LEN,
  FrameReader,
  FrameType,
  KEY_LEN,
  MAX_CLIENT_FRAME_LEN,
  MAX_PACKET_SIZE,
  NodePrivateKey,
  PEER_PRESENT_LEN,
  PING_LEN,
  buildClientInfoFrame,
  buildServerInfoFrame,
  clientInfoJson,
  decodeFrame,
  encode,
  encodeFrame,
  ip16ToString,
  ipTo16,
  isKnownFrameType,
  openClientInfo,
  openServerInfo,
  parseClientInfoJson,
  parseServerInfoJson,
  serverInfoJson,
  type ClientInfo,
  type Frame,
  type ServerInfo,
} from '../../src/lib/protocol/index.js';
import { bytewise, cut, fcParams, splitsOf } from '../helpers/fc.js';

const key = fc.uint8Array({ minLength: KEY_LEN, maxLength: KEY_LEN }).map((a) => Buffer.from(a));

/** Packet data from 0 bytes to MAX_PACKET_SIZE: mostly small, sometimes any size, sometimes the bounds. */
const packetData = fc.oneof(
  { weight: 6, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) },
  { weight: 2, arbitrary: fc.tuple(fc.integer({ min: 0, max: MAX_PACKET_SIZE }), fc.integer({ min: 0, max: 255 })).map(([n, s]) => patterned(n, s)) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, MAX_PACKET_SIZE - 1, MAX_PACKET_SIZE).map((n) => patterned(n, n & 0xff)) },
);

/** `n` bytes that differ from each other (so a shifted or truncated copy never compares equal). */
function patterned(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (seed + i * 31 + (i >>> 8)) & 0xff;
  return b;
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const ip16 = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  fc.uint8Array({ minLength: 4, maxLength: 4 }).map((v4) => Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4)),
  fc.constant(new Uint8Array(16)),
  // Runs of zero groups, where the "::" shortening has choices to make.
  fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff), { minLength: 8, maxLength: 8 }).map((g) => {
    const b = new Uint8Array(16);
    g.forEach((x, i) => ((b[2 * i] = x >>> 8), (b[2 * i + 1] = x & 0xff)));
    return b;
  }),
);
/** Canonical (URL-serialised) IPv6 text → 32 hex digits, independently of ipTo16. */
function hexGroups(canonical: string): string {
  const [head = '', tail] = canonical.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => g.padStart(4, '0')).join('');
}

/** Unknown frame types: anything the protocol does not define. */
const unknownType = fc.integer({ min: 0, max: 255 }).filter((t) => !isKnownFrameType(t));

/** A frame as an encoder builds it, and the value decodeFrame must give back. */
interface Case {
  bytes: Buffer;
  want: Frame;
}

const clientKeyPair = NodePrivateKey.generate();
const serverKeyPair = NodePrivateKey.generate();

const mk = (bytes: Buffer, want: Frame): Case => ({ bytes, want });

const frameCase: fc.Arbitrary<Case> = fc.oneof(
  key.map((k) => mk(encode.serverKey(k), { type: 'ServerKey', serverKey: k })),
  fc.tuple(key, fc.uint8Array({ maxLength: 200 })).map(([k, s]) => mk(encode.clientInfo(k, s), { type: 'ClientInfo', clientKey: k, sealed: Buffer.from(s) })),
  fc.uint8Array({ maxLength: 200 }).map((s) => mk(encode.serverInfo(s), { type: 'ServerInfo', sealed: Buffer.from(s) })),
  fc.tuple(key, packetData).map(([k, d]) => mk(encode.sendPacket(k, d), { type: 'SendPacket', dst: k, data: d })),
  fc.tuple(key, packetData).map(([k, d]) => mk(encode.recvPacket(k, d), { type: 'RecvPacket', src: k, data: d })),
  fc.constant(mk(encode.keepAlive(), { type: 'KeepAlive' })),
  fc.boolean().map((p) => mk(encode.notePreferred(p), { type: 'NotePreferred', preferred: p })),
  fc.tuple(key, fc.integer({ min: 0, max: 255 })).map(([k, r]) => mk(encode.peerGone(k, r), { type: 'PeerGone', peer: k, reason: r })),
  fc.tuple(key, ip16, fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 255 })).map(([k, ip, port, flags]) =>
    mk(encode.peerPresent(k, ip, port, flags), { type: 'PeerPresent', peer: k, ip: ip16ToString(ip), port, flags }),
  ),
  fc.tuple(key, key, packetData).map(([s, d, p]) => mk(encode.forwardPacket(s, d, p), { type: 'ForwardPacket', src: s, dst: d, data: p })),
  fc.constant(mk(encode.watchConns(), { type: 'WatchConns' })),
  key.map((k) => mk(encode.closePeer(k), { type: 'ClosePeer', peer: k })),
  fc.uint8Array({ minLength: PING_LEN, maxLength: 40 }).map((d) => mk(encode.ping(d), { type: 'Ping', data: Buffer.from(d.subarray(0, PING_LEN)) })),
  fc.uint8Array({ minLength: PING_LEN, maxLength: 40 }).map((d) => mk(encode.pong(d), { type: 'Pong', data: Buffer.from(d.subarray(0, PING_LEN)) })),
  fc.string({ unit: 'grapheme', maxLength: 60 }).map((s) => mk(encode.health(s), { type: 'Health', problem: s })),
  fc.tuple(u32, u32).map(([r, t]) => mk(encode.restarting(r, t), { type: 'Restarting', reconnectInMs: r, tryForMs: t })),
  fc.tuple(unknownType, fc.uint8Array({ maxLength: 100 })).map(([t, p]) => mk(encodeFrame(t, p), { type: 'Unknown', frameType: t, payload: Buffer.from(p) })),
);

/** Copies every Buffer field (the reader's payloads may be views of a chunk) and normalises for toEqual. */
function plain(f: Frame): Record<string, unknown> {
  return Object.fromEntries(Object.entries(f).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString('hex') : v]));
}

/** Runs a FrameReader over `chunks`: the decoded frames, then the error it threw (if any). */
function readAll(chunks: readonly Buffer[], limit = MAX_CLIENT_FRAME_LEN, skipUnknown = false): { frames: Record<string, unknown>[]; error: unknown } {
  const frames: Record<string, unknown>[] = [];
  const r = new FrameReader(
    () => limit,
    (type, payload) => frames.push(plain(decodeFrame(type, payload))),
    skipUnknown,
  );
  try {
    for (const c of chunks) r.push(c);
  } catch (error) {
    return { frames, error };
  }
  return { frames, error: r.idle ? null : 'partial frame buffered' };
}

function errorShape(e: unknown): unknown {
  if (e instanceof FrameTooLargeError) return { name: e.name, frameType: e.frameType, length: e.length, limit: e.limit };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return e;
}

describe('frames round-trip through encode, FrameReader and decodeFrame', () => {
  it('every frame type, every field', () => {
    fc.assert(
      fc.property(frameCase, ({ bytes, want }) => {
        expect(bytes.readUInt32BE(1)).toBe(bytes.length - FRAME_HEADER_LEN);
        const got = readAll([bytes]);
        expect(got.error).toBeNull();
        expect(got.frames).toEqual([plain(want)]);
      }),
      fcParams(400),
    );
  });

  it('PeerPresent from older servers: key only, key + address, key + address + flags', () => {
    fc.assert(
      fc.property(key, ip16, fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: PEER_PRESENT_LEN - KEY_LEN + 8 }), (k, ip, port, flags, tailLen) => {
        const full = encode.peerPresent(k, ip, port, flags).subarray(FRAME_HEADER_LEN + KEY_LEN);
        const tail = Buffer.concat([full, Buffer.alloc(8, 0xee)]).subarray(0, tailLen);
        const f = decodeFrame(FrameType.PeerPresent, Buffer.concat([k, tail]));
        const hasAddr = tailLen >= 18;
        expect(f).toEqual({ type: 'PeerPresent', peer: k, ip: hasAddr ? ip16ToString(ip) : '', port: hasAddr ? port : 0, flags: tailLen >= 19 ? flags : 0 });
      }),
      fcParams(300),
    );
  });

  it('PeerGone without the reason byte means Disconnected', () => {
    fc.assert(
      fc.property(key, (k) => {
        expect(decodeFrame(FrameType.PeerGone, k)).toEqual({ type: 'PeerGone', peer: k, reason: 0 });
      }),
      fcParams(50),
    );
  });

  it('encoders refuse wrong key sizes, oversized packets and short ping data with ProtocolError', () => {
    const badKey = fc.uint8Array({ maxLength: 40 }).filter((a) => a.length !== KEY_LEN);
    fc.assert(
      fc.property(badKey, key, (bad, good) => {
        for (const f of [() => encode.sendPacket(bad, Buffer.alloc(1)), () => encode.peerGone(bad, 0), () => encode.closePeer(bad), () => encode.forwardPacket(good, bad, Buffer.alloc(0)), () => encode.serverKey(bad)]) {
          expect(f).toThrow(ProtocolError);
        }
      }),
      fcParams(100),
    );
    fc.assert(
      fc.property(key, fc.integer({ min: MAX_PACKET_SIZE + 1, max: MAX_PACKET_SIZE + 3000 }), fc.uint8Array({ maxLength: PING_LEN - 1 }), (k, n, shortPing) => {
        expect(() => encode.sendPacket(k, Buffer.alloc(n))).toThrow(ProtocolError);
        expect(() => encode.recvPacket(k, Buffer.alloc(n))).toThrow(ProtocolError);
        expect(() => encode.ping(shortPing)).toThrow(ProtocolError);
        expect(() => encode.pong(shortPing)).toThrow(ProtocolError);
      }),
      fcParams(30),
    );
  });

  it('IPv6/IPv4 text from ip16ToString parses back to the same 16 bytes', () => {
    fc.assert(
      fc.property(ip16, (b) => {
        expect(Buffer.from(ipTo16(ip16ToString(b))).equals(Buffer.from(b))).toBe(true);
      }),
      fcParams(500),
    );
  });

  it('ipTo16 reads every valid IPv6 text as the WHATWG URL parser does (embedded IPv4 included)', () => {
    fc.assert(
      fc.property(fc.ipV6(), fc.boolean(), (s, upper) => {
        const text = upper ? s.toUpperCase() : s;
        // The URL parser's serialisation is plain hex groups, which is the other side of the comparison.
        const canonical = new URL(`http://[${text}]/`).hostname.slice(1, -1);
        expect(Buffer.from(ipTo16(text)).toString('hex')).toBe(Buffer.from(ipTo16(canonical)).toString('hex'));
        expect(Buffer.from(ipTo16(text)).toString('hex')).toBe(hexGroups(canonical));
      }),
      fcParams(500),
    );
  });

  it('ipTo16 of any text, IPv6-looking or not, gives 16 bytes and never throws', () => {
    const group = fc.oneof(fc.constantFrom('', '0', 'ffff', 'FFFF', '1', '12345', 'g', '1.2.3.4', '300.1.1.1', ' '), fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), maxLength: 5 }));
    const v6ish = fc.array(fc.tuple(group, fc.constantFrom(':', '::', ':::', '%', '.')), { maxLength: 12 }).map((parts) => parts.map(([g, sep]) => g + sep).join(''));
    // Well-formed groups around one "::", too many of them included.
    const hex = fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 1, maxLength: 4 });
    const compressed = fc.tuple(fc.array(hex, { maxLength: 10 }), fc.array(hex, { maxLength: 10 })).map(([h, t]) => `${h.join(':')}::${t.join(':')}`);
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), v6ish, compressed), (s) => {
        expect(ipTo16(s).length).toBe(16);
      }),
      fcParams(1000),
    );
  });
});

describe('decoding arbitrary bytes', () => {
  it('decodeFrame returns a Frame or throws ProtocolError, for every type byte and payload', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 120 }), (type, p) => {
        try {
          const f = decodeFrame(type, Buffer.from(p));
          expect(typeof f.type).toBe('string');
          if (!isKnownFrameType(type)) expect(f.type).toBe('Unknown');
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
        }
      }),
      fcParams(1000),
    );
  });

  it('FrameReader over random bytes throws only FrameTooLargeError, and decodes only typed errors', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.integer({ min: 0, max: 300 }), (bytes, limit) => {
        const r = new FrameReader(
          () => limit,
          (type, payload) => {
            try {
              decodeFrame(type, payload);
            } catch (e) {
              expect(e).toBeInstanceOf(ProtocolError);
            }
          },
        );
        try {
          r.push(Buffer.from(bytes));
        } catch (e) {
          expect(e).toBeInstanceOf(FrameTooLargeError);
        }
      }),
      fcParams(1000),
    );
  });
});

describe('ClientInfo / ServerInfo JSON and boxes', () => {
  const clientInfo: fc.Arbitrary<ClientInfo> = fc.record(
    {
      meshKey: key,
      version: fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
      canAckPings: fc.boolean(),
      isProber: fc.boolean(),
      appName: fc.string({ unit: 'grapheme', maxLength: 30 }),
    },
    { requiredKeys: ['canAckPings'] },
  );
  /** What a ClientInfo reads back as after the omitempty rules. */
  const normalClient = (i: ClientInfo): ClientInfo => ({
    canAckPings: i.canAckPings,
    ...(i.meshKey && i.meshKey.some((x) => x !== 0) ? { meshKey: i.meshKey } : {}),
    ...(i.version ? { version: i.version } : {}),
    ...(i.isProber ? { isProber: true } : {}),
    ...(i.appName ? { appName: i.appName } : {}),
  });
  const serverInfo: fc.Arbitrary<ServerInfo> = fc.record(
    { version: fc.integer({ min: 0, max: 2 ** 31 }), tokenBucketBytesPerSecond: fc.nat(), tokenBucketBytesBurst: fc.nat() },
    { requiredKeys: [] },
  );
  const normalServer = (i: ServerInfo): ServerInfo => Object.fromEntries(Object.entries(i).filter(([, v]) => v !== 0 && v !== undefined));

  it('ClientInfo JSON round-trips, and through a sealed ClientInfo frame', () => {
    fc.assert(
      fc.property(clientInfo, (info) => {
        expect(parseClientInfoJson(clientInfoJson(info))).toEqual(normalClient(info));
        const frame = buildClientInfoFrame(clientKeyPair.keyObject, clientKeyPair.publicKey, serverKeyPair.publicKey, info);
        const got = readAll([frame]).frames;
        expect(got.map((f) => f.type)).toEqual(['ClientInfo']);
        const opened = openClientInfo(serverKeyPair.keyObject, frame.subarray(FRAME_HEADER_LEN));
        expect(opened.clientKey.equals(clientKeyPair.publicKey)).toBe(true);
        expect(opened.info).toEqual(normalClient(info));
      }),
      fcParams(150),
    );
  });

  it('ServerInfo JSON round-trips, and through a sealed ServerInfo frame', () => {
    fc.assert(
      fc.property(serverInfo, (info) => {
        expect(parseServerInfoJson(serverInfoJson(info))).toEqual(normalServer(info));
        const frame = buildServerInfoFrame(serverKeyPair.keyObject, clientKeyPair.publicKey, info);
        const d = decodeFrame(frame[0]!, frame.subarray(FRAME_HEADER_LEN));
        if (d.type !== 'ServerInfo') throw new Error(d.type);
        expect(openServerInfo(clientKeyPair.keyObject, serverKeyPair.publicKey, d.sealed)).toEqual(normalServer(info));
      }),
      fcParams(150),
    );
  });

  it('arbitrary JSON text, objects with wrong types and arbitrary boxes throw only HandshakeError / BoxError', () => {
    const text = fc.oneof(fc.string(), fc.json(), fc.jsonValue().map((v) => JSON.stringify(v)), fc.dictionary(fc.constantFrom('meshKey', 'version', 'CanAckPings', 'canackpings', 'IsProber', 'AppName', 'TokenBucketBytesPerSecond', 'tokenbucketbytesburst', '__proto__'), fc.jsonValue()).map((o) => JSON.stringify(o)));
    fc.assert(
      fc.property(text, (t) => {
        for (const parse of [parseClientInfoJson, parseServerInfoJson]) {
          try {
            parse(t);
          } catch (e) {
            expect(e).toBeInstanceOf(HandshakeError);
          }
        }
      }),
      fcParams(500),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (p) => {
        for (const f of [() => openClientInfo(serverKeyPair.keyObject, Buffer.from(p)), () => openServerInfo(clientKeyPair.keyObject, serverKeyPair.publicKey, Buffer.from(p))]) {
          try {
            f();
          } catch (e) {
            expect(e instanceof HandshakeError || e instanceof BoxError).toBe(true);
          }
        }
      }),
      fcParams(200),
    );
  });
});

describe('FrameReader yields the same frames for every chunking', () => {
  const stream = fc.array(frameCase, { minLength: 1, maxLength: 8 });

  it('whole, 1-byte reads and random splits (as separate reads or WebSocket messages) agree', () => {
    fc.assert(
      fc.property(
        stream.chain((cases) => {
          const bytes = Buffer.concat(cases.map((c) => c.bytes));
          return fc.tuple(fc.constant(cases), fc.constant(bytes), splitsOf(bytes.length));
        }),
        fc.boolean(),
        ([cases, bytes, cuts], skipUnknown) => {
          const want = cases.filter((c) => !skipUnknown || c.want.type !== 'Unknown').map((c) => plain(c.want));
          expect(readAll([bytes], MAX_CLIENT_FRAME_LEN, skipUnknown)).toEqual({ frames: want, error: null });
          expect(readAll(cut(bytes, cuts), MAX_CLIENT_FRAME_LEN, skipUnknown)).toEqual({ frames: want, error: null });
          // 1-byte reads only on small streams (a 64 KiB packet byte by byte is slow, not different).
          if (bytes.length <= 4096) expect(readAll(bytewise(bytes), MAX_CLIENT_FRAME_LEN, skipUnknown)).toEqual({ frames: want, error: null });
        },
      ),
      fcParams(200),
    );
  });

  it('an oversized frame gives the same frames before it and the same FrameTooLargeError at any split', () => {
    const limit = 1000;
    fc.assert(
      fc.property(
        fc.array(frameCase.filter((c) => c.bytes.length - FRAME_HEADER_LEN <= limit), { maxLength: 5 }),
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: limit + 1, max: 0xffffffff }),
        fc.uint8Array({ maxLength: 50 }),
        (cases, type, len, trailing) => {
          const bad = Buffer.alloc(FRAME_HEADER_LEN);
          bad[0] = type;
          bad.writeUInt32BE(len, 1);
          const bytes = Buffer.concat([...cases.map((c) => c.bytes), bad, trailing]);
          const whole = readAll([bytes], limit);
          expect(whole.frames).toEqual(cases.map((c) => plain(c.want)));
          expect(errorShape(whole.error)).toEqual({ name: 'FrameTooLargeError', frameType: type, length: len, limit });
          fc.assert(
            fc.property(splitsOf(bytes.length), (cuts) => {
              const split = readAll(cut(bytes, cuts), limit);
              expect(split.frames).toEqual(whole.frames);
              expect(errorShape(split.error)).toEqual(errorShape(whole.error));
            }),
            { numRuns: 5, seed: len },
          );
          const one = readAll(bytewise(bytes), limit);
          expect(errorShape(one.error)).toEqual(errorShape(whole.error));
        },
      ),
      fcParams(150),
    );
  });
});
