/**
 * derper's debug pages on the relay's own port, so dashboards and scripts made for derper work
 * unchanged: `/debug/varz` (Prometheus text under derper's names, tsweb/varz), `/debug/vars` (the
 * expvar JSON shape) and the `/debug/` index. Loopback peers only, as tsweb's AllowDebugAccess.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { DROP_REASONS } from '../server/stats.js';
import type { RouteHandler } from '../server/relay.js';
import { isLoopbackAddress } from '../util/net.js';
import type { MetricsSnapshot, RelayMetrics } from './registry.js';

/** Headers a reverse proxy adds: a request carrying one came from elsewhere (tsweb refuses X-Forwarded-For). */
const PROXY_HEADERS = ['x-forwarded-for', 'forwarded', 'x-real-ip'] as const;

/**
 * Whether a debug request may be answered: the peer is loopback and no proxy forwarded it (behind
 * nginx on the same host every request is "from loopback"; the header shows it is not).
 */
export function allowDebugAccess(remoteAddress: string | undefined, headers: IncomingHttpHeaders): boolean {
  if (!isLoopbackAddress(remoteAddress)) return false;
  return PROXY_HEADERS.every((h) => headers[h] === undefined);
}

type Sample = [labels: Record<string, string> | null, value: number];
interface Var {
  /** derper's Prometheus name (without the derp_/stun_ prefix it gets from its expvar set). */
  name: string;
  type: 'counter' | 'gauge' | 'untyped';
  samples: Sample[];
}

function derpVars(s: MetricsSnapshot): Var[] {
  const r = s.relay;
  if (r === null) return [];
  const c = (name: string, v: number): Var => ({ name, type: 'counter', samples: [[null, v]] });
  const g = (name: string, v: number): Var => ({ name, type: 'gauge', samples: [[null, v]] });
  const dropped = (byReason: Record<string, number>, disco: Record<string, number>): Sample[] =>
    DROP_REASONS.flatMap((reason): Sample[] => [
      [{ reason, kind: 'disco' }, disco[reason]!],
      [{ reason, kind: 'other' }, byReason[reason]! - disco[reason]!],
    ]);
  return [
    c('accepts', r.accepts),
    g('current_connections', r.currentConnections),
    g('current_home_connections', r.currentHomeConnections),
    g('clients_total', r.clients + r.clientsRemote),
    g('clients_local', r.clients),
    g('clients_remote', r.clientsRemote),
    g('current_dup_client_keys', r.dupClientKeys),
    g('current_dup_client_conns', r.dupClientConns),
    c('total_dup_client_conns', r.dupClientConnsTotal),
    c('bytes_received', r.bytesReceived),
    c('bytes_sent', r.bytesSent),
    c('packets_received', r.packetsReceived),
    c('packets_sent', r.packetsSent),
    { name: 'packets_received_kind', type: 'counter', samples: [[{ kind: 'disco' }, r.packetsReceivedDisco], [{ kind: 'other' }, r.packetsReceivedOther]] },
    { name: 'packets_dropped', type: 'counter', samples: dropped(r.packetsDropped, r.packetsDroppedDiscoBy) },
    { name: 'bytes_dropped', type: 'counter', samples: dropped(r.bytesDropped, r.bytesDroppedDiscoBy) },
    c('got_ping', r.gotPing),
    c('sent_pong', r.sentPong),
    c('peer_gone_disconnected_frames', r.peerGoneDisconnectedFrames),
    c('peer_gone_not_here_frames', r.peerGoneNotHereFrames),
    c('home_moves_in', r.homeMovesIn),
    c('home_moves_out', r.homeMovesOut),
    c('sclient_write_timeouts', r.writeTimeouts),
    c('unknown_frames', r.unknownFrames),
    c('websocket_accepts', r.websocketAccepts),
    g('watchers', r.watchers),
    c('packets_forwarded_out', r.packetsForwardedOut),
    c('packets_forwarded_in', r.packetsForwardedIn),
    c('multiforwarder_created', r.multiForwarderCreated),
    c('multiforwarder_deleted', r.multiForwarderDeleted),
    { name: 'average_queue_duration_ms', type: 'untyped', samples: [[null, s.averageQueueDurationMs]] },
  ];
}

function stunVars(s: MetricsSnapshot): Var[] {
  const st = s.stun;
  if (st === null) return [];
  return [
    { name: 'requests', type: 'counter', samples: Object.entries(st.requests).map(([disposition, v]): Sample => [{ disposition }, v]) },
    { name: 'addrfamily', type: 'counter', samples: Object.entries(st.addrFamily).map(([family, v]): Sample => [{ family }, v]) },
  ];
}

/** Prometheus text as derper's /debug/varz names it (`derp_accepts`, `stun_requests{disposition}`, …). */
export function renderVarz(s: MetricsSnapshot): string {
  let out = '';
  for (const [prefix, vars] of [
    ['derp_', derpVars(s)],
    ['stun_', stunVars(s)],
  ] as const) {
    for (const v of vars) {
      const name = prefix + v.name;
      out += `# TYPE ${name} ${v.type}\n`;
      for (const [labels, value] of v.samples) {
        const l = labels === null ? '' : `{${Object.entries(labels).map(([k, x]) => `${k}="${x}"`).join(',')}}`;
        out += `${name}${l} ${value}\n`;
      }
    }
  }
  return out;
}

/** The expvar JSON of /debug/vars: sets "derp" and "stun", with derper's gauge_/counter_ key prefixes. */
export function renderVars(s: MetricsSnapshot): Record<string, unknown> {
  const set = (vars: Var[]): Record<string, unknown> => {
    const o: Record<string, unknown> = {};
    for (const v of vars) {
      const only = v.samples[0];
      if (v.samples.length === 1 && only !== undefined && only[0] === null) {
        o[v.type === 'gauge' ? `gauge_${v.name}` : v.name] = only[1];
        continue;
      }
      // Labelled vars are expvar maps keyed by their one label (reason×kind is split into two maps, as derper does).
      const maps = new Map<string, Record<string, number>>();
      for (const [labels, value] of v.samples) {
        for (const [k, x] of Object.entries(labels ?? {})) {
          const key = `${v.type === 'gauge' ? 'gauge' : 'counter'}_${v.name}_${k}`;
          const m = maps.get(key) ?? {};
          m[x] = (m[x] ?? 0) + value;
          maps.set(key, m);
        }
      }
      for (const [k, m] of maps) o[k] = m;
    }
    return o;
  };
  const derp = set(derpVars(s));
  if (s.relay !== null) {
    // derper also keeps plain totals beside the labelled maps.
    derp.packets_dropped = Object.values(s.relay.packetsDropped).reduce((a, b) => a + b, 0);
    derp.bytes_dropped = Object.values(s.relay.bytesDropped).reduce((a, b) => a + b, 0);
  }
  return { derp, stun: set(stunVars(s)), process_uptime_seconds: process.uptime() };
}

const INDEX = (paths: string[]): string =>
  '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>derp debug</title></head><body>\n<h1>derp debug</h1>\n<ul>\n' +
  paths.map((p) => `<li><a href="${p}">${p}</a></li>\n`).join('') +
  '</ul>\n</body></html>\n';

function send(res: ServerResponse, status: number, type: string, body: string, head: boolean): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-store' });
  res.end(head ? undefined : body);
}

/** A debug page: 403 to anyone but an unproxied loopback peer, GET and HEAD only, never cached. */
export function debugPage(render: () => { type: string; body: string }): RouteHandler {
  return (req: IncomingMessage, res: ServerResponse) => {
    if (!allowDebugAccess(req.socket.remoteAddress, req.headers)) {
      send(res, 403, 'text/plain; charset=utf-8', 'debug access denied\n', false);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', false);
      return;
    }
    const { type, body } = render();
    send(res, 200, type, body, req.method === 'HEAD');
  };
}

/**
 * RelayServer `routes` for /debug/, /debug/varz and /debug/vars, answered to loopback peers only (403
 * otherwise). `extra` debug pages (e.g. /debug/bans, which guard themselves) are added and listed in the index.
 */
export function debugRoutes(metrics: RelayMetrics, extra: Record<string, RouteHandler> = {}): Record<string, RouteHandler> {
  return {
    ...extra,
    '/debug/': debugPage(() => ({ type: 'text/html; charset=utf-8', body: INDEX(['/debug/varz', '/debug/vars', ...Object.keys(extra)]) })),
    '/debug/varz': debugPage(() => ({ type: 'text/plain; version=0.0.4; charset=utf-8', body: renderVarz(metrics.snapshot()) })),
    '/debug/vars': debugPage(() => ({ type: 'application/json; charset=utf-8', body: `${JSON.stringify(renderVars(metrics.snapshot()), null, 2)}\n` })),
  };
}
