/** Counters the relay keeps, named after derper's expvars (spec §12.5). */

/**
 * Why a packet was not delivered (derpserver.go: dropReason*). `forward_error` is ours: derper ignores a
 * failed ForwardPacket write; we count the packet (mesh link down, or its send buffer over its bound).
 */
export const DROP_REASONS = ['unknown_dest', 'unknown_dest_on_fwd', 'queue_head', 'queue_tail', 'gone_disconnected', 'write_error', 'dup_client', 'forward_error'] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/** Why a connection was closed early by a DDoS limit or a ban (limits.ts). */
export const REFUSE_REASONS = ['accept_rate', 'per_ip', 'total', 'pending_handshakes', 'banned'] as const;
export type RefuseReason = (typeof REFUSE_REASONS)[number];

export interface RelayStats {
  /** DERP connections accepted (upgrades), before the handshake. */
  accepts: number;
  /** Registered (handshaken) connections right now. */
  currentConnections: number;
  /** Connections that said NotePreferred(1). */
  currentHomeConnections: number;
  /** Connections still in the handshake. */
  pendingHandshakes: number;
  /** Distinct keys registered. */
  clients: number;
  dupClientKeys: number;
  dupClientConns: number;
  dupClientConnsTotal: number;
  packetsReceived: number;
  bytesReceived: number;
  packetsReceivedDisco: number;
  packetsReceivedOther: number;
  /** Packets handed to the destination's transport (counted at the flush; a batch that never gets there is dropped). */
  packetsSent: number;
  bytesSent: number;
  packetsDropped: Record<DropReason, number>;
  bytesDropped: Record<DropReason, number>;
  packetsDroppedDisco: number;
  packetsDroppedOther: number;
  /** The disco share of packetsDropped / bytesDropped per reason (other = total − disco). */
  packetsDroppedDiscoBy: Record<DropReason, number>;
  bytesDroppedDiscoBy: Record<DropReason, number>;
  gotPing: number;
  sentPong: number;
  peerGoneDisconnectedFrames: number;
  peerGoneNotHereFrames: number;
  homeMovesIn: number;
  homeMovesOut: number;
  keepAlivesSent: number;
  /** Pings the relay sent to measure client RTT, and the Pongs that matched one. */
  serverPingsSent: number;
  serverPongsReceived: number;
  websocketAccepts: number;
  handshakeFailures: number;
  /** Connections closed because a write stayed blocked longer than the write timeout. */
  writeTimeouts: number;
  /** Connections the kernel gave up on (ETIMEDOUT: keepalive or retransmissions unanswered, a half-open peer). */
  deadPeers: number;
  /** Frames of unknown type skipped. */
  unknownFrames: number;
  /** Connections closed for a protocol violation after the handshake. */
  protocolErrors: number;
  /** HTTP requests answered (non-upgrade) and HTTP parse errors. */
  httpRequests: number;
  httpErrors: number;
  /** DERP connections whose client address came from X-Forwarded-For (a trusted proxy's peer). */
  forwardedConnections: number;
  /** X-Forwarded-For values from trusted proxies that were unusable (the proxy's address was kept). */
  forwardedForMalformed: number;
  /** Connections closed early by a limit or a ban, by reason (before any HTTP or DERP is read, or right after the head). */
  connectionsRefused: Record<RefuseReason, number>;
  /** TCP connections open right now (what limits.maxConns counts). */
  openConnections: number;
  /** Admission decisions (RelayServerInit.admit): admitted, refused, and pending right now. */
  admissionAllowed: number;
  admissionRefused: number;
  admissionPending: number;
  /** Handshakes closed at the ClientInfo (or admission) deadline; a subset of handshakeFailures. */
  handshakeTimeouts: number;
  /** Times a rate-limited client had to wait for tokens (derper: rate_limit_per_client_waited). */
  rateLimitWaits: number;
  /** Times the listener was closed for the accept rate, and for how long in all (ms): the kernel refused new connections meanwhile. */
  acceptPauses: number;
  acceptPausedMs: number;
  /** Times the listener got its full backlog back after accept-rate pauses had shortened it. */
  acceptBacklogRestores: number;
  /** ClientInfo frames (with the crypto thread, their answers) that waited for a later event-loop turn (more than HANDSHAKES_PER_TURN in one). */
  handshakesDeferred: number;
  /** Of those, the ones that waited because ClientInfo work had used its share of the time (limits.handshakeShare) while clients were relaying. */
  handshakeShareWaits: number;
  /** ClientInfo frames opened on the handshake crypto thread (RelayServerInit.cryptoThread). */
  handshakesOnThread: number;
  /** Times the handshake crypto thread failed or exited on its own (its work then runs inline). */
  handshakeThreadFailures: number;
  /** New connections whose first read waited for a later event-loop turn (more than FIRST_READS_PER_TURN arrived in one). */
  firstReadsDeferred: number;
  /** TLS ClientHellos that waited for a later event-loop turn (more than TLS_HANDSHAKES_PER_TURN arrived in one). */
  tlsHandshakesDeferred: number;
  /** TLS connections closed for sending no byte of a ClientHello before the handshake deadline (within httpErrors). */
  tlsHelloTimeouts: number;
  /** Times a connection stopped reading until the next turn after READ_YIELD_BYTES (one heavy sender does not hold the event loop). */
  readYields: number;
  /** Connections being held back by their token bucket right now. */
  rateLimitedConnections: number;
  /** Mesh (spec §10): packets written to a mesh link for a key held by another node, and received from one. */
  packetsForwardedOut: number;
  packetsForwardedIn: number;
  /** Mesh connections watching this node's clients (WatchConns) right now. */
  watchers: number;
  /** Keys reachable only through a mesh link right now (derper: clients_remote); filled in by RelayServer.stats(). */
  clientsRemote: number;
  /** Keys known from more than one mesh link (derper: multiforwarder_created / _deleted). */
  multiForwarderCreated: number;
  multiForwarderDeleted: number;
  /** ClientInfo carried a mesh key that is not ours (the connection is treated as a plain client). */
  meshKeyMismatches: number;
  /** Privileged frames (WatchConns, ForwardPacket, ClosePeer) from a client without the mesh key (closed). */
  meshPermissionDenied: number;
  /** ClosePeer frames acted on, and the connections they closed. */
  closePeerFrames: number;
  closePeerConns: number;
}

function byRefuse(): Record<RefuseReason, number> {
  return { accept_rate: 0, per_ip: 0, total: 0, pending_handshakes: 0, banned: 0 };
}

function byReason(): Record<DropReason, number> {
  return { unknown_dest: 0, unknown_dest_on_fwd: 0, queue_head: 0, queue_tail: 0, gone_disconnected: 0, write_error: 0, dup_client: 0, forward_error: 0 };
}

export function newStats(): RelayStats {
  return {
    accepts: 0,
    currentConnections: 0,
    currentHomeConnections: 0,
    pendingHandshakes: 0,
    clients: 0,
    dupClientKeys: 0,
    dupClientConns: 0,
    dupClientConnsTotal: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    packetsReceivedDisco: 0,
    packetsReceivedOther: 0,
    packetsSent: 0,
    bytesSent: 0,
    packetsDropped: byReason(),
    bytesDropped: byReason(),
    packetsDroppedDisco: 0,
    packetsDroppedOther: 0,
    packetsDroppedDiscoBy: byReason(),
    bytesDroppedDiscoBy: byReason(),
    gotPing: 0,
    sentPong: 0,
    peerGoneDisconnectedFrames: 0,
    peerGoneNotHereFrames: 0,
    homeMovesIn: 0,
    homeMovesOut: 0,
    keepAlivesSent: 0,
    serverPingsSent: 0,
    serverPongsReceived: 0,
    websocketAccepts: 0,
    handshakeFailures: 0,
    writeTimeouts: 0,
    deadPeers: 0,
    unknownFrames: 0,
    protocolErrors: 0,
    httpRequests: 0,
    httpErrors: 0,
    forwardedConnections: 0,
    forwardedForMalformed: 0,
    connectionsRefused: byRefuse(),
    openConnections: 0,
    admissionAllowed: 0,
    admissionRefused: 0,
    admissionPending: 0,
    handshakeTimeouts: 0,
    rateLimitWaits: 0,
    acceptPauses: 0,
    acceptPausedMs: 0,
    acceptBacklogRestores: 0,
    handshakesDeferred: 0,
    handshakeShareWaits: 0,
    handshakesOnThread: 0,
    handshakeThreadFailures: 0,
    firstReadsDeferred: 0,
    tlsHandshakesDeferred: 0,
    tlsHelloTimeouts: 0,
    readYields: 0,
    rateLimitedConnections: 0,
    packetsForwardedOut: 0,
    packetsForwardedIn: 0,
    watchers: 0,
    clientsRemote: 0,
    multiForwarderCreated: 0,
    multiForwarderDeleted: 0,
    meshKeyMismatches: 0,
    meshPermissionDenied: 0,
    closePeerFrames: 0,
    closePeerConns: 0,
  };
}

/** A deep copy, so callers can diff snapshots. */
export function snapshotStats(s: RelayStats): RelayStats {
  return {
    ...s,
    packetsDropped: { ...s.packetsDropped },
    bytesDropped: { ...s.bytesDropped },
    packetsDroppedDiscoBy: { ...s.packetsDroppedDiscoBy },
    bytesDroppedDiscoBy: { ...s.bytesDroppedDiscoBy },
    connectionsRefused: { ...s.connectionsRefused },
  };
}
