/**
 * The accounting harness's packet payload: who sent it (stream = one sender connection), from which key
 * to which key, its sequence number on that (stream, destination), and a CRC-32 over everything before
 * it, so a receiver can tell a misdelivered, corrupted, duplicated or reordered packet from a good one.
 *
 *   0 magic "ACCT" | 4 stream | 8 source key id | 12 destination key id | 16 seq | 20 filler… | len−4 crc32
 */
import { crc32 } from 'node:zlib';

const MAGIC = 0x41434354;
/** Header (20) + CRC (4). Not a disco packet: those start "TS💬" (spec §7.3). */
export const ACCOUNTING_MIN_PAYLOAD = 24;

export interface PayloadFields {
  stream: number;
  src: number;
  dst: number;
  seq: number;
}

/** Writes a payload of `len` bytes at buf[off..off+len). */
export function writePayload(buf: Buffer, off: number, len: number, f: PayloadFields): void {
  buf.writeUInt32BE(MAGIC, off);
  buf.writeUInt32BE(f.stream, off + 4);
  buf.writeUInt32BE(f.src, off + 8);
  buf.writeUInt32BE(f.dst, off + 12);
  buf.writeUInt32BE(f.seq, off + 16);
  // Filler that differs from packet to packet, so a swapped or stale body fails the CRC.
  buf.fill((f.seq * 31 + f.stream) & 0xff, off + 20, off + len - 4);
  buf.writeUInt32BE(crc32(buf.subarray(off, off + len - 4)), off + len - 4);
}

/** The fields of a payload that is intact (magic and CRC), else null. */
export function readPayload(buf: Buffer, off: number, len: number): PayloadFields | null {
  if (len < ACCOUNTING_MIN_PAYLOAD || buf.readUInt32BE(off) !== MAGIC) return null;
  if (crc32(buf.subarray(off, off + len - 4)) !== buf.readUInt32BE(off + len - 4)) return null;
  return { stream: buf.readUInt32BE(off + 4), src: buf.readUInt32BE(off + 8), dst: buf.readUInt32BE(off + 12), seq: buf.readUInt32BE(off + 16) };
}
