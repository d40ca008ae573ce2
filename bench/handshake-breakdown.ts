/**
 * Where a handshake's relay CPU goes: each step of server/handshake.ts's acceptClientInfo timed alone,
 * in this process (the same Node binary as the relay), on the functions the relay runs (X25519 with the
 * client key in the cheapest input form, HSalsa20, box open, JSON, box seal with a pooled nonce), plus
 * the alternatives it does not use (other key input forms, randomBytes per nonce) for scale. bench/report.ts sets them beside the measured end-to-end total:
 * kernel time (stime: accept, reads, writes, close) and user time minus acceptClientInfo = the rest
 * (HTTP upgrade, socket setup in JS, hub registration, GC).
 */
import { createPublicKey, diffieHellman, randomBytes, type KeyObject } from 'node:crypto';
import {
  boxKeyFromShared,
  buildClientInfoFrame,
  FRAME_HEADER_LEN,
  KEY_LEN,
  NodePrivateKey,
  parseClientInfoJson,
  PEER_KEY_INPUT,
  peerKeyObject,
  PROTOCOL_VERSION,
  x25519Shared,
} from '../src/lib/protocol/index.js';
import { acceptClientInfo, nextNonce, openClientInfoBox, sealServerInfoFrame } from '../src/lib/server/handshake.js';

export interface BreakdownStep {
  step: string;
  us: number;
}

export interface HandshakeBreakdown {
  /** The steps of acceptClientInfo, in order. */
  steps: BreakdownStep[];
  /** acceptClientInfo measured whole (≈ the sum of the steps). */
  acceptUs: number;
  /** What the relay does not do, for scale. */
  alternatives: BreakdownStep[];
  iterations: number;
}

/** Distinct clients the loops cycle through, so no step sees the same input twice in a row. */
const CLIENTS = 64;
/** Timed calls per round (after as many untimed warm-up calls): ≈ 2 s for the whole breakdown. */
export const BREAKDOWN_ITERATIONS = 1500;
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** Rounds per step; the fastest counts (other processes on a shared machine only ever add time). */
const ROUNDS = 3;

function time(iterations: number, f: (i: number) => unknown): number {
  for (let i = 0; i < iterations; i++) f(i);
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) f(i);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / iterations / 1000);
  }
  return best;
}

function pemFor(pub: Buffer): string {
  return `-----BEGIN PUBLIC KEY-----\n${Buffer.concat([SPKI_X25519_PREFIX, pub]).toString('base64')}\n-----END PUBLIC KEY-----\n`;
}

export function measureHandshakeBreakdown(iterations = BREAKDOWN_ITERATIONS): HandshakeBreakdown {
  const server = NodePrivateKey.generate();
  const priv: KeyObject = server.keyObject;
  const clients = Array.from({ length: CLIENTS }, () => NodePrivateKey.generate());
  // What a Tailscale client sends: {"version":2,"CanAckPings":true} (no mesh key, no app name).
  const payloads = clients.map((c) => buildClientInfoFrame(c.keyObject, c.publicKey, server.publicKey, { version: PROTOCOL_VERSION, canAckPings: true }).subarray(FRAME_HEADER_LEN));
  const pubs = clients.map((c) => c.publicKey);
  const keyObjs = pubs.map((p) => peerKeyObject(p));
  const shared = keyObjs.map((k) => diffieHellman({ privateKey: priv, publicKey: k }));
  const boxKeys = shared.map((s) => boxKeyFromShared(s));
  const plains = payloads.map((p, i) => openClientInfoBox(boxKeys[i]!, p.subarray(KEY_LEN)));
  const at = (i: number): number => i % CLIENTS;

  const steps: BreakdownStep[] = [
    { step: `X25519 with the client key passed as ${PEER_KEY_INPUT === 'pem' ? 'a PEM string' : 'a JWK-imported KeyObject'} (x25519Shared)`, us: time(iterations, (i) => x25519Shared(priv, pubs[at(i)]!)) },
    { step: 'HSalsa20 (box key from the shared secret)', us: time(iterations, (i) => boxKeyFromShared(shared[at(i)]!)) },
    { step: 'box open (ClientInfo, XSalsa20-Poly1305)', us: time(iterations, (i) => openClientInfoBox(boxKeys[at(i)]!, payloads[at(i)]!.subarray(KEY_LEN))) },
    {
      step: 'ClientInfo JSON (UTF-8 decode + parse)',
      us: time(iterations, (i) => {
        const p = plains[at(i)]!;
        return parseClientInfoJson(Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('utf8'));
      }),
    },
    { step: 'box seal (ServerInfo frame, pooled nonce)', us: time(iterations, (i) => sealServerInfoFrame(boxKeys[at(i)]!)) },
  ];
  const acceptUs = time(iterations, (i) => acceptClientInfo(priv, payloads[at(i)]!));

  const dh = (pub: KeyObject | string): Buffer => diffieHellman({ privateKey: priv, publicKey: pub as KeyObject });
  const alternatives: BreakdownStep[] = [
    { step: 'X25519 alone (key imported beforehand)', us: time(iterations, (i) => dh(keyObjs[at(i)]!)) },
    { step: 'X25519, key as SPKI DER KeyObject (keys.ts x25519)', us: time(iterations, (i) => dh(createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, pubs[at(i)]!]), format: 'der', type: 'spki' }))) },
    { step: 'X25519, key as JWK KeyObject', us: time(iterations, (i) => dh(peerKeyObject(pubs[at(i)]!))) },
    ...(PEER_KEY_INPUT === 'pem' ? [{ step: 'X25519, key as PEM string', us: time(iterations, (i) => dh(pemFor(pubs[at(i)]!))) }] : []),
    { step: 'nonce: randomBytes(24) per handshake', us: time(iterations, () => randomBytes(24)) },
    { step: 'nonce: from the pool (nextNonce)', us: time(iterations, () => nextNonce()) },
  ];
  return { steps, acceptUs, alternatives, iterations };
}
