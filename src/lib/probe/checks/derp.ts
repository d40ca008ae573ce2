/** `derp`: connect and handshake per transport (Upgrade, WebSocket); value = the slowest time to ServerInfo. */
import { ProbeConnectError, bad, openClient, relaySkip, round, type Check } from '../context.js';

export const derp: Check = async (ctx) => {
  const node = ctx.target.node;
  const skip = relaySkip(node);
  if (skip) return skip;
  const details: Record<string, string | number | boolean> = {};
  const problems: string[] = [];
  let slowest = 0;
  // One transport at a time: with a fixed --key-file key, two live connections would replace each other.
  for (const transport of ctx.opts.transports) {
    const t0 = performance.now();
    try {
      const client = await openClient(ctx, node, ctx.opts.privateKey, transport);
      const ms = round(performance.now() - t0);
      details[`${transport}Ms`] = ms;
      slowest = Math.max(slowest, ms);
      await client.disconnect();
    } catch (err) {
      if (!(err instanceof ProbeConnectError)) throw err;
      details[`${transport}Error`] = err.message;
      problems.push(`${transport}: ${err.message}`);
    }
  }
  if (problems.length) return bad(problems.join('; '), details);
  return { status: 'good', value: slowest, unit: 'ms', message: `ServerInfo over ${ctx.opts.transports.join(' and ')}`, details };
};
