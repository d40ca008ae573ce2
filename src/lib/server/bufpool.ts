/**
 * Process-wide free lists of batch buffers. Every Buffer over 4 KiB is its own ArrayBuffer, and V8
 * counts those as external memory: a fresh batch per flush per destination (hundreds of MB/s at line
 * rate) forces a full mark-sweep every few dozen milliseconds, whose pauses are the relay's p99
 * latency. Batches are taken from here and given back once the transport is done with them.
 */
import { BATCH_INITIAL_BYTES, BATCH_MAX_HINT_BYTES, BATCH_POOL_MAX_BYTES } from './constants.js';

const MIN_SHIFT = Math.log2(BATCH_INITIAL_BYTES);
/** Classes 16 KiB, 32 KiB, … up to the largest batch a destination grows to in one turn. */
const CLASSES = Math.log2(BATCH_MAX_HINT_BYTES) - MIN_SHIFT + 1;

const free: Buffer[][] = Array.from({ length: CLASSES }, () => []);
/** Pool buffers currently handed out: a foreign or already-released buffer is never pooled (twice). */
const out = new WeakSet<Buffer>();
let pooledBytes = 0;

function classOf(n: number): number {
  if (n <= BATCH_INITIAL_BYTES) return 0;
  return 32 - Math.clz32(n - 1) - MIN_SHIFT;
}

/** A buffer of at least `n` bytes; pooled when `n` is within the largest class. */
export function takeBatch(n: number): Buffer {
  const c = classOf(n);
  if (c >= CLASSES) return Buffer.allocUnsafeSlow(n);
  let b = free[c]!.pop();
  if (b !== undefined) pooledBytes -= b.length;
  else b = Buffer.allocUnsafeSlow(BATCH_INITIAL_BYTES << c);
  out.add(b);
  return b;
}

/** Hands a batch back; the caller must not touch it again. Non-pool buffers are ignored. */
export function releaseBatch(b: Buffer): void {
  if (!out.delete(b) || pooledBytes + b.length > BATCH_POOL_MAX_BYTES) return;
  free[classOf(b.length)]!.push(b);
  pooledBytes += b.length;
}

/** Whether `b` came from takeBatch's classes (and so should be released after its write). */
export function isPooled(b: Buffer): boolean {
  return out.has(b);
}
