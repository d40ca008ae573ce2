/**
 * NaCl crypto_box as Tailscale's SealTo/OpenFrom use it: nonce(24) ‖ tag(16) ‖ ciphertext.
 * X25519 from node:crypto, HSalsa20 + XSalsa20-Poly1305 from the audited @noble/ciphers.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { hsalsa, xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { BoxError } from '../errors.js';
import { BOX_OVERHEAD, NONCE_LEN } from './constants.js';
import { x25519 } from './keys.js';

// "expand 32-byte k" as little-endian words: the Salsa20 sigma constant.
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
const ZERO_NONCE_WORDS = new Uint32Array(4);

function toWords(b: Uint8Array): Uint32Array {
  const w = new Uint32Array(b.length / 4);
  for (let i = 0; i < w.length; i++) w[i] = b[4 * i]! | (b[4 * i + 1]! << 8) | (b[4 * i + 2]! << 16) | (b[4 * i + 3]! << 24);
  return w;
}

function fromWords(w: Uint32Array): Uint8Array {
  const b = new Uint8Array(w.length * 4);
  for (let i = 0; i < w.length; i++) {
    const v = w[i]!;
    b[4 * i] = v & 0xff;
    b[4 * i + 1] = (v >>> 8) & 0xff;
    b[4 * i + 2] = (v >>> 16) & 0xff;
    b[4 * i + 3] = (v >>> 24) & 0xff;
  }
  return b;
}

/** crypto_box_beforenm: HSalsa20(X25519(priv, pub), 0^16). */
export function boxBeforeNm(priv: KeyObject, peerPublic: Uint8Array): Uint8Array {
  let shared: Buffer;
  try {
    shared = x25519(priv, peerPublic);
  } catch (cause) {
    throw new BoxError('X25519 failed: the peer public key is invalid or of low order', { cause });
  }
  return boxKeyFromShared(shared);
}

/** The second half of crypto_box_beforenm, for callers that compute X25519 themselves: HSalsa20(shared, 0^16). */
export function boxKeyFromShared(shared: Uint8Array): Uint8Array {
  const out = new Uint32Array(8);
  hsalsa(SIGMA, toWords(shared), ZERO_NONCE_WORDS, out);
  return fromWords(out);
}

/** Seals `plaintext` from `priv` to `peerPublic`; `nonce` is random unless given (tests only). */
export function seal(priv: KeyObject, peerPublic: Uint8Array, plaintext: Uint8Array, nonce?: Uint8Array): Buffer {
  const n = nonce ?? randomBytes(NONCE_LEN);
  if (n.length !== NONCE_LEN) throw new BoxError(`nonce must be ${NONCE_LEN} bytes`);
  const k = boxBeforeNm(priv, peerPublic);
  const boxed = xsalsa20poly1305(k, n).encrypt(plaintext);
  return Buffer.concat([n, boxed]);
}

/** Opens `nonce ‖ box` sent by `peerPublic` to `priv`. Throws BoxError when it does not authenticate. */
export function open(priv: KeyObject, peerPublic: Uint8Array, sealed: Uint8Array): Buffer {
  if (sealed.length < NONCE_LEN + BOX_OVERHEAD) throw new BoxError(`sealed box of ${sealed.length} bytes is shorter than nonce + tag (${NONCE_LEN + BOX_OVERHEAD})`);
  const k = boxBeforeNm(priv, peerPublic);
  try {
    return Buffer.from(xsalsa20poly1305(k, sealed.subarray(0, NONCE_LEN)).decrypt(sealed.subarray(NONCE_LEN)));
  } catch (cause) {
    throw new BoxError('box did not authenticate (wrong key or tampered data)', { cause });
  }
}
