/**
 * A lean DERP frame splitter for the load generator and the baseline forwarder. Unlike the library's
 * FrameReader it hands out (buffer, offset, length) instead of a subarray per frame, so the hot path
 * allocates nothing for frames that arrive whole inside one chunk; only frames spanning chunks are
 * copied into a fresh buffer.
 */
import { FrameTooLargeError } from '../errors.js';
import { FRAME_HEADER_LEN } from '../protocol/index.js';

/** `buf[off .. off+len)` is the payload of a frame of `type`; valid only during the call. */
export type FrameHandler = (type: number, buf: Buffer, off: number, len: number) => void;

/** Largest frame this scanner accepts: a maximal SendPacket plus generous room (derp.go MaxPacketSize = 64 KiB). */
const MAX_SCAN_FRAME = 1 << 20;

export class FrameScanner {
  private readonly head = Buffer.alloc(FRAME_HEADER_LEN);
  private headLen = 0;
  private type = 0;
  private body: Buffer | null = null;
  private bodyLen = 0;

  constructor(public onFrame: FrameHandler) {}

  push(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (this.body !== null) {
        const k = Math.min(this.body.length - this.bodyLen, n - off);
        chunk.copy(this.body, this.bodyLen, off, off + k);
        this.bodyLen += k;
        off += k;
        if (this.bodyLen === this.body.length) {
          const b = this.body;
          this.body = null;
          this.onFrame(this.type, b, 0, b.length);
        }
        continue;
      }
      let type: number;
      let len: number;
      if (this.headLen === 0 && n - off >= FRAME_HEADER_LEN) {
        type = chunk[off]!;
        len = chunk.readUInt32BE(off + 1);
        off += FRAME_HEADER_LEN;
      } else {
        const k = Math.min(FRAME_HEADER_LEN - this.headLen, n - off);
        chunk.copy(this.head, this.headLen, off, off + k);
        this.headLen += k;
        off += k;
        if (this.headLen < FRAME_HEADER_LEN) return;
        this.headLen = 0;
        type = this.head[0]!;
        len = this.head.readUInt32BE(1);
      }
      if (len > MAX_SCAN_FRAME) throw new FrameTooLargeError(type, len, MAX_SCAN_FRAME);
      if (n - off >= len) {
        this.onFrame(type, chunk, off, len);
        off += len;
      } else {
        this.type = type;
        this.body = Buffer.allocUnsafe(len);
        this.bodyLen = 0;
      }
    }
  }
}
