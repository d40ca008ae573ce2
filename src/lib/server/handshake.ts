/**
 * Server half of the DERP handshake with one X25519 per client: the shared key that opens ClientInfo
 * also seals ServerInfo (both boxes are between the same two keys), halving the handshake's cost.
 */
import { diffieHellman, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { BoxError, HandshakeError } from '../errors.js';
import { boxBeforeNm, boxKeyFromShared } from '../protocol/box.js';
import { BOX_OVERHEAD, KEY_LEN, NONCE_LEN, PROTOCOL_VERSION } from '../protocol/constants.js';
import { encode } from '../protocol/frames.js';
import { parseClientInfoJson, serverInfoJson, type ClientInfo } from '../protocol/handshake.js';
import { isZeroKey } from '../protocol/keys.js';

/** What derper sends: `{"version":2}` (derpserver.go: sendServerInfo). */
const SERVER_INFO_PLAINTEXT = Buffer.from(serverInfoJson({ version: PROTOCOL_VERSION }), 'utf8');

/** RFC 8410 SubjectPublicKeyInfo prefix of a raw X25519 key (as in protocol/keys.ts). */
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function x25519Pem(key: Buffer): string {
  return `-----BEGIN PUBLIC KEY-----\n${Buffer.concat([SPKI_X25519_PREFIX, key]).toString('base64')}\n-----END PUBLIC KEY-----\n`;
}

/**
 * Node's key-input checks throw and catch internally for every non-KeyObject *object* (a DER
 * `{ key, format }` or raw-public input costs four exceptions, as much CPU as the X25519 itself); a PEM
 * string skips them all, and diffieHellman takes it without a KeyObject in between. Probed once:
 * Nodes whose diffieHellman wants KeyObjects use box.ts's DER path.
 */
const PEM_PEER_KEYS = ((): boolean => {
  try {
    diffieHellman({ privateKey: generateKeyPairSync('x25519').privateKey, publicKey: x25519Pem(Buffer.alloc(KEY_LEN, 9)) as unknown as KeyObject });
    return true;
  } catch {
    // This Node's diffieHellman wants KeyObjects: boxBeforeNm's DER path is used instead.
    return false;
  }
})();

/** boxBeforeNm(serverPriv, clientKey), minus Node's per-call overhead where possible. Throws BoxError for low-order keys. */
function sharedBoxKey(serverPriv: KeyObject, clientKey: Buffer): Uint8Array {
  if (!PEM_PEER_KEYS) return boxBeforeNm(serverPriv, clientKey);
  let shared: Buffer;
  try {
    // @types/node still types publicKey as KeyObject only.
    shared = diffieHellman({ privateKey: serverPriv, publicKey: x25519Pem(clientKey) as unknown as KeyObject });
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

/**
 * Opens a ClientInfo payload (client key ‖ nonce ‖ box) and builds the matching ServerInfo frame.
 * `serverInfoFor` picks the ServerInfo JSON for the client's key (its advertised rate limit, spec §6.2).
 */
export function acceptClientInfo(serverPriv: KeyObject, payload: Buffer, serverInfoFor?: (clientKey: Buffer) => Buffer | undefined): AcceptedClient {
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
  const boxed = xsalsa20poly1305(k, nonce).encrypt(serverInfoFor?.(clientKey) ?? SERVER_INFO_PLAINTEXT);
  return { clientKey, info, serverInfoFrame: encode.serverInfo(Buffer.concat([nonce, boxed])) };
}
