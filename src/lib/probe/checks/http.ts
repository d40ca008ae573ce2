/**
 * `http`: GET /derp/probe (200), /generate_204 with an X-Tailscale-Challenge that must come back as
 * derper echoes it (derpserver/handler.go ServeNoContent; also on port 80 where CanPort80), and the
 * time of GET /derp/latency-check on the warm connection. Global fetch with an undici dispatcher
 * whose connections are dialled with the client's own TLS rules (pins, CA file, name).
 */
import { isIP, type Socket } from 'node:net';
import { Agent, Dispatcher1Wrapper, type Dispatcher } from 'undici';
import { dialSocket } from '../../client/dial.js';
import { resolveTarget } from '../../client/target.js';
import { describeError } from '../../errors.js';
import { GENERATE_204_PATH, LATENCY_CHECK_PATH } from '../../netcheck/https.js';
import { Headers as DerpHeaders } from '../../protocol/constants.js';
import { bad, relaySkip, round, type Check, type CheckContext } from '../context.js';

const PROBE_PATH = '/derp/probe';

function withDispatcher(init: RequestInit, dispatcher: Dispatcher): RequestInit {
  // `dispatcher` is undici's RequestInit extension; Node's typings pin an older undici Dispatcher type.
  return Object.assign<RequestInit, object>(init, { dispatcher });
}

interface Got {
  status: number;
  challengeResponse: string | null;
  ms: number;
}

async function get(ctx: CheckContext, url: URL, dispatcher: Dispatcher, headers: Record<string, string> = {}): Promise<Got> {
  const t0 = performance.now();
  const res = await fetch(url, withDispatcher({ signal: ctx.signal, redirect: 'manual', cache: 'no-store', headers }, dispatcher));
  const ms = performance.now() - t0;
  // Probe answers are empty; read what there is so the connection can be reused.
  await res.arrayBuffer();
  return { status: res.status, challengeResponse: res.headers.get(DerpHeaders.ChallengeResponse), ms };
}

/** Checks one /generate_204 answer; returns the problem or undefined. */
async function challenge(ctx: CheckContext, url: URL, dispatcher: Dispatcher): Promise<string | undefined> {
  const c = `ts_${url.hostname.replace(/^\[|\]$/g, '')}`;
  url.searchParams.set('t', String(Math.floor(ctx.opts.now() / 1000)));
  const r = await get(ctx, url, dispatcher, { [DerpHeaders.Challenge]: c, 'cache-control': 'no-cache' });
  if (r.status !== 204) return `${url.origin}${url.pathname}: HTTP ${r.status}, expected 204`;
  const want = `response ${c}`;
  if (r.challengeResponse !== want) {
    return `${url.origin}${url.pathname}: ${DerpHeaders.ChallengeResponse} ${r.challengeResponse === null ? 'missing' : JSON.stringify(r.challengeResponse)}, expected ${JSON.stringify(want)}`;
  }
  return undefined;
}

export const http: Check = async (ctx) => {
  const node = ctx.target.node;
  const skip = relaySkip(node);
  if (skip) return skip;
  const { ca, caFile, insecure } = ctx.opts.tls;
  const target = resolveTarget(node, { ...(ca !== undefined ? { ca } : {}), ...(caFile !== undefined ? { caFile } : {}), insecure });
  const sockets = new Set<Socket>();
  const agent = new Agent({
    connections: 1,
    connect: (_o, cb) => {
      // undici stalls when a connector calls back synchronously; dialSocket never does.
      dialSocket(target, ctx.signal).then(
        (s) => {
          sockets.add(s);
          cb(null, s);
        },
        (e: unknown) => cb(e instanceof Error ? e : new Error(String(e)), null),
      );
    },
  });
  // The agent does not always destroy a socket with a request in flight; ours are closed by hand too.
  ctx.defer(async () => {
    for (const s of sockets) s.destroy();
    await agent.destroy();
  });
  const dispatcher = new Dispatcher1Wrapper(agent);
  const base = target.url;
  const problems: string[] = [];
  const details: Record<string, string | number | boolean> = {};
  let latency: number | undefined;
  try {
    const probe = await get(ctx, new URL(PROBE_PATH, base), dispatcher);
    details.probeStatus = probe.status;
    if (probe.status !== 200) problems.push(`${new URL(PROBE_PATH, base).href}: HTTP ${probe.status}, expected 200`);
    const p204 = await challenge(ctx, new URL(GENERATE_204_PATH, base), dispatcher);
    details.generate204 = p204 ?? 'ok';
    if (p204) problems.push(p204);
    const lat = await get(ctx, new URL(LATENCY_CHECK_PATH, base), dispatcher);
    if (lat.status !== 200) problems.push(`${new URL(LATENCY_CHECK_PATH, base).href}: HTTP ${lat.status}, expected 200`);
    else latency = round(lat.ms);
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    return bad(`${base.origin}: ${describeError(err)}`, details);
  }
  // A plain-HTTP node answered /generate_204 on its own port above already.
  if (node.canPort80 && !node.plainHttp) {
    const host = node.ipv4 && isIP(node.ipv4) === 4 ? node.ipv4 : isIP(node.hostname) === 6 ? `[${node.hostname}]` : node.hostname;
    const url = new URL(`http://${host}:${ctx.opts.port80}${GENERATE_204_PATH}`);
    const plain = new Agent({ connections: 1 });
    ctx.defer(() => plain.destroy());
    try {
      const p80 = await challenge(ctx, url, new Dispatcher1Wrapper(plain));
      details.port80 = p80 ?? 'ok';
      if (p80) problems.push(`port 80 (CanPort80): ${p80}`);
    } catch (err) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      details.port80 = describeError(err);
      problems.push(`port 80 (CanPort80): ${url.origin}: ${describeError(err)}`);
    }
  }
  if (problems.length) return { status: 'bad', ...(latency !== undefined ? { value: latency, unit: 'ms' as const } : {}), message: problems.join('; '), details };
  return { status: 'good', value: latency!, unit: 'ms', message: `${PROBE_PATH} 200, ${GENERATE_204_PATH} challenge answered${node.canPort80 && !node.plainHttp ? ' (also on port 80)' : ''}`, details };
};
