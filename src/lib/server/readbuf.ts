/**
 * One read buffer shared by every raw DERP socket. By default Node hands each socket read to JS in a
 * fresh ArrayBuffer; at line rate that is hundreds of MB/s of external memory, and V8 answers external
 * memory growth with full mark-sweeps whose pauses dominate the relay's tail latency.
 *
 * `net.Socket`'s documented `onread: { buffer, callback }` option does exactly this, but only for
 * sockets we construct; server-accepted (and HTTP-upgraded) sockets get it by setting the same two
 * internal fields the constructor sets and calling the handle's `useUserBuffer`, as `new Socket()`
 * does. If a Node version lacks those internals, the caller falls back to 'data' events.
 *
 * Sharing is safe because every read is delivered to its callback synchronously before libuv reads
 * the next one; callbacks must copy whatever they keep past their own return.
 */
import type { Socket } from 'node:net';

/** What libuv asks for per stream read (uv__read's 64 KiB suggested size): never a short buffer. */
const READ_BUFFER_BYTES = 64 << 10;

export type OnSharedRead = (this: Socket, nread: number, buf: Buffer) => void;

interface ReadInternals {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

interface UserBufferHandle {
  useUserBuffer?: (buf: Uint8Array) => void;
}

let internals: ReadInternals | null | undefined;
let shared: Buffer | null = null;

function findInternals(sock: Socket): ReadInternals | null {
  const byName = new Map<string | undefined, symbol>();
  for (const s of Object.getOwnPropertySymbols(sock)) byName.set(s.description, s);
  const buffer = byName.get('kBuffer');
  const callback = byName.get('kBufferCb');
  const generator = byName.get('kBufferGen');
  return buffer && callback && generator ? { buffer, callback, generator } : null;
}

/** Switches `sock` to the shared read buffer; false (nothing changed) when this Node cannot. */
export function readIntoSharedBuffer(sock: Socket, onRead: OnSharedRead): boolean {
  const handle = (sock as unknown as { _handle?: UserBufferHandle | null })._handle;
  if (typeof handle?.useUserBuffer !== 'function') return false;
  internals ??= findInternals(sock);
  if (internals === null) return false;
  const fields = sock as unknown as Record<symbol, unknown>;
  // Only a socket still on default reads (these fields start out null).
  if (fields[internals.buffer] !== null || fields[internals.callback] !== null || fields[internals.generator] !== null) return false;
  shared ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  fields[internals.buffer] = shared;
  fields[internals.callback] = onRead;
  handle.useUserBuffer(shared);
  // Flowing, so EOF still surfaces as 'end'; data no longer goes through the stream buffer.
  sock.resume();
  return true;
}
