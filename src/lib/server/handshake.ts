/**
 * Server half of the DERP handshake, one X25519 per client: the shared key that opens ClientInfo also
 * seals ServerInfo (both boxes are between the same two keys). Each step is its own export so that
 * bench/handshake-breakdown.ts times exactly the code the relay runs.
 *
 * What is per server is computed once: the ServerInfo plaintext (constant), the frame header (constant
 * length). What is per client is one JWK key import (box.ts: no PEM/DER decoder), one X25519, one
 * HSalsa20, one box open, one JSON parse and one box seal written straight into the outgoing frame, with its nonce
 * taken from a pool filled by one randomFillSync per NONCE_POOL_SIZE handshakes.
 */
import { randomFillSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import { poly1305 } from '@noble/ciphers/_poly1305.js';
import { xsalsa20, xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { HandshakeError } from '../errors.js';
import { boxBeforeNm } from '../protocol/box.js';
import { BOX_OVERHEAD, FRAME_HEADER_LEN, FrameType, KEY_LEN, NONCE_LEN, PROTOCOL_VERSION } from '../protocol/constants.js';
import { parseClientInfoJson, serverInfoJson, type ClientInfo } from '../protocol/handshake.js';
import { isZeroKey } from '../protocol/keys.js';

/** What derper sends: `{"version":2}` (derpserver.go: sendServerInfo). */
const SERVER_INFO_PLAINTEXT = Buffer.from(serverInfoJson({ version: PROTOCOL_VERSION }), 'utf8');
/** ServerInfo frame: header, nonce, Poly1305 tag, ciphertext (the plaintext's length). */
const SERVER_INFO_PAYLOAD_LEN = NONCE_LEN + BOX_OVERHEAD + SERVER_INFO_PLAINTEXT.length;
const SERVER_INFO_FRAME_LEN = FRAME_HEADER_LEN + SERVER_INFO_PAYLOAD_LEN;
/**
 * noble's encrypt(plaintext, output) wants output = plaintext + 32 bytes and returns output[16..]
 * (16 bytes of scratch, then tag ‖ ciphertext). Placing output so that output[16..] is the frame's tag
 * and ciphertext puts the scratch over the nonce's last 16 bytes: the nonce is copied in afterwards.
 */
const SEAL_OUTPUT_OFF = FRAME_HEADER_LEN + NONCE_LEN - 16;
/** secretbox: the first 32 bytes of the XSalsa20 stream are the one-time Poly1305 key. */
const POLY_KEY_LEN = 32;

/**
 * Nonces per randomFillSync: randomBytes(24) per handshake costs ≈ 2.7 µs (a libuv/OpenSSL round trip
 * each), a 256-nonce refill ≈ 0.1 µs per nonce. 6 KiB of CSPRNG output, each nonce used once.
 */
const NONCE_POOL_SIZE = 256;
const noncePool = Buffer.allocUnsafeSlow(NONCE_POOL_SIZE * NONCE_LEN);
let noncePoolOff = noncePool.length;

/** A fresh random 24-byte nonce (a view into the pool: copy it before the next call). */
export function nextNonce(): Buffer {
  if (noncePoolOff === noncePool.length) {
    randomFillSync(noncePool);
    noncePoolOff = 0;
  }
  const n = noncePool.subarray(noncePoolOff, noncePoolOff + NONCE_LEN);
  noncePoolOff += NONCE_LEN;
  return n;
}

/**
 * Opens the ClientInfo box (nonce ‖ tag ‖ ciphertext) with the shared key: secretbox_open with one
 * XSalsa20 pass over 32 zero bytes ‖ ciphertext, which yields the Poly1305 key and the plaintext together
 * (noble's decrypt runs XSalsa20, and so HSalsa20, twice). The plaintext is returned only once the tag
 * has been checked, in constant time. Throws HandshakeError if the box does not authenticate.
 */
export function openClientInfoBox(k: Uint8Array, sealed: Buffer): Uint8Array {
  if (sealed.length < NONCE_LEN + BOX_OVERHEAD) throw new HandshakeError(`ClientInfo box of ${sealed.length} bytes is shorter than nonce + tag`);
  const ct = sealed.subarray(NONCE_LEN + BOX_OVERHEAD);
  const buf = Buffer.alloc(POLY_KEY_LEN + ct.length);
  ct.copy(buf, POLY_KEY_LEN);
  xsalsa20(k, sealed.subarray(0, NONCE_LEN), buf, buf);
  const tag = poly1305(ct, buf.subarray(0, POLY_KEY_LEN));
  if (!timingSafeEqual(tag, sealed.subarray(NONCE_LEN, NONCE_LEN + BOX_OVERHEAD))) {
    throw new HandshakeError('ClientInfo box did not authenticate (wrong server key or tampered data)');
  }
  return buf.subarray(POLY_KEY_LEN);
}

/** The whole ServerInfo frame, `{"version":2}` sealed with the shared key under a fresh nonce: one allocation. */
export function sealServerInfoFrame(k: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(SERVER_INFO_FRAME_LEN);
  const nonce = nextNonce();
  xsalsa20poly1305(k, nonce).encrypt(SERVER_INFO_PLAINTEXT, frame.subarray(SEAL_OUTPUT_OFF));
  nonce.copy(frame, FRAME_HEADER_LEN);
  frame[0] = FrameType.ServerInfo;
  frame.writeUInt32BE(SERVER_INFO_PAYLOAD_LEN, 1);
  return frame;
}

export interface AcceptedClient {
  clientKey: Buffer;
  info: ClientInfo;
  /** The ServerInfo frame, sealed to this client. */
  serverInfoFrame: Buffer;
}

/** Opens a ClientInfo payload (client key ‖ nonce ‖ box) and builds the matching ServerInfo frame. */
export function acceptClientInfo(serverPriv: KeyObject, payload: Buffer): AcceptedClient {
  if (payload.length < KEY_LEN + NONCE_LEN + BOX_OVERHEAD) throw new HandshakeError(`ClientInfo payload of ${payload.length} bytes is too short for a box`);
  const clientKey = Buffer.from(payload.subarray(0, KEY_LEN));
  if (isZeroKey(clientKey)) throw new HandshakeError('ClientInfo carries the all-zero client key');
  // Throws BoxError for low-order keys.
  const k = boxBeforeNm(serverPriv, clientKey);
  const plain = openClientInfoBox(k, payload.subarray(KEY_LEN));
  const info = parseClientInfoJson(Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength).toString('utf8'));
  return { clientKey, info, serverInfoFrame: sealServerInfoFrame(k) };
}
