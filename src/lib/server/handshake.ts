/**
 * Server half of the DERP handshake with one X25519 per client: the shared key that opens ClientInfo
 * also seals ServerInfo (both boxes are between the same two keys), halving the handshake's cost.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { HandshakeError } from '../errors.js';
import { boxBeforeNm } from '../protocol/box.js';
import { BOX_OVERHEAD, KEY_LEN, NONCE_LEN, PROTOCOL_VERSION } from '../protocol/constants.js';
import { encode } from '../protocol/frames.js';
import { parseClientInfoJson, serverInfoJson, type ClientInfo } from '../protocol/handshake.js';
import { isZeroKey } from '../protocol/keys.js';

/** What derper sends: `{"version":2}` (derpserver.go: sendServerInfo). */
const SERVER_INFO_PLAINTEXT = Buffer.from(serverInfoJson({ version: PROTOCOL_VERSION }), 'utf8');

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
