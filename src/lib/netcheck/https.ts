/**
 * Latency over HTTPS when STUN gets no answer (netcheck.go measureHTTPSLatency, spec §6.6) and the
 * captive-portal check (net/captivedetection, spec §6.7). Requests go through the global fetch (so msw
 * can intercept them) with an undici dispatcher.
 */
import type { Socket } from 'node:net';
import { Agent, Dispatcher1Wrapper, type Dispatcher } from 'undici';
import { dialSocket } from '../client/dial.js';
import { resolveTarget } from '../client/target.js';
import type { DERPRegion, DERPServer } from '../derpmap/types.js';
import { ConnectError, DerpError } from '../errors.js';
import { Headers as DerpHeaders } from '../protocol/constants.js';
import { CAPTIVE_PORTAL_CACHE_CONTROL, CAPTIVE_PORTAL_MAX_ENDPOINTS, HTTPS_MAX_BODY_BYTES } from './constants.js';

export const LATENCY_CHECK_PATH = '/derp/latency-check';
export const GENERATE_204_PATH = '/generate_204';
/**
 * Untimed GETs before the timed one. Tailscale times its single GET after the dial; the first request
 * through Node's fetch stack also pays one-off setup (~15 ms here), so we time a request on a warm one.
 */
export const HTTPS_WARMUP_REQUESTS = 1;
/** measureHTTPSLatency: any status above this fails the probe. */
const MAX_OK_STATUS = 299;

export interface HttpsLatency {
  latencyMs: number;
  node: string;
  /** Family of the address the connection went to. */
  family: 4 | 6;
}

function withDispatcher(init: RequestInit, dispatcher: Dispatcher): RequestInit {
  // `dispatcher` is undici's RequestInit extension; Node's typings pin an older undici Dispatcher type.
  return Object.assign<RequestInit, object>(init, { dispatcher });
}

/** Reads at most `limit` bytes of a body and drops the rest. */
async function drainLimited(res: Response, limit: number): Promise<void> {
  if (!res.body) return;
  const reader = res.body.getReader();
  let got = 0;
  try {
    while (got < limit) {
      const { done, value } = await reader.read();
      if (done) return;
      got += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => undefined); // the body is only drained for timing; a cancel failure changes nothing
  }
}

/** An agent whose single connection is the socket we already dialled. */
function agentFor(socket: Socket): Agent {
  let used = false;
  return new Agent({
    connections: 1,
    pipelining: 1,
    connect: (_opts, cb) => {
      if (used) {
        cb(new ConnectError('latency-check connection already used'), null);
        return;
      }
      used = true;
      // undici stalls when a connector calls back synchronously; hand the socket over on the next turn.
      setImmediate(() => cb(null, socket));
    },
  });
}

/**
 * Dials the region's relay nodes in order like a DERP client (per-node budget, TLS rules of the node),
 * then times one GET /derp/latency-check on that connection: only the request/response, not the setup.
 */
export async function measureHttpsLatency(
  region: DERPRegion,
  opts: { signal: AbortSignal; dialTimeoutMs: number; onAttempt?: (node: DERPServer) => void },
): Promise<HttpsLatency> {
  const nodes = region.nodes.filter((n) => n.canRelay);
  if (nodes.length === 0) throw new ConnectError(`region ${region.regionId} has no relay node`, { context: { region: region.regionId } });
  let last: unknown;
  for (const node of nodes) {
    opts.signal.throwIfAborted();
    opts.onAttempt?.(node);
    let socket: Socket;
    const target = resolveTarget(node);
    try {
      socket = await dialSocket(target, AbortSignal.any([opts.signal, AbortSignal.timeout(opts.dialTimeoutMs)]));
    } catch (err) {
      if (opts.signal.aborted) throw err;
      last = err;
      continue;
    }
    const family = socket.remoteFamily === 'IPv6' ? 6 : 4;
    const agent = agentFor(socket);
    try {
      const url = new URL(LATENCY_CHECK_PATH, target.url);
      const dispatcher = new Dispatcher1Wrapper(agent);
      let latencyMs = 0;
      for (let i = 0; i <= HTTPS_WARMUP_REQUESTS; i++) {
        const t0 = performance.now();
        const res = await fetch(url, withDispatcher({ signal: opts.signal, redirect: 'manual', cache: 'no-store' }, dispatcher));
        latencyMs = performance.now() - t0;
        await drainLimited(res, HTTPS_MAX_BODY_BYTES);
        if (res.status > MAX_OK_STATUS) {
          throw new DerpError('DERP_ERR_HTTP', `${url.href}: HTTP ${res.status}`, { context: { node: node.id, status: res.status } });
        }
      }
      return { latencyMs, node: node.id, family };
    } catch (err) {
      if (opts.signal.aborted) throw err;
      last = err;
    } finally {
      await agent.destroy().catch((e: unknown) => socket.destroy(e instanceof Error ? e : undefined));
    }
  }
  throw last instanceof Error ? last : new ConnectError(`no node of region ${region.regionId} answered`);
}

/** `http://<IPv4>/generate_204` for CanPort80 nodes with a literal IPv4; a plain-HTTP dev node is asked on its own port. */
export function captivePortalEndpoints(regions: DERPRegion[]): string[] {
  const out: string[] = [];
  for (const r of regions) {
    if (r.avoid || r.noMeasureNoHome) continue;
    for (const n of r.nodes) {
      if (!n.canPort80 || !n.ipv4 || !/^\d+\.\d+\.\d+\.\d+$/.test(n.ipv4)) continue;
      out.push(n.plainHttp ? `http://${n.ipv4}:${n.derpPort}${GENERATE_204_PATH}` : `http://${n.ipv4}${GENERATE_204_PATH}`);
      if (out.length >= CAPTIVE_PORTAL_MAX_ENDPOINTS) return out;
    }
  }
  return out;
}

/** True if the answer is not the exact 204 + challenge response a DERP server gives (responseLooksLikeCaptive). */
export async function endpointLooksCaptive(endpoint: string, signal: AbortSignal, dispatcher: Dispatcher): Promise<boolean> {
  const url = new URL(endpoint);
  url.searchParams.set('t', String(Math.floor(Date.now() / 1000)));
  const challenge = `ts_${url.host}`;
  const res = await fetch(
    url,
    withDispatcher(
      { signal, redirect: 'manual', headers: { 'cache-control': CAPTIVE_PORTAL_CACHE_CONTROL, [DerpHeaders.Challenge]: challenge } },
      dispatcher,
    ),
  );
  await drainLimited(res, HTTPS_MAX_BODY_BYTES);
  return res.status !== 204 || res.headers.get(DerpHeaders.ChallengeResponse) !== `response ${challenge}`;
}

/**
 * Queries the endpoints concurrently: true if any looks captive, false if some answered correctly and
 * none looked captive, null if none answered (errors are reported through onError).
 */
export async function detectCaptivePortal(
  endpoints: string[],
  opts: { signal: AbortSignal; onError?: (endpoint: string, err: unknown) => void },
): Promise<boolean | null> {
  if (endpoints.length === 0) return null;
  const agent = new Agent({ connections: 1 });
  const dispatcher = new Dispatcher1Wrapper(agent);
  try {
    const results = await Promise.all(
      endpoints.map((e) =>
        endpointLooksCaptive(e, opts.signal, dispatcher).catch((err: unknown) => {
          opts.onError?.(e, err);
          return null;
        }),
      ),
    );
    if (results.includes(true)) return true;
    return results.includes(false) ? false : null;
  } finally {
    await agent.destroy().catch((err: unknown) => opts.onError?.('(agent)', err));
  }
}
