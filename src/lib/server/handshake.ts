/**
 * Server half of the DERP handshake, one X25519 per client: the shared key that opens ClientInfo also
 * seals ServerInfo (both boxes are between the same two keys). Each step is its own export so that
 * bench/handshake-breakdown.ts times exactly the code the relay runs.
 *
 * Per server configuration: the ServerInfo plaintext (serverInfoPlaintext). Per client: one X25519 with
 * the client key in the cheapest input form this Node takes (box.ts), one HSalsa20, noble's secretbox
 * open of ClientInfo, one JSON parse, and one seal written straight into the outgoing
 * frame with its nonce from a pool filled by one randomFillSync per NONCE_POOL_SIZE handshakes.
 */
import { randomFillSync, type KeyObject } from 'node:crypto';
import { xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { HandshakeError } from '../errors.js';
import { boxBeforeNm } from '../protocol/box.js';
import { BOX_OVERHEAD, FRAME_HEADER_LEN, FrameType, KEY_LEN, NONCE_LEN, PROTOCOL_VERSION } from '../protocol/constants.js';
import { parseClientInfoJson, serverInfoJson, type ClientInfo, type ServerInfo } from '../protocol/handshake.js';
import { isZeroKey } from '../protocol/keys.js';

/** What derper sends without token-bucket limits: `{"version":2}` (derpserver.go: sendServerInfo). */
const DEFAULT_SERVER_INFO = serverInfoPlaintext({ version: PROTOCOL_VERSION });

/**
 * A ServerInfo plaintext, built once per server configuration (and again on a reload that changes the
 * advertised token bucket, issue 7 §2) rather than per handshake: JSON exactly as derper writes it.
 */
export function serverInfoPlaintext(info: ServerInfo): Buffer {
  return Buffer.from(serverInfoJson(info), 'utf8');
}

/**
 * noble's encrypt(plaintext, output) wants output = plaintext + 32 bytes and returns output[16..]
 * (16 bytes of scratch, then tag ‖ ciphertext). Placing output so that output[16..] is the frame's tag
 * and ciphertext puts the scratch over the nonce's last 16 bytes: the nonce is copied in afterwards.
 */
const SEAL_OUTPUT_OFF = FRAME_HEADER_LEN + NONCE_LEN - 16;

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
 * Opens the ClientInfo box (nonce ‖ tag ‖ ciphertext) with the shared key: noble's audited
 * XSalsa20-Poly1305 secretbox. Throws HandshakeError if the box does not authenticate.
 */
export function openClientInfoBox(k: Uint8Array, sealed: Buffer): Uint8Array {
  if (sealed.length < NONCE_LEN + BOX_OVERHEAD) throw new HandshakeError(`ClientInfo box of ${sealed.length} bytes is shorter than nonce + tag`);
  try {
    return xsalsa20poly1305(k, sealed.subarray(0, NONCE_LEN)).decrypt(sealed.subarray(NONCE_LEN));
  } catch (cause) {
    throw new HandshakeError('ClientInfo box did not authenticate (wrong server key or tampered data)', { cause });
  }
}

/**
 * The whole ServerInfo frame (header, nonce, tag, ciphertext): `plaintext` (from serverInfoPlaintext;
 * default `{"version":2}`) sealed with the shared key under a fresh nonce, in one allocation.
 */
export function sealServerInfoFrame(k: Uint8Array, plaintext: Buffer = DEFAULT_SERVER_INFO): Buffer {
  const payloadLen = NONCE_LEN + BOX_OVERHEAD + plaintext.length;
  const frame = Buffer.allocUnsafe(FRAME_HEADER_LEN + payloadLen);
  const nonce = nextNonce();
  xsalsa20poly1305(k, nonce).encrypt(plaintext, frame.subarray(SEAL_OUTPUT_OFF));
  nonce.copy(frame, FRAME_HEADER_LEN);
  frame[0] = FrameType.ServerInfo;
  frame.writeUInt32BE(payloadLen, 1);
  return frame;
}

export interface AcceptedClient {
  clientKey: Buffer;
  info: ClientInfo;
  /** The ServerInfo frame, sealed to this client. */
  serverInfoFrame: Buffer;
}

/** The crypto of a ClientInfo: the box opened (its JSON, not parsed yet) and ServerInfo sealed. */
export interface OpenedClientInfo {
  clientKey: Buffer;
  /** The ClientInfo JSON, as sent. */
  plain: Uint8Array;
  serverInfoFrame: Buffer;
}

/**
 * The crypto part of acceptClientInfo, which the crypto thread (crypto-thread.ts) runs off the event
 * loop: the client key checked, one X25519, the box opened, ServerInfo sealed. Throws HandshakeError,
 * or BoxError for a low-order key.
 */
export function openClientInfo(serverPriv: KeyObject, payload: Buffer, serverInfo: Buffer = DEFAULT_SERVER_INFO): OpenedClientInfo {
  if (payload.length < KEY_LEN + NONCE_LEN + BOX_OVERHEAD) throw new HandshakeError(`ClientInfo payload of ${payload.length} bytes is too short for a box`);
  // Its own 32 bytes: the connection keeps the key for its life, and a pool slice (Buffer.from) would
  // keep a whole 64 KiB slab of Node's allocUnsafe pool alive with it.
  const clientKey = Buffer.allocUnsafeSlow(KEY_LEN);
  payload.copy(clientKey, 0, 0, KEY_LEN);
  if (isZeroKey(clientKey)) throw new HandshakeError('ClientInfo carries the all-zero client key');
  const k = boxBeforeNm(serverPriv, clientKey);
  const plain = openClientInfoBox(k, payload.subarray(KEY_LEN));
  return { clientKey, plain, serverInfoFrame: sealServerInfoFrame(k, serverInfo) };
}

/** The ClientInfo JSON of an opened box, parsed and checked (HandshakeError when it is not). */
export function parseClientInfoPlain(plain: Uint8Array): ClientInfo {
  return parseClientInfoJson(Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength).toString('utf8'));
}

/** An opened ClientInfo with its JSON parsed: what acceptClientInfo returns (HandshakeError for bad JSON). */
export function acceptOpened(o: OpenedClientInfo): AcceptedClient {
  return { clientKey: o.clientKey, info: parseClientInfoPlain(o.plain), serverInfoFrame: o.serverInfoFrame };
}

/** The ServerInfo plaintext `serverInfoFor` picks for a payload's client key; undefined (derper's plain one) for a payload too short to hold a key. */
export function serverInfoForPayload(payload: Buffer, serverInfoFor?: (clientKey: Buffer) => Buffer | undefined): Buffer | undefined {
  return payload.length >= KEY_LEN ? serverInfoFor?.(payload.subarray(0, KEY_LEN)) : undefined;
}

/**
 * Opens a ClientInfo payload (client key ‖ nonce ‖ box) and builds the matching ServerInfo frame.
 * `serverInfoFor` picks the ServerInfo JSON for the client's key (its advertised rate limit, spec §6.2).
 */
export function acceptClientInfo(serverPriv: KeyObject, payload: Buffer, serverInfoFor?: (clientKey: Buffer) => Buffer | undefined): AcceptedClient {
  return acceptOpened(openClientInfo(serverPriv, payload, serverInfoForPayload(payload, serverInfoFor)));
}
