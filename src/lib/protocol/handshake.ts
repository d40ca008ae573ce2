/**
 * The DERP handshake payloads: ServerKey, ClientInfo and ServerInfo, their JSON, and the NaCl boxes
 * around them. Field names, order and decoding rules follow Go's encoding/json as derper uses it.
 */
import type { KeyObject } from 'node:crypto';
import { BoxError, HandshakeError } from '../errors.js';
import { open, seal } from './box.js';
import { KEY_LEN, MAX_INFO_LEN, NONCE_LEN, PROTOCOL_VERSION } from './constants.js';
import { encode } from './frames.js';
import { isZeroKey } from './keys.js';

export interface ClientInfo {
  /** Mesh pre-shared key (32 bytes); grants mesh privileges. Never sent when absent or zero. */
  meshKey?: Buffer;
  version?: number;
  canAckPings: boolean;
  isProber?: boolean;
  appName?: string;
}

export interface ServerInfo {
  version?: number;
  tokenBucketBytesPerSecond?: number;
  tokenBucketBytesBurst?: number;
}

/** JSON exactly as Go's derp.ClientInfo marshals it (key order, omitempty rules). */
export function clientInfoJson(info: ClientInfo): string {
  const o: Record<string, unknown> = {};
  if (info.meshKey && !isZeroKey(info.meshKey)) o.meshKey = info.meshKey.toString('hex');
  if (info.version) o.version = info.version;
  o.CanAckPings = info.canAckPings;
  if (info.isProber) o.IsProber = true;
  if (info.appName) o.AppName = info.appName;
  return JSON.stringify(o);
}

export function serverInfoJson(info: ServerInfo): string {
  const o: Record<string, unknown> = {};
  if (info.version) o.version = info.version;
  if (info.tokenBucketBytesPerSecond) o.TokenBucketBytesPerSecond = info.tokenBucketBytesPerSecond;
  if (info.tokenBucketBytesBurst) o.TokenBucketBytesBurst = info.tokenBucketBytesBurst;
  return JSON.stringify(o);
}

/** Go's encoding/json matches object keys case-insensitively; the last matching key wins. */
function field(obj: Record<string, unknown>, name: string): unknown {
  let v: unknown;
  const want = name.toLowerCase();
  for (const k of Object.keys(obj)) if (k.toLowerCase() === want) v = obj[k];
  return v;
}

function parseObject(text: string, what: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new HandshakeError(`${what} is not valid JSON`, { cause });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HandshakeError(`${what} must be a JSON object`);
  return parsed as Record<string, unknown>;
}

function optInt(o: Record<string, unknown>, name: string, what: string): number | undefined {
  const v = field(o, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new HandshakeError(`${what}.${name} must be an integer`);
  return v;
}

function optBool(o: Record<string, unknown>, name: string, what: string): boolean | undefined {
  const v = field(o, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new HandshakeError(`${what}.${name} must be a boolean`);
  return v;
}

export function parseClientInfoJson(text: string): ClientInfo {
  const o = parseObject(text, 'ClientInfo');
  const info: ClientInfo = { canAckPings: optBool(o, 'CanAckPings', 'ClientInfo') ?? false };
  const mesh = field(o, 'meshKey');
  if (mesh !== undefined && mesh !== null) {
    // Go's DERPMesh.UnmarshalJSON: anything but exactly 32 bytes of hex (including "") is an error.
    if (typeof mesh !== 'string' || !/^[0-9a-fA-F]{64}$/.test(mesh)) throw new HandshakeError('ClientInfo.meshKey must be 64 hex digits');
    info.meshKey = Buffer.from(mesh, 'hex');
  }
  const version = optInt(o, 'version', 'ClientInfo');
  if (version !== undefined) info.version = version;
  if (optBool(o, 'IsProber', 'ClientInfo')) info.isProber = true;
  const app = field(o, 'AppName');
  if (typeof app === 'string' && app !== '') info.appName = app;
  return info;
}

export function parseServerInfoJson(text: string): ServerInfo {
  const o = parseObject(text, 'ServerInfo');
  const info: ServerInfo = {};
  const version = optInt(o, 'version', 'ServerInfo');
  if (version !== undefined) info.version = version;
  const rate = optInt(o, 'TokenBucketBytesPerSecond', 'ServerInfo');
  if (rate) info.tokenBucketBytesPerSecond = rate;
  const burst = optInt(o, 'TokenBucketBytesBurst', 'ServerInfo');
  if (burst) info.tokenBucketBytesBurst = burst;
  return info;
}

/** Client side: the ClientInfo frame, sealed from the client's key to the server's. */
export function buildClientInfoFrame(clientPriv: KeyObject, clientPublic: Uint8Array, serverPublic: Uint8Array, info: ClientInfo, nonce?: Uint8Array): Buffer {
  const sealed = seal(clientPriv, serverPublic, Buffer.from(clientInfoJson(info), 'utf8'), nonce);
  return encode.clientInfo(clientPublic, sealed);
}

/** Server side: opens and parses a ClientInfo payload (client key ‖ nonce ‖ box). */
export function openClientInfo(serverPriv: KeyObject, payload: Buffer): { clientKey: Buffer; info: ClientInfo } {
  if (payload.length < KEY_LEN + NONCE_LEN) throw new HandshakeError(`ClientInfo payload of ${payload.length} bytes is too short`);
  const clientKey = Buffer.from(payload.subarray(0, KEY_LEN));
  if (isZeroKey(clientKey)) throw new HandshakeError('ClientInfo carries the all-zero client key');
  let plain: Buffer;
  try {
    plain = open(serverPriv, clientKey, payload.subarray(KEY_LEN));
  } catch (cause) {
    throw new HandshakeError(`ClientInfo box from ${clientKey.toString('hex').slice(0, 16)}… did not open`, { cause });
  }
  return { clientKey, info: parseClientInfoJson(plain.toString('utf8')) };
}

/** Server side: the ServerInfo frame sealed to the client. */
export function buildServerInfoFrame(serverPriv: KeyObject, clientPublic: Uint8Array, info: ServerInfo = { version: PROTOCOL_VERSION }, nonce?: Uint8Array): Buffer {
  return encode.serverInfo(seal(serverPriv, clientPublic, Buffer.from(serverInfoJson(info), 'utf8'), nonce));
}

/** Client side: opens and parses a ServerInfo payload. */
export function openServerInfo(clientPriv: KeyObject, serverPublic: Uint8Array, payload: Buffer): ServerInfo {
  if (payload.length < NONCE_LEN) throw new HandshakeError(`ServerInfo payload of ${payload.length} bytes is too short`);
  if (payload.length > NONCE_LEN + MAX_INFO_LEN) throw new HandshakeError(`ServerInfo payload of ${payload.length} bytes is too long`);
  let plain: Buffer;
  try {
    plain = open(clientPriv, serverPublic, payload);
  } catch (cause) {
    if (cause instanceof BoxError) throw new HandshakeError('ServerInfo box did not open (server key mismatch?)', { cause });
    throw cause;
  }
  return parseServerInfoJson(plain.toString('utf8'));
}
