/**
 * NaCl crypto_box as Tailscale's SealTo/OpenFrom use it: nonce(24) ‖ tag(16) ‖ ciphertext.
 * X25519 from node:crypto, HSalsa20 + XSalsa20-Poly1305 from the audited @noble/ciphers.
 */
import { createPrivateKey, createPublicKey, diffieHellman, randomBytes, type KeyObject } from 'node:crypto';
import { hsalsa, xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { BoxError } from '../errors.js';
import { BOX_OVERHEAD, KEY_LEN, NONCE_LEN } from './constants.js';

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

/** RFC 8410 SubjectPublicKeyInfo prefix of a raw X25519 key, as base64: 12 bytes, so exactly 16 characters. */
const SPKI_X25519_PREFIX_B64 = 'MCowBQYDK2VuAyEA';

function x25519Pem(pub: Uint8Array): string {
  return `-----BEGIN PUBLIC KEY-----\n${SPKI_X25519_PREFIX_B64}${Buffer.from(pub.buffer, pub.byteOffset, pub.byteLength).toString('base64')}\n-----END PUBLIC KEY-----\n`;
}

/**
 * How the peer's raw key reaches diffieHellman, the cheapest way the running Node allows (measured,
 * bench/handshake-breakdown.ts prints all three): Node 24 takes a PEM string directly (≈ 12 µs; any
 * *object* input costs Node's internal throw-and-catch key checks, ≈ 40 µs); Node 20 wants a KeyObject,
 * and a JWK import (≈ 10 µs) skips the OpenSSL 3 decoder that SPKI DER or PEM go through (≈ 100 µs).
 */
export const PEER_KEY_INPUT: 'pem' | 'jwk' = (() => {
  try {
    const probe = createPublicKey(x25519Pem(Buffer.alloc(KEY_LEN, 9)));
    const priv = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: Buffer.alloc(KEY_LEN, 7).toString('base64url'), x: probe.export({ format: 'jwk' }).x }, format: 'jwk' });
    // @types/node still types publicKey as KeyObject only.
    diffieHellman({ privateKey: priv, publicKey: x25519Pem(Buffer.alloc(KEY_LEN, 9)) as unknown as KeyObject });
    return 'pem';
  } catch {
    // This Node's diffieHellman wants KeyObjects.
    return 'jwk';
  }
})();

/** A raw X25519 public key as a JWK-imported KeyObject (no OpenSSL decoder). */
export function peerKeyObject(pub: Uint8Array): KeyObject {
  const x = Buffer.from(pub.buffer, pub.byteOffset, pub.byteLength).toString('base64url');
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
}

/** The peer key in the form diffieHellman takes cheapest on this Node (PEER_KEY_INPUT). */
export function peerKeyInput(pub: Uint8Array): KeyObject {
  return PEER_KEY_INPUT === 'pem' ? (x25519Pem(pub) as unknown as KeyObject) : peerKeyObject(pub);
}

/** X25519(priv, pub). Throws BoxError for malformed and low-order keys (OpenSSL rejects an all-zero shared secret). */
export function x25519Shared(priv: KeyObject, peerPublic: Uint8Array): Buffer {
  if (peerPublic.length !== KEY_LEN) throw new BoxError(`peer public key must be ${KEY_LEN} bytes, got ${peerPublic.length}`);
  try {
    return diffieHellman({ privateKey: priv, publicKey: peerKeyInput(peerPublic) });
  } catch (cause) {
    throw new BoxError('X25519 failed: the peer public key is invalid or of low order', { cause });
  }
}

/** crypto_box_beforenm: HSalsa20(X25519(priv, pub), 0^16). */
export function boxBeforeNm(priv: KeyObject, peerPublic: Uint8Array): Uint8Array {
  return boxKeyFromShared(x25519Shared(priv, peerPublic));
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
