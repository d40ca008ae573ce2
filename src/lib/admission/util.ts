/** Small pieces the verifiers share: a bounded TTL cache, a bounded concurrency gate, limited body reads. */
import { isIP } from 'node:net';
import { AdmissionError } from '../errors.js';

/** Key → value with per-entry expiry; at most `max` entries, the oldest inserted dropped first. */
export class TtlCache<V> {
  private readonly map = new Map<string, { value: V; until: number }>();
  constructor(
    private readonly max: number,
    private readonly now: () => number,
  ) {}

  get(key: string): V | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (e.until <= this.now()) {
      this.map.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: string, value: V, ttlMs: number): void {
    if (ttlMs <= 0) return;
    this.map.delete(key);
    if (this.map.size >= this.max) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
    this.map.set(key, { value, until: this.now() + ttlMs });
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}

/** Thrown by Gate.run when the wait queue is full. */
export class OverloadedError extends Error {
  constructor() {
    super('overloaded');
    this.name = 'OverloadedError';
  }
}

/** At most `concurrency` tasks run; up to `queue` more wait (FIFO); beyond that, OverloadedError. */
export class Gate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(
    private readonly concurrency: number,
    private readonly queue: number,
  ) {}

  get inFlight(): number {
    return this.running;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.queue) throw new OverloadedError();
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else this.running++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter; `running` only drops when nobody waits.
      if (next !== undefined) next();
      else this.running--;
    }
  }
}

/** Reads a body up to `limit` bytes; AdmissionError when it is larger. */
export async function readLimited(res: Response, limit: number, source: string): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let got = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      got += value.byteLength;
      if (got > limit) throw new AdmissionError(source, `answer larger than ${limit} bytes`);
      chunks.push(value);
    }
  } finally {
    await reader.cancel().catch(() => undefined); // nothing left to read, or the connection is gone: either way done
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The client IP as derper sends it in `Source`: no port, IPv4 clients as plain IPv4 (not `::ffff:`),
 * "" when unknown.
 */
export function sourceIp(remote: string): string {
  let host = remote;
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(remote);
  if (v6) host = v6[1]!;
  else if (isIP(remote) === 0) {
    const i = remote.lastIndexOf(':');
    if (i > 0 && remote.indexOf(':') === i) host = remote.slice(0, i);
  }
  if (isIP(host) === 0) return '';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  return mapped ? mapped[1]! : host;
}

/** A timeout signal combined with a shutdown signal. */
export function deadline(ms: number, shutdown: AbortSignal): AbortSignal {
  return AbortSignal.any([AbortSignal.timeout(ms), shutdown]);
}

/** True when `err` is (or wraps) an abort/timeout. */
export function isAbort(err: unknown): boolean {
  return err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
}
