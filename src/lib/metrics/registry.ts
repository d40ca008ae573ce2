/**
 * The relay's Prometheus metrics on their own prom-client Registry. Counters the relay and the STUN
 * server already keep are read when scraped (`collect`), so they cost the hot path nothing; only
 * durations (handshakes, server-ping RTT, queue wait) arrive through the relay's observer hook.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { DROP_REASONS } from '../server/stats.js';
import type { ConnectionBreakdown, HandshakeResult, RelayObserver, RelayServer, RelayStats } from '../server/relay.js';
import type { StunServer, StunServerStats } from '../stun/server.js';
import { packageVersion } from './build.js';
import { runningAllocator } from '../util/malloc.js';
import { HANDSHAKE_BUCKETS, METRIC_PREFIX, QUEUE_EWMA_ALPHA, QUEUE_WAIT_BUCKETS, RTT_BUCKETS, SCRAPE_METRICS_PER_TURN } from './constants.js';

export type ReloadResult = 'ok' | 'failed';

/** What a certificate source reports that is worth counting. */
export const CERT_EVENTS = ['loaded', 'issued', 'renewed', 'refused', 'failed'] as const;
/** How the serving certificate was obtained (a bounded label value). */
export type CertificateSource = 'manual' | 'acme' | 'self-signed';

/** What the mesh metrics read of each link (the mesh module's MeshLinkStatus has these fields). */
export interface MeshPeerMetrics {
  id: string;
  state: string;
  keys: number;
  forwarded: number;
  forwardDrops: number;
  connects: number;
  refusals: number;
}

/** What the mesh metrics read of each --mesh-with entry (the mesh module's MeshTargetStats has these fields). */
export interface MeshTargetMetrics {
  spec: string;
  kind: 'literal' | 'dns';
  resolutions: number;
  failures: number;
}

export interface RelayMetricsInit {
  /** Reported in derp_build_info; default: package.json's version. */
  version?: string;
  /** prom-client's default process and Node.js metrics (process_*, nodejs_*). Default true. */
  defaultMetrics?: boolean;
}

/** Everything a scrape reads, taken at once (also what /debug/varz renders under derper's names). */
export interface MetricsSnapshot {
  relay: RelayStats | null;
  breakdown: ConnectionBreakdown | null;
  stun: StunServerStats | null;
  /** derper's average_queue_duration_ms: EWMA of the queue waits seen so far (0 before any). */
  averageQueueDurationMs: number;
}

type Labels = Record<string, string>;
type Emit = (labels: Labels, value: number) => void;

export class RelayMetrics implements RelayObserver {
  readonly registry = new Registry();
  private relay: RelayServer | null = null;
  private stunServer: StunServer | null = null;
  private queueEwmaMs = 0;
  private cert: { notAfter: Date; source: CertificateSource } | null = null;
  /** Scrape-time readings are taken once per scrape, not once per metric. */
  private snap: MetricsSnapshot | null = null;
  private readonly handshakes: Counter<'result'>;
  private readonly handshakeSeconds: Histogram<'result'>;
  private readonly rttSeconds: Histogram;
  private readonly queueWaitSeconds: Histogram;
  private readonly reloads: Counter<'result'>;
  private readonly lastReload: Gauge<'result'>;
  private readonly certEvents: Counter<'event'>;
  private readonly logsSuppressed: Counter<'level'>;
  /** Admission decision counts by source, read at scrape time. */
  private admission: (() => Readonly<Record<string, { allow: number; deny: number }>>) | null = null;
  private meshLinks: (() => readonly MeshPeerMetrics[]) | null = null;
  private meshTargets: (() => readonly MeshTargetMetrics[]) | null = null;

  constructor(init: RelayMetricsInit = {}) {
    const reg = this.registry;
    const p = METRIC_PREFIX;
    new Gauge({ name: `${p}build_info`, help: 'Always 1; labels carry the derp version, the Node.js version and the malloc in use (jemalloc or system).', labelNames: ['version', 'node', 'allocator'], registers: [reg] }).set(
      { version: init.version ?? packageVersion(), node: process.version, allocator: runningAllocator() },
      1,
    );

    // Connections.
    this.gauge('connections', 'Registered DERP connections by transport and TLS.', ['transport', 'tls'], (emit) => {
      for (const c of this.take().breakdown?.connections ?? []) emit({ transport: c.transport, tls: String(c.tls) }, c.count);
    });
    this.gauge('home_connections', 'Connections whose client marked this relay as its home (NotePreferred).', [], (emit) => this.relayValue(emit, (s) => s.currentHomeConnections));
    this.gauge('clients', 'Distinct client keys registered.', [], (emit) => this.relayValue(emit, (s) => s.clients));
    this.gauge('pending_handshakes', 'Connections accepted and still in the DERP handshake.', [], (emit) => this.relayValue(emit, (s) => s.pendingHandshakes));
    this.counter('accepts_total', 'DERP connections accepted (upgrades), before the handshake.', [], (emit) => this.relayValue(emit, (s) => s.accepts));
    this.counter('websocket_accepts_total', 'DERP-over-WebSocket connections accepted.', [], (emit) => this.relayValue(emit, (s) => s.websocketAccepts));
    this.handshakes = new Counter({ name: `${p}handshakes_total`, help: 'Finished DERP handshakes by result (ok, rejected, timeout, closed).', labelNames: ['result'], registers: [reg] });
    this.handshakeSeconds = new Histogram({
      name: `${p}handshake_duration_seconds`,
      help: 'Time from accept to the end of the handshake, by result.',
      labelNames: ['result'],
      buckets: HANDSHAKE_BUCKETS,
      registers: [reg],
    });
    this.gauge('dup_client_keys', 'Keys with more than one connection right now.', [], (emit) => this.relayValue(emit, (s) => s.dupClientKeys));
    this.gauge('dup_client_conns', 'Connections belonging to duplicate keys right now.', [], (emit) => this.relayValue(emit, (s) => s.dupClientConns));
    this.counter('dup_client_conns_total', 'Connections that arrived for a key already connected.', [], (emit) => this.relayValue(emit, (s) => s.dupClientConnsTotal));
    this.counter('home_moves_total', 'Clients that made this relay their home (in) or stopped (out), after the first 5 s.', ['direction'], (emit) => {
      const s = this.take().relay;
      if (s === null) return;
      emit({ direction: 'in' }, s.homeMovesIn);
      emit({ direction: 'out' }, s.homeMovesOut);
    });

    // Packets.
    this.counter('packets_received_total', 'Packets clients sent to the relay, by kind (disco or other).', ['kind'], (emit) => {
      const s = this.take().relay;
      if (s === null) return;
      emit({ kind: 'disco' }, s.packetsReceivedDisco);
      emit({ kind: 'other' }, s.packetsReceivedOther);
    });
    this.counter('bytes_received_total', 'Payload bytes of the packets received.', [], (emit) => this.relayValue(emit, (s) => s.bytesReceived));
    this.counter('packets_sent_total', 'Packets handed to the socket of their destination.', [], (emit) => this.relayValue(emit, (s) => s.packetsSent));
    this.counter('bytes_sent_total', 'Payload bytes of the packets sent.', [], (emit) => this.relayValue(emit, (s) => s.bytesSent));
    this.counter('packets_dropped_total', 'Packets not delivered, by reason and kind.', ['reason', 'kind'], (emit) => {
      const s = this.take().relay;
      if (s === null) return;
      for (const r of DROP_REASONS) {
        emit({ reason: r, kind: 'disco' }, s.packetsDroppedDiscoBy[r]);
        emit({ reason: r, kind: 'other' }, s.packetsDropped[r] - s.packetsDroppedDiscoBy[r]);
      }
    });
    this.counter('bytes_dropped_total', 'Payload bytes of the packets not delivered, by reason and kind.', ['reason', 'kind'], (emit) => {
      const s = this.take().relay;
      if (s === null) return;
      for (const r of DROP_REASONS) {
        emit({ reason: r, kind: 'disco' }, s.bytesDroppedDiscoBy[r]);
        emit({ reason: r, kind: 'other' }, s.bytesDropped[r] - s.bytesDroppedDiscoBy[r]);
      }
    });
    this.counter('peer_gone_frames_total', 'PeerGone frames sent, by reason (disconnected, not_here).', ['reason'], (emit) => {
      const s = this.take().relay;
      if (s === null) return;
      emit({ reason: 'disconnected' }, s.peerGoneDisconnectedFrames);
      emit({ reason: 'not_here' }, s.peerGoneNotHereFrames);
    });
    this.counter('got_ping_total', 'Ping frames received from clients.', [], (emit) => this.relayValue(emit, (s) => s.gotPing));
    this.counter('sent_pong_total', 'Pong frames sent to clients.', [], (emit) => this.relayValue(emit, (s) => s.sentPong));
    this.counter('keepalives_sent_total', 'KeepAlive frames sent.', [], (emit) => this.relayValue(emit, (s) => s.keepAlivesSent));
    this.counter('server_pings_sent_total', 'Ping frames the relay sent to time client round trips.', [], (emit) => this.relayValue(emit, (s) => s.serverPingsSent));
    this.counter('server_pongs_received_total', 'Pongs that answered one of those Pings.', [], (emit) => this.relayValue(emit, (s) => s.serverPongsReceived));
    this.rttSeconds = new Histogram({ name: `${p}client_rtt_seconds`, help: 'Client round-trip time: relay Ping to the client\'s Pong.', buckets: RTT_BUCKETS, registers: [reg] });

    // Slow receivers.
    this.gauge('queued_packets', 'Packets waiting in slow receivers\' queues.', [], (emit) => emit({}, this.take().breakdown?.queuedPackets ?? 0));
    this.gauge('blocked_connections', 'Connections whose writes are blocked (their packets are queued).', [], (emit) => emit({}, this.take().breakdown?.blockedConnections ?? 0));
    this.queueWaitSeconds = new Histogram({
      name: `${p}queue_wait_seconds`,
      help: 'How long a slow receiver\'s queued packets waited, one observation per drain.',
      buckets: QUEUE_WAIT_BUCKETS,
      registers: [reg],
    });

    // Errors.
    this.counter('errors_total', 'Errors by kind (handshake, protocol, write_timeout, dead_peer, http, unknown_frame, stun_read, stun_write).', ['kind'], (emit) => {
      const { relay: s, stun } = this.take();
      if (s !== null) {
        emit({ kind: 'handshake' }, s.handshakeFailures);
        emit({ kind: 'protocol' }, s.protocolErrors);
        emit({ kind: 'write_timeout' }, s.writeTimeouts);
        emit({ kind: 'dead_peer' }, s.deadPeers);
        emit({ kind: 'http' }, s.httpErrors);
        emit({ kind: 'unknown_frame' }, s.unknownFrames);
      }
      if (stun !== null) {
        emit({ kind: 'stun_read' }, stun.requests.read_error);
        emit({ kind: 'stun_write' }, stun.requests.write_error);
      }
    });
    this.counter('http_requests_total', 'Plain HTTP requests answered on the relay port (not DERP upgrades).', [], (emit) => this.relayValue(emit, (s) => s.httpRequests));

    // STUN.
    this.counter('stun_requests_total', 'STUN datagrams by result.', ['result'], (emit) => {
      const st = this.take().stun;
      if (st === null) return;
      emit({ result: 'success' }, st.requests.success);
      emit({ result: 'unknown_attribute' }, st.unknownAttribute);
      emit({ result: 'not_stun' }, st.requests.not_stun);
      emit({ result: 'rate_limited' }, st.rateLimited);
      emit({ result: 'amplification_dropped' }, st.amplificationDropped);
      emit({ result: 'read_error' }, st.requests.read_error);
      emit({ result: 'write_error' }, st.requests.write_error);
    });
    this.counter('stun_responses_total', 'STUN responses sent, by the client\'s address family.', ['family'], (emit) => {
      const st = this.take().stun;
      if (st === null) return;
      emit({ family: 'ipv4' }, st.addrFamily.ipv4);
      emit({ family: 'ipv6' }, st.addrFamily.ipv6);
    });

    // Operations (set by whoever reloads the config and loads certificates).
    this.reloads = new Counter({ name: `${p}config_reloads_total`, help: 'Configuration reloads by result (ok, failed).', labelNames: ['result'], registers: [reg] });
    this.lastReload = new Gauge({ name: `${p}config_last_reload_timestamp_seconds`, help: 'Unix time of the last reload, by result.', labelNames: ['result'], registers: [reg] });
    for (const r of ['ok', 'failed'] as const) this.reloads.inc({ result: r }, 0);
    // Labelled so that a relay without TLS has no series at all (rather than a misleading 0).
    this.gauge('certificate_expiry_timestamp_seconds', 'Unix time the serving TLS certificate expires, by how it was obtained (absent without TLS).', ['source'], (emit) => {
      if (this.cert !== null) emit({ source: this.cert.source }, this.cert.notAfter.getTime() / 1000);
    });
    this.gauge('certificate_expires_in_seconds', 'Seconds until the serving TLS certificate expires (negative once expired).', ['source'], (emit) => {
      if (this.cert !== null) emit({ source: this.cert.source }, (this.cert.notAfter.getTime() - Date.now()) / 1000);
    });

    this.certEvents = new Counter({
      name: `${p}certificate_events_total`,
      help: 'Certificate source events: loaded, issued, renewed, refused (a bad new pair kept out), failed (an ACME attempt).',
      labelNames: ['event'],
      registers: [reg],
    });
    for (const e of CERT_EVENTS) this.certEvents.inc({ event: e }, 0);
    this.logsSuppressed = new Counter({ name: `${p}log_lines_suppressed_total`, help: 'Repeated warnings (same cause, same peer) counted instead of logged.', labelNames: ['level'], registers: [reg] });

    // Defences (limits.*): refusals at accept, the admission hook, throttling.
    this.counter('connections_refused_total', 'Connections closed at accept or before the handshake, by limit (accept_rate, per_ip, total, pending_handshakes, banned).', ['reason'], (emit) => {
      const r = this.take().relay;
      if (r !== null) for (const [reason, n] of Object.entries(r.connectionsRefused)) emit({ reason }, n);
    });
    this.gauge('open_connections', 'TCP connections open on the relay port (any stage).', [], (emit) => this.relayValue(emit, (s) => s.openConnections));
    this.counter('admission_total', 'Admission hook results (allowed, refused).', ['result'], (emit) => {
      const r = this.take().relay;
      if (r === null) return;
      emit({ result: 'allowed' }, r.admissionAllowed);
      emit({ result: 'refused' }, r.admissionRefused);
    });
    this.gauge('admission_pending', 'Clients waiting for an admission decision.', [], (emit) => this.relayValue(emit, (s) => s.admissionPending));
    this.counter('handshake_timeouts_total', 'Connections closed for not finishing the HTTP head or ClientInfo in time.', [], (emit) => this.relayValue(emit, (s) => s.handshakeTimeouts));
    this.counter('accept_pauses_total', 'Times the listener was closed because the accept rate (limits.acceptRate) was exceeded; the kernel refused new connections until it reopened.', [], (emit) => this.relayValue(emit, (s) => s.acceptPauses));
    this.counter('accept_paused_seconds_total', 'Time the listener spent closed for the accept rate.', [], (emit) => this.relayValue(emit, (s) => s.acceptPausedMs / 1000));
    this.counter('accept_backlog_restores_total', 'Times the listener got its full listen backlog back, after accept-rate pauses had shortened it, once none came for a while.', [], (emit) => this.relayValue(emit, (s) => s.acceptBacklogRestores));
    this.counter('read_yields_total', 'Times a connection stopped reading until the next event-loop turn after 128 KiB or 256 packets, so one heavy sender does not hold the loop (its bytes wait; nothing is dropped).', [], (emit) => this.relayValue(emit, (s) => s.readYields));
    this.counter('handshakes_deferred_total', 'ClientInfo frames (with the handshake thread, their answers) that waited for a later event-loop turn because more arrived in one than the relay finishes per turn (a burst of handshakes is spread out).', [], (emit) => this.relayValue(emit, (s) => s.handshakesDeferred));
    this.counter('handshake_share_waits_total', 'Of those, ClientInfo frames that waited because opening them had used its share of the event loop (limits.handshakeShare) while clients were relaying.', [], (emit) => this.relayValue(emit, (s) => s.handshakeShareWaits));
    this.counter('handshake_thread_opened_total', 'ClientInfo frames opened on the handshake crypto thread (--handshake-thread), off the event loop.', [], (emit) => this.relayValue(emit, (s) => s.handshakesOnThread));
    this.counter('handshake_thread_failures_total', 'Times the handshake crypto thread failed or exited; its work, and every handshake after, is then opened on the event loop (alert on any).', [], (emit) => this.relayValue(emit, (s) => s.handshakeThreadFailures));
    this.counter('first_reads_deferred_total', 'New connections whose first read (the upgrade, or any HTTP request) waited for a later event-loop turn because more arrived in one than the relay handles per turn (8).', [], (emit) => this.relayValue(emit, (s) => s.firstReadsDeferred));
    this.counter('tls_handshakes_deferred_total', 'TLS ClientHellos that waited for a later event-loop turn because more arrived in one than the relay hands to TLS per turn (1): the server signs its first flight as it reads the hello.', [], (emit) => this.relayValue(emit, (s) => s.tlsHandshakesDeferred));
    this.counter('rate_limit_waits_total', "Times a client's reading was paused by its token bucket (derper: rate_limit_per_client_waited).", [], (emit) => this.relayValue(emit, (s) => s.rateLimitWaits));
    this.gauge('rate_limited_connections', 'Connections whose reading is paused by their token bucket right now.', [], (emit) => this.relayValue(emit, (s) => s.rateLimitedConnections));
    this.counter('forwarded_connections_total', 'Connections whose client address came from X-Forwarded-For (a trusted proxy); malformed headers by result.', ['result'], (emit) => {
      const r = this.take().relay;
      if (r === null) return;
      emit({ result: 'ok' }, r.forwardedConnections);
      emit({ result: 'malformed' }, r.forwardedForMalformed);
    });
    this.counter('admission_decisions_total', 'Admission decisions by deciding source (mesh, deny-list, allow-list, webhook, tailscaled, tailnet, default) and result.', ['source', 'result'], (emit) => {
      const d = this.admission?.();
      if (d === undefined) return;
      for (const [source, n] of Object.entries(d)) {
        emit({ source, result: 'allow' }, n.allow);
        emit({ source, result: 'deny' }, n.deny);
      }
    });

    // Mesh (spec §10): derper's forwarded / watchers / clients_remote, and per-peer link state.
    this.counter('packets_forwarded_total', 'Packets written to a mesh link for a key on another node (out), and received from one (in).', ['direction'], (emit) => {
      const r = this.take().relay;
      if (r === null) return;
      emit({ direction: 'out' }, r.packetsForwardedOut);
      emit({ direction: 'in' }, r.packetsForwardedIn);
    });
    this.gauge('mesh_watchers', 'Mesh peers watching this node\'s clients (WatchConns) right now (derper: watchers).', [], (emit) => this.relayValue(emit, (s) => s.watchers));
    this.gauge('mesh_remote_keys', 'Keys reachable only through mesh links right now (derper: clients_remote).', [], (emit) => this.relayValue(emit, (s) => s.clientsRemote));
    this.counter('mesh_multiforwarder_total', 'Keys that became known from more than one mesh link (created) and back to one (deleted).', ['event'], (emit) => {
      const r = this.take().relay;
      if (r === null) return;
      emit({ event: 'created' }, r.multiForwarderCreated);
      emit({ event: 'deleted' }, r.multiForwarderDeleted);
    });
    this.counter('mesh_auth_failures_total', 'Mesh authentication failures: a ClientInfo mesh key that is not ours (key_mismatch), a privileged frame without the mesh key (permission_denied).', ['reason'], (emit) => {
      const r = this.take().relay;
      if (r === null) return;
      emit({ reason: 'key_mismatch' }, r.meshKeyMismatches);
      emit({ reason: 'permission_denied' }, r.meshPermissionDenied);
    });
    this.counter('mesh_close_peer_total', 'ClosePeer frames from mesh peers (frames) and the connections they closed (connections).', ['what'], (emit) => {
      const r = this.take().relay;
      if (r === null) return;
      emit({ what: 'frames' }, r.closePeerFrames);
      emit({ what: 'connections' }, r.closePeerConns);
    });
    this.gauge('mesh_peers', 'Mesh links by state (up, connecting, down, self).', ['state'], (emit) => {
      const links = this.meshLinks?.();
      if (links === undefined) return;
      const by: Record<string, number> = { up: 0, connecting: 0, down: 0, self: 0 };
      for (const l of links) if (l.state in by) by[l.state]!++;
      for (const [state, n] of Object.entries(by)) emit({ state }, n);
    });
    const perPeer: [kind: 'gauge' | 'counter', name: string, help: string, read: (l: MeshPeerMetrics) => number][] = [
      ['gauge', 'mesh_peer_up', 'Per mesh peer: 1 while its link is up.', (l) => (l.state === 'up' ? 1 : 0)],
      ['gauge', 'mesh_peer_keys', 'Per mesh peer: keys it reported connected to it.', (l) => l.keys],
      ['counter', 'mesh_peer_forwarded_packets_total', 'Per mesh peer: packets written to its link.', (l) => l.forwarded],
      ['counter', 'mesh_peer_forward_drops_total', 'Per mesh peer: packets for its keys dropped because the link was down or backlogged (forward_error).', (l) => l.forwardDrops],
      ['counter', 'mesh_peer_connects_total', 'Per mesh peer: times its link connected.', (l) => l.connects],
      ['counter', 'mesh_peer_refusals_total', 'Per mesh peer: times it closed our link after WatchConns (it refused our mesh key).', (l) => l.refusals],
    ];
    for (const [kind, name, help, read] of perPeer) {
      this[kind](name, help, ['peer'], (emit) => {
        for (const l of this.meshLinks?.() ?? []) emit({ peer: l.id }, read(l));
      });
    }
    // A name that stops resolving is warned about once per failure streak; this shows it is still failing.
    this.counter('mesh_lookups_total', 'Per --mesh-with entry that is a DNS name: lookups that answered (ok) and that failed (failed: resolver error, timeout, no address).', ['entry', 'result'], (emit) => {
      for (const t of this.meshTargets?.() ?? []) {
        if (t.kind !== 'dns') continue;
        emit({ entry: t.spec, result: 'ok' }, t.resolutions);
        emit({ entry: t.spec, result: 'failed' }, t.failures);
      }
    });

    if (init.defaultMetrics ?? true) collectDefaultMetrics({ register: reg });
  }

  /** Reads this relay's counters on every scrape and receives its duration measurements. */
  attachRelay(relay: RelayServer, opts: { observe?: boolean } = {}): void {
    this.relay = relay;
    // Without the observer (no /metrics listener) there are no histograms and no server pings: counters only.
    if (opts.observe ?? true) relay.setObserver(this);
  }

  attachStun(stun: StunServer): void {
    this.stunServer = stun;
  }

  /** Detaches from the relay (stops its server pings) and forgets the STUN server. */
  detach(): void {
    this.relay?.setObserver(null);
    this.relay = null;
    this.stunServer = null;
  }

  /** A configuration reload finished. */
  noteReload(result: ReloadResult): void {
    this.reloads.inc({ result });
    this.lastReload.set({ result }, Date.now() / 1000);
  }

  /** Reads the mesh links' state at every scrape. */
  attachMesh(links: () => readonly MeshPeerMetrics[]): void {
    this.meshLinks = links;
  }

  /** Reads the mesh discovery's per-entry lookup counts at every scrape. */
  attachMeshDiscovery(targets: () => readonly MeshTargetMetrics[]): void {
    this.meshTargets = targets;
  }

  /** Reads admission decisions (by source: allow/deny counts) at every scrape. */
  attachAdmission(decisions: () => Readonly<Record<string, { allow: number; deny: number }>>): void {
    this.admission = decisions;
  }

  /** A certificate source reported something (see CertEvent). */
  noteCertificateEvent(event: (typeof CERT_EVENTS)[number]): void {
    this.certEvents.inc({ event });
  }

  /** A repeated warning was counted rather than logged. */
  noteSuppressedLog(level: string): void {
    this.logsSuppressed.inc({ level });
  }

  /** The certificate now serving (its notAfter), or null for none (plain HTTP). */
  setCertificate(notAfter: Date | null, source: CertificateSource = 'manual'): void {
    this.cert = notAfter === null ? null : { notAfter, source };
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of every metric (what Registry.metrics() renders, a few metrics per turn). */
  async metrics(): Promise<string> {
    const parts = await this.scrape((name) => this.registry.getSingleMetricAsString(name));
    return `${parts.join('\n\n')}\n`;
  }

  /** The same scrape as JSON (prom-client's shape), for a parent that sums its workers' (AggregatorRegistry). */
  metricsJson(): Promise<MetricObjectWithValues<MetricValue<string>>[]> {
    return this.scrape(async (name) => {
      const m = this.registry.getSingleMetric(name);
      if (m === undefined) throw new Error(`metric ${name} vanished during the scrape`);
      return m.get();
    });
  }

  /**
   * Reads every metric, SCRAPE_METRICS_PER_TURN per event-loop turn, from one snapshot of the relay's
   * counters. Scrapes run one at a time: they share the snapshot and the collect-time resets.
   */
  private scrape<T>(read: (name: string) => Promise<T>): Promise<T[]> {
    const run = async (): Promise<T[]> => {
      this.snap = null;
      try {
        const out: T[] = [];
        const all = this.registry.getMetricsAsArray();
        for (let i = 0; i < all.length; i++) {
          if (i > 0 && i % SCRAPE_METRICS_PER_TURN === 0) await nextTurn();
          out.push(await read(all[i]!.name));
        }
        return out;
      } finally {
        this.snap = null;
      }
    };
    const p = this.scraping.then(run, run);
    this.scraping = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /** The scrape in progress (resolved when none): the next one starts after it. */
  private scraping: Promise<void> = Promise.resolve();

  /** The counters as they are now (for /debug/varz and tests). */
  snapshot(): MetricsSnapshot {
    return {
      relay: this.relay?.stats() ?? null,
      breakdown: this.relay?.connectionBreakdown() ?? null,
      stun: this.stunServer?.stats() ?? null,
      averageQueueDurationMs: this.queueEwmaMs,
    };
  }

  // ------------------------------------------------------------ RelayObserver

  handshake(result: HandshakeResult, seconds: number): void {
    this.handshakes.inc({ result });
    this.handshakeSeconds.observe({ result }, seconds);
  }

  rtt(seconds: number): void {
    this.rttSeconds.observe(seconds);
  }

  queueWait(seconds: number): void {
    this.queueWaitSeconds.observe(seconds);
    const ms = seconds * 1000;
    this.queueEwmaMs = this.queueEwmaMs === 0 ? ms : this.queueEwmaMs + QUEUE_EWMA_ALPHA * (ms - this.queueEwmaMs);
  }

  // ------------------------------------------------------------ helpers

  private take(): MetricsSnapshot {
    return (this.snap ??= this.snapshot());
  }

  private relayValue(emit: Emit, read: (s: RelayStats) => number): void {
    const s = this.take().relay;
    if (s !== null) emit({}, read(s));
  }

  /** A counter whose value is read from existing counters at scrape time. */
  private counter(name: string, help: string, labelNames: string[], read: (emit: Emit) => void): void {
    const c: Counter = new Counter({
      name: `${METRIC_PREFIX}${name}`,
      help,
      labelNames,
      registers: [this.registry],
      collect: () => {
        c.reset();
        read((labels, v) => c.inc(labels, v));
      },
    });
  }

  private gauge(name: string, help: string, labelNames: string[], read: (emit: Emit) => void): void {
    const g: Gauge = new Gauge({
      name: `${METRIC_PREFIX}${name}`,
      help,
      labelNames,
      registers: [this.registry],
      collect: () => {
        g.reset();
        read((labels, v) => g.set(labels, v));
      },
    });
  }
}
