/**
 * Handshakes a relay makes with itself before it listens. Until V8 has compiled the accept, head,
 * frame and registration code, each handshake costs the event loop several times what it does later,
 * so a cold relay hit by a reconnect storm or a handshake flood holds its clients' packets for much
 * longer than a warm one. These run over loopback against a private instance with the same code.
 */
import { connect } from 'node:net';
import { HandshakeError, describeError } from '../errors.js';
import { FrameReader, FrameType, MAX_CLIENT_FRAME_LEN, NodePrivateKey, PROTOCOL_VERSION, buildClientInfoFrame, buildUpgradeRequest } from '../protocol/index.js';
import { WARM_UP_CONCURRENCY, WARM_UP_MAX_MS } from './constants.js';

export interface WarmUpResult {
  /** Handshakes completed. */
  handshakes: number;
  ms: number;
  /** Why it stopped before `count` (the first failure, or the time cap); absent when all were done. */
  error?: string;
}

export interface WarmUpTarget {
  /** The private instance's port on 127.0.0.1. */
  port: number;
  serverKey: Buffer;
  count: number;
  /** Per handshake. */
  timeoutMs: number;
  /** Aborted when the relay stops: the handshakes in flight are cut and no more start. */
  signal?: AbortSignal;
  /** The most the whole warm-up may take (default WARM_UP_MAX_MS). */
  maxMs?: number;
}

const HEADER_END = Buffer.from('\r\n\r\n');

/** One connect, upgrade, ClientInfo and ServerInfo, then a close; `cut` ends it early (its reason is the error). */
function handshakeOnce(t: WarmUpTarget, key: NodePrivateKey, cut: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port: t.port, noDelay: true });
    // The response head, until its end; then every byte goes to the frame reader.
    let head: Buffer | null = Buffer.alloc(0);
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      cut.removeEventListener('abort', onCut);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => finish(new HandshakeError(`a warm-up handshake took over ${t.timeoutMs} ms`)), t.timeoutMs);
    const onCut = (): void => finish(new HandshakeError(String(cut.reason)));
    cut.addEventListener('abort', onCut, { once: true });
    sock.on('error', (err) => finish(err));
    sock.on('close', () => finish(new HandshakeError('the relay closed a warm-up handshake')));
    const frames = new FrameReader(
      () => MAX_CLIENT_FRAME_LEN,
      (type) => {
        if (settled) return;
        if (type === FrameType.ServerKey) sock.write(buildClientInfoFrame(key.keyObject, key.publicKey, t.serverKey, { version: PROTOCOL_VERSION, canAckPings: false }));
        else if (type === FrameType.ServerInfo) finish();
      },
    );
    sock.on('data', (chunk: Buffer) => {
      let rest = chunk;
      if (head !== null) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf(HEADER_END);
        if (end < 0) return;
        rest = head.subarray(end + HEADER_END.length);
        head = null;
      }
      try {
        frames.push(rest);
      } catch (err) {
        finish(err as Error);
      }
    });
    sock.write(buildUpgradeRequest({ host: '127.0.0.1' }));
  });
}

/**
 * `count` handshakes, WARM_UP_CONCURRENCY at a time (so the crypto thread sees batches, as under
 * load), each with a fresh key; stops at the first failure, when `signal` aborts, or after `maxMs`
 * (WARM_UP_MAX_MS), cutting the handshakes in flight. Never throws.
 */
export async function warmUpAgainst(t: WarmUpTarget): Promise<WarmUpResult> {
  const t0 = performance.now();
  const maxMs = t.maxMs ?? WARM_UP_MAX_MS;
  const cut = new AbortController();
  const capTimer = setTimeout(() => cut.abort(`the warm-up's ${maxMs} ms were up`), maxMs);
  const onStop = (): void => cut.abort('the relay stopped');
  if (t.signal?.aborted === true) onStop();
  else t.signal?.addEventListener('abort', onStop, { once: true });
  let started = 0;
  let done = 0;
  let error: string | undefined;
  const loop = async (): Promise<void> => {
    while (error === undefined && started < t.count) {
      if (cut.signal.aborted) {
        error = String(cut.signal.reason);
        return;
      }
      started++;
      try {
        await handshakeOnce(t, NodePrivateKey.generate(), cut.signal);
        done++;
      } catch (err) {
        error ??= describeError(err);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(WARM_UP_CONCURRENCY, t.count) }, loop));
  } finally {
    clearTimeout(capTimer);
    t.signal?.removeEventListener('abort', onStop);
  }
  return { handshakes: done, ms: performance.now() - t0, ...(error === undefined ? {} : { error }) };
}
