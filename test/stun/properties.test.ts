/**
 * Property tests of the STUN codec (src/lib/stun/message.ts): Binding requests and responses,
 * XOR-MAPPED-ADDRESS (IPv4 and IPv6), general messages with MESSAGE-INTEGRITY and FINGERPRINT
 * round-trip; and nothing the codec offers for received bytes ever throws (parseMessage,
 * parseBindingResponse, the verify and attribute decoders) on random datagrams, mutated valid
 * messages or truncations. Seed and run counts: test/helpers/fc.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/lib/errors.js';
import {
  AttrType,
  FINGERPRINT_ATTR_LENGTH,
  HEADER_LENGTH,
  MessageType,
  StunClass,
  TAILSCALE_REQUEST_LENGTH,
  TAILSCALE_SOFTWARE,
  bindingSuccessLength,
  buildBindingRequest,
  bytesToIp,
  classOf,
  decodeAddressValue,
  decodeErrorCodeValue,
  decodeMessage,
  decodeUnknownAttributesValue,
  decodeXorAddressValue,
  encodeErrorCodeValue,
  encodeMessage,
  encodeUnknownAttributesValue,
  encodeXorAddressValue,
  getAttribute,
  ipToBytes,
  messageType,
  methodOf,
  parseBindingResponse,
  parseMessage,
  unmapIPv4,
  verifyFingerprint,
  verifyMessageIntegrity,
  writeBindingSuccess,
  type StunMessage,
} from '../../src/lib/stun/index.js';
import { fcParams } from '../helpers/fc.js';

const txid = fc.uint8Array({ minLength: 12, maxLength: 12 }).map((a) => Buffer.from(a));
const port = fc.integer({ min: 0, max: 0xffff });
const addrBytes = fc.oneof(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 16, maxLength: 16 })).map((a) => Buffer.from(a));
const attribute = fc.record({ type: fc.integer({ min: 0, max: 0xffff }).filter((t) => t !== AttrType.Fingerprint && t !== AttrType.MessageIntegrity), value: fc.uint8Array({ maxLength: 80 }) });

/** What an address reads back as: IPv4-mapped IPv6 comes back as IPv4 (as net/stun does). */
const readBack = (b: Uint8Array) => unmapIPv4(bytesToIp(b));

/** Every decoder a receiver may run on a parsed message; none may throw. */
function exercise(m: StunMessage): void {
  verifyFingerprint(m);
  verifyMessageIntegrity(m, Buffer.from('key'));
  verifyMessageIntegrity(m, Buffer.alloc(0));
  getAttribute(m, AttrType.XorMappedAddress);
  for (const a of m.attributes) {
    decodeAddressValue(a.value);
    decodeXorAddressValue(a.value, m.transactionId);
    decodeErrorCodeValue(a.value);
    decodeUnknownAttributesValue(a.value);
  }
  methodOf(m.type);
  classOf(m.type);
}

describe('STUN round trips', () => {
  it('the Tailscale Binding request: 40 bytes, SOFTWARE tailnode, valid FINGERPRINT, same transaction ID', () => {
    fc.assert(
      fc.property(txid, (id) => {
        const b = buildBindingRequest(id);
        expect(b.length).toBe(TAILSCALE_REQUEST_LENGTH);
        const m = decodeMessage(b);
        expect(m.type).toBe(MessageType.BindingRequest);
        expect(m.transactionId.equals(id)).toBe(true);
        expect(getAttribute(m, AttrType.Software)?.value.toString()).toBe(TAILSCALE_SOFTWARE);
        expect(verifyFingerprint(m)).toBe(true);
      }),
      fcParams(200),
    );
  });

  it('Binding success responses (v4/v6, with or without MAPPED-ADDRESS and FINGERPRINT) parse back to the address', () => {
    fc.assert(
      fc.property(txid, addrBytes, port, fc.boolean(), fc.boolean(), (id, addr, p, withMapped, withFp) => {
        const b = writeBindingSuccess(id, addr, p, withMapped, withFp);
        expect(b.length).toBe(bindingSuccessLength(addr.length === 16, withMapped, withFp));
        const r = parseBindingResponse(b);
        if (typeof r === 'string') throw new Error(r);
        expect(r).toEqual({ address: readBack(addr), port: p, family: readBack(addr).includes(':') ? 6 : 4, transactionId: id, source: 'xor-mapped' });
        const m = decodeMessage(b);
        expect(verifyFingerprint(m)).toBe(withFp);
        if (withMapped) expect(decodeAddressValue(getAttribute(m, AttrType.MappedAddress)!.value)).toEqual({ address: r.address, port: p, family: r.family });
      }),
      fcParams(400),
    );
  });

  it('XOR-MAPPED-ADDRESS values of IP text round-trip (either attribute type, trailing bytes ignored)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), port, txid, fc.constantFrom(AttrType.XorMappedAddress, AttrType.XorMappedAddressAlt), fc.uint8Array({ maxLength: 12 }), (ip, p, id, type, trailing) => {
        const want = readBack(ipToBytes(unmapIPv4(ip)));
        expect(decodeXorAddressValue(encodeXorAddressValue(ip, p, id), id)).toMatchObject({ address: want, port: p });
        const b = Buffer.concat([encodeMessage({ type: MessageType.BindingSuccess, transactionId: id, attributes: [{ type, value: encodeXorAddressValue(ip, p, id) }] }), trailing]);
        const r = parseBindingResponse(b);
        if (typeof r === 'string') throw new Error(r);
        expect(r).toMatchObject({ address: want, port: p, source: 'xor-mapped' });
      }),
      fcParams(400),
    );
  });

  it('general messages with any attributes, padding byte, MESSAGE-INTEGRITY and FINGERPRINT parse back', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0x3fff }),
        txid,
        fc.array(attribute, { maxLength: 8 }),
        fc.option(fc.uint8Array({ minLength: 1, maxLength: 40 }), { nil: undefined }),
        fc.boolean(),
        fc.integer({ min: 0, max: 255 }),
        (type, id, attrs, key, fingerprint, padByte) => {
          const b = encodeMessage({ type, transactionId: id, attributes: attrs, ...(key ? { integrityKey: key } : {}), fingerprint, padByte });
          const m = parseMessage(b);
          if (typeof m === 'string') throw new Error(m);
          expect(m.type).toBe(type);
          expect(m.transactionId.equals(id)).toBe(true);
          const tail = (key ? 1 : 0) + (fingerprint ? 1 : 0);
          expect(m.attributes.slice(0, attrs.length).map((a) => ({ type: a.type, value: Buffer.from(a.value).toString('hex') }))).toEqual(
            attrs.map((a) => ({ type: a.type, value: Buffer.from(a.value).toString('hex') })),
          );
          expect(m.attributes.length).toBe(attrs.length + tail);
          expect(verifyFingerprint(m)).toBe(fingerprint);
          if (key) {
            expect(verifyMessageIntegrity(m, key)).toBe(true);
            expect(verifyMessageIntegrity(m, Buffer.concat([key, Buffer.of(1)]))).toBe(false);
          }
          if (fingerprint) expect(b.length - m.fingerprintOffset).toBe(FINGERPRINT_ATTR_LENGTH);
        },
      ),
      fcParams(300),
    );
  });

  it('message type packing, ERROR-CODE and UNKNOWN-ATTRIBUTES round-trip', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xfff }),
        fc.constantFrom(StunClass.Request, StunClass.Indication, StunClass.SuccessResponse, StunClass.ErrorResponse),
        fc.integer({ min: 300, max: 699 }),
        fc.string({ unit: 'grapheme', maxLength: 40 }),
        fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 10 }),
        (method, cls, code, reason, types) => {
          const t = messageType(method, cls);
          expect([methodOf(t), classOf(t)]).toEqual([method, cls]);
          expect(decodeErrorCodeValue(encodeErrorCodeValue(code, reason))).toEqual({ code, reason });
          expect(decodeUnknownAttributesValue(encodeUnknownAttributesValue(types))).toEqual(types);
        },
      ),
      fcParams(300),
    );
  });
});

describe('STUN decoding never throws', () => {
  const valid = fc.oneof(
    txid.map((id) => buildBindingRequest(id)),
    fc.tuple(txid, addrBytes, port, fc.boolean(), fc.boolean()).map(([id, a, p, m, f]) => writeBindingSuccess(id, a, p, m, f)),
    fc.tuple(txid, fc.array(attribute, { maxLength: 4 }), fc.boolean()).map(([id, attributes, fingerprint]) => encodeMessage({ type: MessageType.BindingError, transactionId: id, attributes, integrityKey: Buffer.from('k'), fingerprint })),
  );
  /** Bit flips, byte overwrites, truncation and extension of a valid message. */
  const mutated = fc
    .tuple(valid, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()), { maxLength: 6 }), fc.nat(), fc.uint8Array({ maxLength: 12 }), fc.constantFrom('none', 'truncate', 'extend'))
    .map(([b, edits, cutAt, extra, how]) => {
      let out = Buffer.from(b);
      for (const [pos, v, flip] of edits) {
        const i = pos % out.length;
        out[i] = flip ? out[i]! ^ (1 << (v & 7)) : v;
      }
      if (how === 'truncate') out = out.subarray(0, cutAt % (out.length + 1));
      if (how === 'extend') out = Buffer.concat([out, extra]);
      return out;
    });
  /** A header that passes the first checks, followed by random attribute bytes (reaches the TLV loop). */
  const plausible = fc.tuple(fc.integer({ min: 0, max: 0x3fff }), txid, fc.uint8Array({ maxLength: 120 })).map(([type, id, body]) => {
    const b = Buffer.alloc(HEADER_LENGTH + (body.length & ~3));
    b.writeUInt16BE(type, 0);
    b.writeUInt16BE(body.length & ~3, 2);
    b.writeUInt32BE(0x2112a442, 4);
    id.copy(b, 8);
    Buffer.from(body).copy(b, HEADER_LENGTH, 0, body.length & ~3);
    return b;
  });
  const datagram = fc.oneof(fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)), mutated, plausible);

  it('parseMessage (strict and lenient), decodeMessage, parseBindingResponse and the attribute decoders', () => {
    fc.assert(
      fc.property(datagram, (b) => {
        for (const strict of [true, false]) {
          const m = parseMessage(b, { strict });
          if (typeof m !== 'string') {
            expect(m.raw.length).toBe(HEADER_LENGTH + m.length);
            exercise(m);
          }
        }
        try {
          decodeMessage(b);
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
        }
        const r = parseBindingResponse(b);
        if (typeof r !== 'string') expect(r.port).toBeGreaterThanOrEqual(0);
      }),
      fcParams(2000),
    );
  });

  it('address decoders on arbitrary attribute values return a value or undefined', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), txid, (v, id) => {
        for (const r of [decodeAddressValue(v), decodeXorAddressValue(v, id)]) {
          if (r !== undefined) expect([4, 6]).toContain(r.family);
        }
      }),
      fcParams(500),
    );
  });
});
