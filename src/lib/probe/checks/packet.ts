/**
 * `packet`: two probe clients on the node; the first sends `packets` packets to the second, which
 * echoes each back. Value = round-trip p50; any packet not back within PACKET_TIMEOUT_MS is lost,
 * and any loss is bad: a relay between two clients on one node has no reason to drop a small packet.
 */
import { randomBytes } from 'node:crypto';
import { describeError } from '../../errors.js';
import { PACKET_PAYLOAD_BYTES, PACKET_TIMEOUT_MS } from '../constants.js';
import { Inbox, bad, openPair, relaySkip, round, type Check } from '../context.js';

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export const packet: Check = async (ctx) => {
  const node = ctx.target.node;
  const skip = relaySkip(node);
  if (skip) return skip;
  const pair = await openPair(ctx, node);
  if (!Array.isArray(pair)) return pair;
  const [a, b] = pair;
  const echo = b;
  let echoError: string | undefined;
  // The receiver echoes everything straight back from inside its read loop.
  new Inbox(echo, ctx.signal, (p) => {
    echo.send(p.src, p.data).catch((e: unknown) => (echoError ??= describeError(e)));
    return true;
  });
  const inbox = new Inbox(a, ctx.signal);
  const tag = randomBytes(8);
  const rtts: number[] = [];
  const n = ctx.opts.packets;
  const wait = Math.min(PACKET_TIMEOUT_MS, ctx.budgetMs);
  let sent = 0;
  for (let seq = 0; seq < n; seq++) {
    ctx.signal.throwIfAborted();
    const payload = Buffer.alloc(PACKET_PAYLOAD_BYTES);
    tag.copy(payload, 0);
    payload.writeUInt32BE(seq, 8);
    const t0 = performance.now();
    await a.send(b.publicKey, payload, ctx.signal);
    const got = await inbox.next((p) => p.data.length === PACKET_PAYLOAD_BYTES && p.data.subarray(0, 12).equals(payload.subarray(0, 12)), wait);
    sent++;
    if (got) rtts.push(performance.now() - t0);
    // Two lost and nothing back: the path is down, not lossy; don't wait out the rest.
    else if (rtts.length === 0 && sent >= 2) break;
  }
  const lost = sent - rtts.length;
  const sorted = [...rtts].sort((x, y) => x - y);
  const details: Record<string, string | number | boolean> = {
    sent,
    received: rtts.length,
    lost,
    lossPercent: round((lost / sent) * 100, 1),
    ...(sorted.length ? { p50Ms: round(percentile(sorted, 50)), maxMs: round(sorted.at(-1)!) } : {}),
    ...(echoError ? { echoError } : {}),
  };
  if (sorted.length === 0) return bad(`none of ${sent} packets from ${a.publicText()} to ${b.publicText()} came back within ${wait} ms`, details);
  const value = round(percentile(sorted, 50));
  if (lost > 0) return { status: 'bad', value, unit: 'ms', message: `${lost} of ${sent} packets lost (not back within ${wait} ms)`, details };
  return { status: 'good', value, unit: 'ms', message: `${n}/${n} packets echoed; RTT p50 ${value} ms, max ${details.maxMs} ms`, details };
};
