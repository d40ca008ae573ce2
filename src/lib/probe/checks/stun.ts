/** `stun4` / `stun6`: one Binding round trip to the node's STUN port per address family. */
import { lookup } from 'node:dns/promises';
import { stunTargets } from '../../derpmap/addr.js';
import { describeError } from '../../errors.js';
import { stunProbe } from '../../stun/client.js';
import { STUN_TIMEOUT_MS } from '../constants.js';
import { bad, round, skipped, type Check, type CheckContext, type CheckOutcome } from '../context.js';

async function stunCheck(ctx: CheckContext, family: 4 | 6): Promise<CheckOutcome> {
  const node = ctx.target.node;
  if (!node.canStun || node.stunPort < 0) return skipped('the node offers no STUN (STUNPort -1)');
  const t = stunTargets(node).find((x) => x.family === family);
  if (!t) {
    const field = family === 4 ? node.ipv4 : node.ipv6;
    return skipped(node.stunTestIP ? `STUNTestIP ${node.stunTestIP} is not IPv${family}` : `IPv${family} is disabled for the node (${family === 4 ? 'IPv4' : 'IPv6'} ${JSON.stringify(field ?? '')})`);
  }
  let address = t.host;
  if (t.resolve) {
    try {
      address = (await lookup(t.host, { family })).address;
    } catch (err) {
      // The map asks for DNS; a name without an address of this family means no such STUN target.
      return skipped(`${t.host} has no IPv${family} address (${describeError(err)})`);
    }
  }
  const where = `${family === 6 ? `[${address}]` : address}:${t.port}`;
  const timeoutMs = Math.min(STUN_TIMEOUT_MS, Math.floor(ctx.budgetMs * 0.8));
  try {
    const r = await stunProbe({ host: address, port: t.port, family, timeoutMs, signal: ctx.signal });
    const mapped = `${r.family === 6 ? `[${r.address}]` : r.address}:${r.port}`;
    return {
      status: 'good',
      value: round(r.rttMs),
      unit: 'ms',
      message: `${where} mapped us to ${mapped}`,
      details: { server: where, mappedAddress: mapped, attempts: r.attempts },
    };
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    return bad(`STUN to ${where} failed: ${describeError(err)}`, { server: where });
  }
}

export const stun4: Check = (ctx) => stunCheck(ctx, 4);
export const stun6: Check = (ctx) => stunCheck(ctx, 6);
