/**
 * `bandwidth` (opt-in): `bandwidthBytes` in maximum-size packets from one client to another on the
 * node, at most BANDWIDTH_IN_FLIGHT unreceived at a time (prober/derp.go: just under derper's queue
 * of 32, so the relay never has to drop). Value = Mbit/s of payload, first send to last receipt.
 */
import { randomBytes } from 'node:crypto';
import { MAX_PACKET_SIZE } from '../../protocol/constants.js';
import { BANDWIDTH_IN_FLIGHT, PACKET_TIMEOUT_MS } from '../constants.js';
import { Inbox, bad, openPair, relaySkip, round, skipped, type Check } from '../context.js';

export const bandwidth: Check = async (ctx) => {
  const node = ctx.target.node;
  const skip = relaySkip(node);
  if (skip) return skip;
  const total = ctx.opts.bandwidthBytes;
  if (!total) return skipped('no --bandwidth size given');
  const pair = await openPair(ctx, node);
  if (!Array.isArray(pair)) return pair;
  const [a, b] = pair;
  const chunk = randomBytes(Math.min(MAX_PACKET_SIZE, total));
  let received = 0;
  let wake: (() => void) | undefined;
  const src = a.publicText();
  const inbox = new Inbox(b, ctx.signal, (p) => {
    if (p.srcText !== src) return false;
    received += p.data.length;
    wake?.();
    return true;
  });
  const t0 = performance.now();
  let sentBytes = 0;
  /** True when a packet arrived, false after PACKET_TIMEOUT_MS without one. */
  const waitProgress = (): Promise<boolean> =>
    new Promise<boolean>((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(ctx.signal.reason);
      };
      const timer = setTimeout(() => {
        ctx.signal.removeEventListener('abort', onAbort);
        wake = undefined;
        resolve(false);
      }, PACKET_TIMEOUT_MS);
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      wake = () => {
        clearTimeout(timer);
        ctx.signal.removeEventListener('abort', onAbort);
        wake = undefined;
        resolve(true);
      };
    });
  while (received < total) {
    if (inbox.failure !== undefined) return bad(`receiver stopped after ${received} of ${total} bytes`);
    const inFlight = Math.ceil((sentBytes - received) / chunk.length);
    if (sentBytes < total && inFlight < BANDWIDTH_IN_FLIGHT) {
      const n = Math.min(chunk.length, total - sentBytes);
      await a.send(b.publicKey, n === chunk.length ? chunk : chunk.subarray(0, n), ctx.signal);
      sentBytes += n;
      continue;
    }
    if (!(await waitProgress())) return bad(`stalled: nothing arrived for ${PACKET_TIMEOUT_MS} ms after ${received} of ${total} bytes (${sentBytes} sent)`, { bytes: total, received, sent: sentBytes });
  }
  const secs = (performance.now() - t0) / 1000;
  const mbps = round((total * 8) / secs / 1e6);
  return { status: 'good', value: mbps, unit: 'Mbit/s', message: `${total} bytes in ${round(secs * 1000)} ms`, details: { bytes: total, ms: round(secs * 1000) } };
};
