/**
 * STUN (RFC 5389 / RFC 8489) message codec: buffers in, values out, no sockets.
 *
 * Why our own codec and not @msimerson/stun's: that library re-encodes a decoded message before checking
 * FINGERPRINT / MESSAGE-INTEGRITY, so any request with non-zero padding (RFC 5769 §2.1) or an attribute it
 * does not know fails validation, and it has no notion of the 0x8020 XOR-MAPPED-ADDRESS variant or of
 * IPv4-mapped results. Checks here always run over the bytes exactly as received. The library is used in
 * tests as an independent RFC 5389 implementation to interoperate with.
 */
import { createHmac, createHash, timingSafeEqual } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { crc32 } from 'node:zlib';
import { ProtocolError } from '../errors.js';
import { ipTo16 } from '../protocol/frames.js';

/** RFC 5389 §6: fixed value in bytes 4–7 of every RFC 5389 message. */
export const MAGIC_COOKIE = 0x2112a442;
export const MAGIC_COOKIE_BYTES: Buffer = Buffer.from([0x21, 0x12, 0xa4, 0x42]);
export const HEADER_LENGTH = 20;
export const TRANSACTION_ID_LENGTH = 12;
/** RFC 5389 §15.5: CRC-32 of the message XOR this ("STUN"). */
export const FINGERPRINT_XOR = 0x5354554e;
/** FINGERPRINT attribute on the wire: 4-byte TLV header + CRC-32. */
export const FINGERPRINT_ATTR_LENGTH = 8;
/** MESSAGE-INTEGRITY attribute on the wire: 4-byte TLV header + HMAC-SHA1. */
export const MESSAGE_INTEGRITY_ATTR_LENGTH = 24;
/** net/stun/stun.go: the SOFTWARE value every Tailscale client sends and derper requires. */
export const TAILSCALE_SOFTWARE = 'tailnode';
/** Length of the request Tailscale clients send (header + SOFTWARE "tailnode" + FINGERPRINT). */
export const TAILSCALE_REQUEST_LENGTH = 40;

export const StunClass = { Request: 0, Indication: 1, SuccessResponse: 2, ErrorResponse: 3 } as const;
export type StunClass = (typeof StunClass)[keyof typeof StunClass];

export const StunMethod = { Binding: 0x001 } as const;

export const MessageType = {
  BindingRequest: 0x0001,
  BindingIndication: 0x0011,
  BindingSuccess: 0x0101,
  BindingError: 0x0111,
} as const;

export const AttrType = {
  MappedAddress: 0x0001,
  ChangeRequest: 0x0003,
  Username: 0x0006,
  MessageIntegrity: 0x0008,
  ErrorCode: 0x0009,
  UnknownAttributes: 0x000a,
  Realm: 0x0014,
  Nonce: 0x0015,
  XorMappedAddress: 0x0020,
  Priority: 0x0024,
  UseCandidate: 0x0025,
  Padding: 0x0026,
  ResponsePort: 0x0027,
  /** Pre-RFC 5389 drafts' XOR-MAPPED-ADDRESS; some servers still send it (net/stun/stun.go accepts it). */
  XorMappedAddressAlt: 0x8020,
  Software: 0x8022,
  AlternateServer: 0x8023,
  Fingerprint: 0x8028,
  IceControlled: 0x8029,
  IceControlling: 0x802a,
  ResponseOrigin: 0x802b,
  OtherAddress: 0x802c,
} as const;

export const AddressFamily = { IPv4: 0x01, IPv6: 0x02 } as const;

/** RFC 5389 §7.1: comprehension-required attributes are 0x0000–0x7FFF. */
export function isComprehensionRequired(type: number): boolean {
  return type < 0x8000;
}

/** RFC 5389 §6: packs a 12-bit method and 2-bit class into the 14-bit message type. */
export function messageType(method: number, cls: StunClass): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7);
}

export function methodOf(type: number): number {
  return (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
}

export function classOf(type: number): StunClass {
  return (((type >> 4) & 1) | ((type >> 7) & 2)) as StunClass;
}

export interface StunAttribute {
  type: number;
  /** Unpadded value (a view into the message buffer). */
  value: Buffer;
  /** Offset of the attribute's TLV header within the message. */
  offset: number;
}

export interface StunMessage {
  type: number;
  /** Header length field (bytes after the header). */
  length: number;
  transactionId: Buffer;
  attributes: StunAttribute[];
  /** The message bytes (header + `length`), a view into the input. */
  raw: Buffer;
  /** Offset of the FINGERPRINT attribute, -1 if absent. */
  fingerprintOffset: number;
  /** Offset of the first MESSAGE-INTEGRITY attribute, -1 if absent. */
  integrityOffset: number;
}

export type ParseFailure =
  | 'too_short'
  | 'high_bits'
  | 'bad_cookie'
  | 'bad_length'
  | 'length_mismatch'
  | 'truncated_attribute'
  | 'attribute_after_fingerprint';

export interface ParseOptions {
  /**
   * true (default, what a server should use): the datagram must be exactly one message (RFC 5389 §7.3:
   * header length + 20 = datagram size, multiple of 4). false: like net/stun ParseResponse, the header
   * length may be shorter than the datagram and trailing bytes are ignored.
   */
  strict?: boolean;
}

/** Cheap pre-check (net/stun.Is): long enough, top two bits zero, magic cookie present. */
export function looksLikeStun(buf: Uint8Array): boolean {
  return buf.length >= HEADER_LENGTH && (buf[0]! & 0xc0) === 0 && buf[4] === 0x21 && buf[5] === 0x12 && buf[6] === 0xa4 && buf[7] === 0x42;
}

/**
 * Parses one STUN message without throwing (the server's hot path sees mostly hostile input). Returns
 * the reason on failure. Attribute values are views into `buf`; padding bytes are ignored.
 */
export function parseMessage(buf: Buffer, options: ParseOptions = {}): StunMessage | ParseFailure {
  const strict = options.strict ?? true;
  if (buf.length < HEADER_LENGTH) return 'too_short';
  if ((buf[0]! & 0xc0) !== 0) return 'high_bits';
  if (buf.readUInt32BE(4) !== MAGIC_COOKIE) return 'bad_cookie';
  const length = buf.readUInt16BE(2);
  if (length % 4 !== 0) return 'bad_length';
  const end = HEADER_LENGTH + length;
  if (strict ? end !== buf.length : end > buf.length) return 'length_mismatch';
  const attributes: StunAttribute[] = [];
  let fingerprintOffset = -1;
  let integrityOffset = -1;
  let off = HEADER_LENGTH;
  while (off < end) {
    if (fingerprintOffset >= 0) return 'attribute_after_fingerprint';
    if (off + 4 > end) return 'truncated_attribute';
    const type = buf.readUInt16BE(off);
    const len = buf.readUInt16BE(off + 2);
    const padded = (len + 3) & ~3;
    if (off + 4 + padded > end) return 'truncated_attribute';
    attributes.push({ type, value: buf.subarray(off + 4, off + 4 + len), offset: off });
    if (type === AttrType.Fingerprint) fingerprintOffset = off;
    else if (type === AttrType.MessageIntegrity && integrityOffset < 0) integrityOffset = off;
    off += 4 + padded;
  }
  return {
    type: buf.readUInt16BE(0),
    length,
    transactionId: buf.subarray(8, HEADER_LENGTH),
    attributes,
    raw: buf.subarray(0, end),
    fingerprintOffset,
    integrityOffset,
  };
}

/** Like parseMessage but throws a ProtocolError naming the reason. */
export function decodeMessage(buf: Buffer, options: ParseOptions = {}): StunMessage {
  const m = parseMessage(buf, options);
  if (typeof m === 'string') throw new ProtocolError(`not a valid STUN message: ${m}`, { context: { reason: m, size: buf.length } });
  return m;
}

export function getAttribute(m: StunMessage, type: number): StunAttribute | undefined {
  return m.attributes.find((a) => a.type === type);
}

export function computeFingerprint(bytesBeforeFingerprint: Uint8Array): number {
  return (crc32(bytesBeforeFingerprint) ^ FINGERPRINT_XOR) >>> 0;
}

/** true if the message has a FINGERPRINT attribute (necessarily last) with the correct CRC. */
export function verifyFingerprint(m: StunMessage): boolean {
  if (m.fingerprintOffset < 0) return false;
  const attr = m.attributes[m.attributes.length - 1]!;
  if (attr.value.length !== 4) return false;
  return computeFingerprint(m.raw.subarray(0, m.fingerprintOffset)) === attr.value.readUInt32BE(0);
}

/**
 * RFC 5389 §15.4: HMAC-SHA1 over the message up to MESSAGE-INTEGRITY, with the header length counting
 * up to and including MESSAGE-INTEGRITY (so a following FINGERPRINT is excluded).
 */
export function computeMessageIntegrity(bytesBeforeIntegrity: Uint8Array, key: Uint8Array): Buffer {
  const head = Buffer.from(bytesBeforeIntegrity.subarray(0, HEADER_LENGTH));
  head.writeUInt16BE(bytesBeforeIntegrity.length - HEADER_LENGTH + MESSAGE_INTEGRITY_ATTR_LENGTH, 2);
  return createHmac('sha1', key).update(head).update(bytesBeforeIntegrity.subarray(HEADER_LENGTH)).digest();
}

export function verifyMessageIntegrity(m: StunMessage, key: Uint8Array): boolean {
  if (m.integrityOffset < 0) return false;
  const attr = m.attributes.find((a) => a.offset === m.integrityOffset)!;
  if (attr.value.length !== 20) return false;
  return timingSafeEqual(computeMessageIntegrity(m.raw.subarray(0, m.integrityOffset), key), attr.value);
}

// RFC 3454 B.1 "commonly mapped to nothing" and C.1.2 non-ASCII spaces, as used by SASLprep (RFC 4013).
function isMappedToNothing(c: number): boolean {
  return c === 0xad || c === 0x34f || c === 0x1806 || (c >= 0x180b && c <= 0x180d) || (c >= 0x200b && c <= 0x200d) || c === 0x2060 || (c >= 0xfe00 && c <= 0xfe0f) || c === 0xfeff;
}
function isNonAsciiSpace(c: number): boolean {
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x202f || c === 0x205f || c === 0x3000;
}

/**
 * SASLprep (RFC 4013) mapping + NFKC. Prohibited-output and bidi checks are not applied: the result is
 * only used to derive HMAC keys, so an unusual password yields a different key rather than a crash.
 */
export function saslPrep(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (isMappedToNothing(c)) continue;
    out += isNonAsciiSpace(c) ? ' ' : ch;
  }
  return out.normalize('NFKC');
}

/** RFC 5389 §15.4 short-term credential key. */
export function shortTermKey(password: string): Buffer {
  return Buffer.from(saslPrep(password), 'utf8');
}

/** RFC 5389 §15.4 long-term credential key: MD5(username ":" realm ":" SASLprep(password)). */
export function longTermKey(username: string, realm: string, password: string): Buffer {
  return createHash('md5').update(`${username}:${realm}:${saslPrep(password)}`, 'utf8').digest();
}

// ---- addresses ----

/** Raw bytes of an IP literal (4 for IPv4, 16 for IPv6; IPv4-mapped IPv6 stays 16 bytes). */
export function ipToBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (isIPv6(ip)) return Buffer.from(ipTo16(ip));
  throw new ProtocolError(`not an IP address: ${ip}`, { context: { ip } });
}

/** RFC 5952 text of 4 or 16 address bytes (longest zero run compressed); IPv4-mapped stays IPv6 text. */
export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i]! << 8) | b[i + 1]!);
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** ::ffff:a.b.c.d → a.b.c.d; anything else unchanged. */
export function unmapIPv4(ip: string): string {
  return ip.startsWith('::ffff:') && isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
}

export interface MappedAddress {
  /** Address text; IPv4-mapped IPv6 results are unmapped to IPv4 (net/stun ParseResponse does the same). */
  address: string;
  port: number;
  family: 4 | 6;
}

/** MAPPED-ADDRESS-style value: 0, family, port, address. */
export function encodeAddressValue(ip: string, port: number): Buffer {
  const a = ipToBytes(unmapIPv4(ip));
  const v = Buffer.alloc(4 + a.length);
  v[1] = a.length === 4 ? AddressFamily.IPv4 : AddressFamily.IPv6;
  v.writeUInt16BE(port, 2);
  a.copy(v, 4);
  return v;
}

export function encodeXorAddressValue(ip: string, port: number, transactionId: Uint8Array): Buffer {
  const v = encodeAddressValue(ip, port);
  xorAddressInPlace(v, transactionId);
  return v;
}

function xorAddressInPlace(v: Buffer, transactionId: Uint8Array): void {
  v[2]! ^= 0x21;
  v[3]! ^= 0x12;
  for (let i = 0; i < v.length - 4; i++) v[4 + i]! ^= i < 4 ? MAGIC_COOKIE_BYTES[i]! : transactionId[i - 4]!;
}

export function decodeAddressValue(value: Uint8Array): MappedAddress | undefined {
  if (value.length < 4) return undefined;
  const fam = value[1];
  const len = fam === AddressFamily.IPv4 ? 4 : fam === AddressFamily.IPv6 ? 16 : 0;
  if (len === 0 || value.length < 4 + len) return undefined;
  const address = unmapIPv4(bytesToIp(value.subarray(4, 4 + len)));
  return { address, port: (value[2]! << 8) | value[3]!, family: isIPv4(address) ? 4 : 6 };
}

export function decodeXorAddressValue(value: Uint8Array, transactionId: Uint8Array): MappedAddress | undefined {
  const v = Buffer.from(value);
  xorAddressInPlace(v, transactionId);
  return decodeAddressValue(v);
}

// ---- ERROR-CODE / UNKNOWN-ATTRIBUTES ----

export function encodeErrorCodeValue(code: number, reason: string): Buffer {
  const r = Buffer.from(reason, 'utf8');
  const v = Buffer.alloc(4 + r.length);
  v[2] = Math.floor(code / 100) & 0x07;
  v[3] = code % 100;
  r.copy(v, 4);
  return v;
}

export function decodeErrorCodeValue(value: Uint8Array): { code: number; reason: string } | undefined {
  if (value.length < 4) return undefined;
  return { code: (value[2]! & 0x07) * 100 + value[3]!, reason: Buffer.from(value.subarray(4)).toString('utf8') };
}

export function encodeUnknownAttributesValue(types: readonly number[]): Buffer {
  const v = Buffer.alloc(types.length * 2);
  types.forEach((t, i) => v.writeUInt16BE(t, i * 2));
  return v;
}

export function decodeUnknownAttributesValue(value: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i + 1 < value.length; i += 2) out.push((value[i]! << 8) | value[i + 1]!);
  return out;
}

// ---- encoding ----

export interface EncodeOptions {
  type: number;
  transactionId: Uint8Array;
  attributes?: readonly { type: number; value: Uint8Array }[];
  /** Appends MESSAGE-INTEGRITY computed with this key (after `attributes`). */
  integrityKey?: Uint8Array;
  /** Appends FINGERPRINT (last). */
  fingerprint?: boolean;
  /** Byte used for attribute padding (RFC 5769 vectors use 0x20); default 0. */
  padByte?: number;
}

/** Builds a complete message. General purpose; the server's hot path uses writeBindingSuccess. */
export function encodeMessage(o: EncodeOptions): Buffer {
  if (o.transactionId.length !== TRANSACTION_ID_LENGTH) {
    throw new ProtocolError(`transaction ID must be ${TRANSACTION_ID_LENGTH} bytes`, { context: { length: o.transactionId.length } });
  }
  const attrs = o.attributes ?? [];
  let size = HEADER_LENGTH;
  for (const a of attrs) size += 4 + ((a.value.length + 3) & ~3);
  if (o.integrityKey) size += MESSAGE_INTEGRITY_ATTR_LENGTH;
  if (o.fingerprint) size += FINGERPRINT_ATTR_LENGTH;
  if (size - HEADER_LENGTH > 0xffff) throw new ProtocolError('STUN message too long', { context: { size } });
  const buf = Buffer.alloc(size, o.padByte ?? 0);
  buf.writeUInt16BE(o.type, 0);
  buf.writeUInt16BE(size - HEADER_LENGTH, 2);
  buf.writeUInt32BE(MAGIC_COOKIE, 4);
  buf.set(o.transactionId, 8);
  let off = HEADER_LENGTH;
  for (const a of attrs) {
    buf.writeUInt16BE(a.type, off);
    buf.writeUInt16BE(a.value.length, off + 2);
    buf.set(a.value, off + 4);
    off += 4 + ((a.value.length + 3) & ~3);
  }
  if (o.integrityKey) {
    const mac = computeMessageIntegrity(buf.subarray(0, off), o.integrityKey);
    buf.writeUInt16BE(AttrType.MessageIntegrity, off);
    buf.writeUInt16BE(20, off + 2);
    mac.copy(buf, off + 4);
    off += MESSAGE_INTEGRITY_ATTR_LENGTH;
  }
  if (o.fingerprint) writeFingerprint(buf, off);
  return buf;
}

/** Writes FINGERPRINT at `off` (the header length must already count it). */
function writeFingerprint(buf: Buffer, off: number): void {
  buf.writeUInt16BE(AttrType.Fingerprint, off);
  buf.writeUInt16BE(4, off + 2);
  buf.writeUInt32BE(computeFingerprint(buf.subarray(0, off)), off + 4);
}

/**
 * The request Tailscale clients send (net/stun/stun.go: Request): header + SOFTWARE "tailnode" +
 * FINGERPRINT, exactly 40 bytes, SOFTWARE first (derper's XDP path requires that order).
 */
export function buildBindingRequest(transactionId: Uint8Array): Buffer {
  return encodeMessage({
    type: MessageType.BindingRequest,
    transactionId,
    attributes: [{ type: AttrType.Software, value: Buffer.from(TAILSCALE_SOFTWARE) }],
    fingerprint: true,
  });
}

/** Sizes of the success response writeBindingSuccess produces. */
export function bindingSuccessLength(ipv6: boolean, withMapped: boolean, withFingerprint: boolean): number {
  const addrAttr = ipv6 ? 24 : 12;
  return HEADER_LENGTH + addrAttr + (withMapped ? addrAttr : 0) + (withFingerprint ? FINGERPRINT_ATTR_LENGTH : 0);
}

/**
 * Hand-built Binding success response: XOR-MAPPED-ADDRESS first (what Tailscale clients and derper's
 * own format expect), then optionally MAPPED-ADDRESS for RFC 3489-era clients, then optionally
 * FINGERPRINT. `addr` is 4 or 16 raw bytes (caller unmaps IPv4-mapped sources first).
 */
export function writeBindingSuccess(transactionId: Uint8Array, addr: Uint8Array, port: number, withMapped: boolean, withFingerprint: boolean): Buffer {
  const v6 = addr.length === 16;
  const size = bindingSuccessLength(v6, withMapped, withFingerprint);
  // Its own ArrayBuffer, not a slice of Node's 64 KiB allocUnsafe pool: the server caches responses,
  // and a cached slice would keep its whole pool slab alive.
  const buf = Buffer.allocUnsafeSlow(size);
  buf.writeUInt16BE(MessageType.BindingSuccess, 0);
  buf.writeUInt16BE(size - HEADER_LENGTH, 2);
  buf.writeUInt32BE(MAGIC_COOKIE, 4);
  buf.set(transactionId, 8);
  const vlen = 4 + addr.length;
  let off = HEADER_LENGTH;
  buf.writeUInt16BE(AttrType.XorMappedAddress, off);
  buf.writeUInt16BE(vlen, off + 2);
  buf[off + 4] = 0;
  buf[off + 5] = v6 ? AddressFamily.IPv6 : AddressFamily.IPv4;
  buf.writeUInt16BE(port ^ 0x2112, off + 6);
  for (let i = 0; i < addr.length; i++) buf[off + 8 + i] = addr[i]! ^ (i < 4 ? MAGIC_COOKIE_BYTES[i]! : transactionId[i - 4]!);
  off += 4 + vlen;
  if (withMapped) {
    buf.writeUInt16BE(AttrType.MappedAddress, off);
    buf.writeUInt16BE(vlen, off + 2);
    buf[off + 4] = 0;
    buf[off + 5] = v6 ? AddressFamily.IPv6 : AddressFamily.IPv4;
    buf.writeUInt16BE(port, off + 6);
    buf.set(addr, off + 8);
    off += 4 + vlen;
  }
  if (withFingerprint) writeFingerprint(buf, off);
  return buf;
}

export interface BindingResponse extends MappedAddress {
  transactionId: Buffer;
  /** Which attribute supplied the address. */
  source: 'xor-mapped' | 'mapped';
}

export type BindingResponseFailure = ParseFailure | 'not_binding_success' | 'no_address' | 'bad_fingerprint';

/**
 * Parses a Binding success response the way Tailscale clients do (net/stun ParseResponse): lenient length
 * (trailing bytes ignored), XOR-MAPPED-ADDRESS (0x0020 or 0x8020) preferred over MAPPED-ADDRESS,
 * IPv4-mapped results unmapped. Unlike Tailscale it also rejects a present-but-wrong FINGERPRINT.
 */
export function parseBindingResponse(buf: Buffer): BindingResponse | BindingResponseFailure {
  const m = parseMessage(buf, { strict: false });
  if (typeof m === 'string') return m;
  if (m.type !== MessageType.BindingSuccess) return 'not_binding_success';
  if (m.fingerprintOffset >= 0 && !verifyFingerprint(m)) return 'bad_fingerprint';
  let xor: MappedAddress | undefined;
  let mapped: MappedAddress | undefined;
  for (const a of m.attributes) {
    if ((a.type === AttrType.XorMappedAddress || a.type === AttrType.XorMappedAddressAlt) && !xor) xor = decodeXorAddressValue(a.value, m.transactionId);
    else if (a.type === AttrType.MappedAddress && !mapped) mapped = decodeAddressValue(a.value);
  }
  const transactionId = Buffer.from(m.transactionId);
  if (xor) return { ...xor, transactionId, source: 'xor-mapped' };
  if (mapped) return { ...mapped, transactionId, source: 'mapped' };
  return 'no_address';
}
