// The relay's own handshake path (server/handshake.ts) against the protocol's reference encoders.
import { describe, expect, it } from 'vitest';
import { BoxError, HandshakeError } from '../../src/lib/errors.js';
import {
  FrameType,
  KEY_LEN,
  NONCE_LEN,
  NodePrivateKey,
  boxBeforeNm,
  buildClientInfoFrame,
  buildServerInfoFrame,
  openServerInfo,
} from '../../src/lib/protocol/index.js';
import { acceptClientInfo, nextNonce, openClientInfoBox, sealServerInfoFrame, serverInfoPlaintext } from '../../src/lib/server/handshake.js';

const server = NodePrivateKey.generate();
const FRAME_HEADER = 5;

function clientInfoPayload(client: NodePrivateKey, info = { version: 2, canAckPings: true }): Buffer {
  return buildClientInfoFrame(client.keyObject, client.publicKey, server.publicKey, info).subarray(FRAME_HEADER);
}

/** Low-order Curve25519 u-coordinates (libsodium's blocklist): X25519 with them gives an all-zero secret. */
const LOW_ORDER = ['0100000000000000000000000000000000000000000000000000000000000000', 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'];

describe('acceptClientInfo', () => {
  it('opens ClientInfo and answers with a ServerInfo the client opens', () => {
    const client = NodePrivateKey.generate();
    const a = acceptClientInfo(server.keyObject, clientInfoPayload(client));
    expect(a.clientKey.equals(client.publicKey)).toBe(true);
    expect(a.info).toEqual({ version: 2, canAckPings: true });
    expect(a.serverInfoFrame[0]).toBe(FrameType.ServerInfo);
    expect(a.serverInfoFrame.readUInt32BE(1)).toBe(a.serverInfoFrame.length - FRAME_HEADER);
    expect(openServerInfo(client.keyObject, server.publicKey, a.serverInfoFrame.subarray(FRAME_HEADER))).toEqual({ version: 2 });
  });

  it('builds ServerInfo byte for byte as the reference encoder does with the same nonce', () => {
    const client = NodePrivateKey.generate();
    const frame = sealServerInfoFrame(boxBeforeNm(server.keyObject, client.publicKey));
    const nonce = frame.subarray(FRAME_HEADER, FRAME_HEADER + NONCE_LEN);
    expect(frame.equals(buildServerInfoFrame(server.keyObject, client.publicKey, { version: 2 }, nonce))).toBe(true);
  });

  it('copies the client key out of the payload', () => {
    const payload = clientInfoPayload(NodePrivateKey.generate());
    const a = acceptClientInfo(server.keyObject, payload);
    const before = Buffer.from(a.clientKey);
    payload.fill(0, 0, KEY_LEN);
    expect(a.clientKey.equals(before)).toBe(true);
  });

  it('never repeats a nonce across pool refills', () => {
    const seen = new Set<string>();
    const client = NodePrivateKey.generate();
    const k = boxBeforeNm(server.keyObject, client.publicKey);
    for (let i = 0; i < 1000; i++) seen.add(sealServerInfoFrame(k).toString('hex', FRAME_HEADER, FRAME_HEADER + NONCE_LEN));
    expect(seen.size).toBe(1000);
    expect(nextNonce().length).toBe(NONCE_LEN);
  });

  it('rejects a short payload, the zero key, low-order keys and a tampered box with typed errors', () => {
    const payload = clientInfoPayload(NodePrivateKey.generate());
    expect(() => acceptClientInfo(server.keyObject, payload.subarray(0, KEY_LEN + NONCE_LEN))).toThrow(HandshakeError);
    const zero = Buffer.from(payload);
    zero.fill(0, 0, KEY_LEN);
    expect(() => acceptClientInfo(server.keyObject, zero)).toThrow(/all-zero client key/);
    for (const lo of LOW_ORDER) {
      const bad = Buffer.from(payload);
      Buffer.from(lo, 'hex').copy(bad, 0);
      expect(() => acceptClientInfo(server.keyObject, bad)).toThrow(BoxError);
    }
    const tampered = Buffer.from(payload);
    tampered[tampered.length - 1]! ^= 1;
    expect(() => acceptClientInfo(server.keyObject, tampered)).toThrow(/did not authenticate/);
    // A box for another server does not open either.
    const other = NodePrivateKey.generate();
    const k = boxBeforeNm(other.keyObject, payload.subarray(0, KEY_LEN));
    expect(() => openClientInfoBox(k, payload.subarray(KEY_LEN))).toThrow(HandshakeError);
  });
});

describe('ServerInfo plaintext', () => {
  it('advertises a token bucket when given one, and the client reads it back', () => {
    const client = NodePrivateKey.generate();
    const plain = serverInfoPlaintext({ version: 2, tokenBucketBytesPerSecond: 125_000, tokenBucketBytesBurst: 1 << 20 });
    expect(plain.toString()).toBe('{"version":2,"TokenBucketBytesPerSecond":125000,"TokenBucketBytesBurst":1048576}');
    const a = acceptClientInfo(server.keyObject, clientInfoPayload(client), () => plain);
    expect(a.serverInfoFrame.readUInt32BE(1)).toBe(NONCE_LEN + 16 + plain.length);
    expect(openServerInfo(client.keyObject, server.publicKey, a.serverInfoFrame.subarray(FRAME_HEADER))).toEqual({
      version: 2,
      tokenBucketBytesPerSecond: 125_000,
      tokenBucketBytesBurst: 1 << 20,
    });
  });
});
