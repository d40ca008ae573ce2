/**
 * Server half of the DERP handshake with one X25519 per client: the shared key that opens ClientInfo
 * also seals ServerInfo (both boxes are between the same two keys), halving the handshake's cost.
 */
import { createPublicKey, diffieHellman, randomBytes, type KeyObject } from 'node:crypto';
import { xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { BoxError, HandshakeError } from '../errors.js';
import { boxBeforeNm, boxKeyFromShared } from '../protocol/box.js';
import { BOX_OVERHEAD, KEY_LEN, NONCE_LEN, PROTOCOL_VERSION } from '../protocol/constants.js';
import { encode } from '../protocol/frames.js';
import { parseClientInfoJson, serverInfoJson, type ClientInfo } from '../protocol/handshake.js';
import { isZeroKey } from '../protocol/keys.js';

/** What derper sends: `{"version":2}` (derpserver.go: sendServerInfo). */
const SERVER_INFO_PLAINTEXT = Buffer.from(serverInfoJson({ version: PROTOCOL_VERSION }), 'utf8');

function rawX25519Public(key: Buffer): KeyObject {
  // @types/node does not know the 'raw-public' format yet.
  return createPublicKey({ key, format: 'raw-public', asymmetricKeyType: 'x25519' } as unknown as Parameters<typeof createPublicKey>[0]);
}

/**
 * Raw 32-byte public keys straight into a KeyObject (Node ≥ 24.?): skips building and parsing the SPKI
 * DER wrapper, a fifth of the X25519 cost per handshake. Probed once; older Nodes use box.ts's path.
 */
const RAW_PUBLIC_KEYS = ((): boolean => {
  try {
    rawX25519Public(Buffer.alloc(KEY_LEN, 9));
    return true;
  } catch {
    // This Node has no 'raw-public' key format: boxBeforeNm's DER path is used instead.
    return false;
  }
})();

/** boxBeforeNm(serverPriv, clientKey), via raw key import when available. Throws BoxError for low-order keys. */
function sharedBoxKey(serverPriv: KeyObject, clientKey: Buffer): Uint8Array {
  if (!RAW_PUBLIC_KEYS) return boxBeforeNm(serverPriv, clientKey);
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: serverPriv, publicKey: rawX25519Public(clientKey) });
  } catch (cause) {
    throw new BoxError('X25519 failed: the peer public key is invalid or of low order', { cause });
  }
  return boxKeyFromShared(shared);
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
  const k = sharedBoxKey(serverPriv, clientKey);
  let plain: Uint8Array;
  try {
    plain = xsalsa20poly1305(k, payload.subarray(KEY_LEN, KEY_LEN + NONCE_LEN)).decrypt(payload.subarray(KEY_LEN + NONCE_LEN));
  } catch (cause) {
    throw new HandshakeError('ClientInfo box did not authenticate (wrong server key or tampered data)', { cause });
  }
  const info = parseClientInfoJson(Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength).toString('utf8'));
  const nonce = randomBytes(NONCE_LEN);
  const boxed = xsalsa20poly1305(k, nonce).encrypt(SERVER_INFO_PLAINTEXT);
  return { clientKey, info, serverInfoFrame: encode.serverInfo(Buffer.concat([nonce, boxed])) };
}
