/**
 * Curve25519 node keys and their text forms (`nodekey:`, `privkey:`, untyped hex), and derper's
 * key-file JSON. X25519 runs in node:crypto (OpenSSL): several times faster than pure-JS curve math,
 * which matters because every handshake does one.
 */
import { createPrivateKey, createPublicKey, diffieHellman, randomBytes, type KeyObject } from 'node:crypto';
import { BadKeyError } from '../errors.js';
import { KEY_LEN } from './constants.js';

export const NODE_PUBLIC_PREFIX = 'nodekey:';
export const NODE_PRIVATE_PREFIX = 'privkey:';

// ASN.1 wrappers that turn a raw 32-byte X25519 key into PKCS#8 / SPKI DER (RFC 8410).
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** Clamps a Curve25519 private scalar as Tailscale does (types/key/util.go: clamp25519Private). */
export function clamp(priv: Uint8Array): Buffer {
  const b = Buffer.from(priv);
  b[0]! &= 248;
  b[31] = (b[31]! & 127) | 64;
  return b;
}

function checkLen(b: Uint8Array, what: string): void {
  if (b.length !== KEY_LEN) throw new BadKeyError(`${what} must be ${KEY_LEN} bytes, got ${b.length}`);
}

export function privateKeyObject(priv: Uint8Array): KeyObject {
  checkLen(priv, 'private key');
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, priv]), format: 'der', type: 'pkcs8' });
}

export function publicKeyObject(pub: Uint8Array): KeyObject {
  checkLen(pub, 'public key');
  return createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, pub]), format: 'der', type: 'spki' });
}

export function publicFromPrivate(priv: Uint8Array): Buffer {
  const der = createPublicKey(privateKeyObject(priv)).export({ format: 'der', type: 'spki' });
  return Buffer.from(der.subarray(der.length - KEY_LEN));
}

/** X25519(priv, pub). Throws for low-order public keys (OpenSSL rejects an all-zero shared secret). */
export function x25519(priv: KeyObject, pub: Uint8Array): Buffer {
  return diffieHellman({ privateKey: priv, publicKey: publicKeyObject(pub) });
}

/** A node key pair; the private half never leaves this object except via `toText`/key files. */
export class NodePrivateKey {
  readonly raw: Buffer;
  readonly publicKey: Buffer;
  readonly keyObject: KeyObject;

  private constructor(raw: Buffer) {
    this.raw = raw;
    this.keyObject = privateKeyObject(raw);
    this.publicKey = publicFromPrivate(raw);
  }

  /** 32 random bytes, clamped (types/key/node.go: NewNode). */
  static generate(): NodePrivateKey {
    return new NodePrivateKey(clamp(randomBytes(KEY_LEN)));
  }

  static fromRaw(raw: Uint8Array): NodePrivateKey {
    checkLen(raw, 'private key');
    return new NodePrivateKey(Buffer.from(raw));
  }

  static parse(text: string): NodePrivateKey {
    return new NodePrivateKey(parseHexKey(text, NODE_PRIVATE_PREFIX, 'private key'));
  }

  toText(): string {
    return NODE_PRIVATE_PREFIX + this.raw.toString('hex');
  }

  publicText(): string {
    return formatNodePublic(this.publicKey);
  }
}

function parseHexKey(text: string, prefix: string, what: string): Buffer {
  if (!text.startsWith(prefix)) throw new BadKeyError(`${what} ${JSON.stringify(truncate(text))} lacks the "${prefix}" prefix`);
  const hex = text.slice(prefix.length);
  if (hex.length !== KEY_LEN * 2 || !/^[0-9a-fA-F]+$/.test(hex)) {
    throw new BadKeyError(`${what} ${JSON.stringify(truncate(text))} must be "${prefix}" followed by ${KEY_LEN * 2} hex digits`);
  }
  return Buffer.from(hex, 'hex');
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

export function formatNodePublic(pub: Uint8Array): string {
  return NODE_PUBLIC_PREFIX + Buffer.from(pub).toString('hex');
}

/** Parses `nodekey:<64 hex>`; also accepts the bare 64-hex untyped form (Derp-Public-Key header). */
export function parseNodePublic(text: string): Buffer {
  const t = text.trim();
  if (!t.startsWith(NODE_PUBLIC_PREFIX) && /^[0-9a-fA-F]{64}$/.test(t)) return Buffer.from(t, 'hex');
  return parseHexKey(t, NODE_PUBLIC_PREFIX, 'public key');
}

/** `[NYBy1]`: first 5 chars of std-base64, as Tailscale logs keys (types/key/util.go: debug32). */
export function shortKey(pub: Uint8Array): string {
  return `[${Buffer.from(pub).toString('base64').slice(0, 5)}]`;
}

export function isZeroKey(k: Uint8Array): boolean {
  for (const b of k) if (b !== 0) return false;
  return true;
}

/** Parses a mesh pre-shared key: exactly 64 hex digits, surrounding whitespace trimmed. */
export function parseMeshKey(text: string): Buffer {
  const t = text.trim();
  if (!/^[0-9a-fA-F]{64}$/.test(t)) throw new BadKeyError('mesh key must be exactly 64 hex digits');
  return Buffer.from(t, 'hex');
}

/** derper's key file: `{"PrivateKey": "privkey:<hex>"}`, tab-indented (cmd/derper/derper.go: writeNewConfig). */
export function formatKeyFile(key: NodePrivateKey): string {
  return `${JSON.stringify({ PrivateKey: key.toText() }, null, '\t')}\n`;
}

export function parseKeyFile(text: string): NodePrivateKey {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new BadKeyError('key file is not valid JSON', { cause });
  }
  if (typeof parsed !== 'object' || parsed === null || typeof (parsed as { PrivateKey?: unknown }).PrivateKey !== 'string') {
    throw new BadKeyError('key file must be a JSON object with a string field "PrivateKey"');
  }
  return NodePrivateKey.parse((parsed as { PrivateKey: string }).PrivateKey);
}
