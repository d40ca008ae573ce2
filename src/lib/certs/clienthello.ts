/**
 * Reads the server name (SNI) and offered ALPN protocols from the first bytes of a TLS connection,
 * without consuming them. Node has no certificate callback that sees ALPN, so TLS-ALPN-01 (RFC 8737)
 * validation connections are recognised here and given the challenge certificate. Pure: bytes in,
 * values out; never throws on hostile input.
 */
import { CLIENT_HELLO_MAX } from './constants.js';

export type ClientHelloResult =
  /** Need more bytes. */
  | { status: 'incomplete' }
  /** Not a TLS ClientHello (or malformed, or too big): hand the connection to TLS as it is. */
  | { status: 'invalid' }
  | { status: 'ok'; serverName: string | undefined; alpn: string[] };

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
const SNI_HOST_NAME = 0x00;

const INCOMPLETE: ClientHelloResult = { status: 'incomplete' };
const INVALID: ClientHelloResult = { status: 'invalid' };

/** Joins the payloads of consecutive handshake records (a ClientHello may span records). */
function handshakeBytes(buf: Buffer): Buffer | ClientHelloResult {
  const parts: Buffer[] = [];
  let off = 0;
  let have = 0;
  let need = -1;
  while (need < 0 || have < need) {
    if (buf.length < off + 5) return buf.length >= CLIENT_HELLO_MAX ? INVALID : INCOMPLETE;
    if (buf[off] !== RECORD_HANDSHAKE || buf[off + 1] !== 0x03) return INVALID;
    const len = buf.readUInt16BE(off + 3);
    if (len === 0) return INVALID;
    if (buf.length < off + 5 + len) return off + 5 + len > CLIENT_HELLO_MAX ? INVALID : INCOMPLETE;
    parts.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0) {
      const hs = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      if (hs.length < 4) continue;
      if (hs[0] !== HANDSHAKE_CLIENT_HELLO) return INVALID;
      need = 4 + hs.readUIntBE(1, 3);
      if (need > CLIENT_HELLO_MAX) return INVALID;
    }
  }
  return (parts.length === 1 ? parts[0]! : Buffer.concat(parts)).subarray(0, need);
}

export function parseClientHello(buf: Buffer): ClientHelloResult {
  const hs = handshakeBytes(buf);
  if (!Buffer.isBuffer(hs)) return hs;
  // client_version(2) random(32)
  let p = 4 + 2 + 32;
  const skip = (lenBytes: 1 | 2): boolean => {
    if (p + lenBytes > hs.length) return false;
    const n = lenBytes === 1 ? hs[p]! : hs.readUInt16BE(p);
    p += lenBytes + n;
    return p <= hs.length;
  };
  if (!skip(1) || !skip(2) || !skip(1)) return INVALID; // session_id, cipher_suites, compression_methods
  let serverName: string | undefined;
  const alpn: string[] = [];
  if (p === hs.length) return { status: 'ok', serverName, alpn };
  if (p + 2 > hs.length) return INVALID;
  const extEnd = p + 2 + hs.readUInt16BE(p);
  if (extEnd > hs.length) return INVALID;
  p += 2;
  while (p + 4 <= extEnd) {
    const type = hs.readUInt16BE(p);
    const len = hs.readUInt16BE(p + 2);
    const start = p + 4;
    const end = start + len;
    if (end > extEnd) return INVALID;
    if (type === EXT_SERVER_NAME && len >= 2) {
      let q = start + 2;
      while (q + 3 <= end) {
        const nt = hs[q]!;
        const nl = hs.readUInt16BE(q + 1);
        if (q + 3 + nl > end) return INVALID;
        if (nt === SNI_HOST_NAME && serverName === undefined) serverName = hs.toString('latin1', q + 3, q + 3 + nl);
        q += 3 + nl;
      }
    } else if (type === EXT_ALPN && len >= 2) {
      let q = start + 2;
      while (q + 1 <= end) {
        const pl = hs[q]!;
        if (pl === 0 || q + 1 + pl > end) return INVALID;
        alpn.push(hs.toString('latin1', q + 1, q + 1 + pl));
        q += 1 + pl;
      }
    }
    p = end;
  }
  return { status: 'ok', serverName, alpn };
}
