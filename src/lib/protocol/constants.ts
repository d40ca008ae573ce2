/**
 * The DERP wire protocol in one place: frame types, sizes, magic and timing. Values are Tailscale's
 * (derp/derp.go, derp/derpserver/derpserver.go at the commit named in shared/spec/derp-protocol.md).
 */

/** Protocol version spoken by current servers and clients (v2 adds the source key to RecvPacket). */
export const PROTOCOL_VERSION = 2;

/** "DERP🔑": the first 8 bytes of the ServerKey payload. */
export const MAGIC = Buffer.from([0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91]);

export const KEY_LEN = 32;
export const NONCE_LEN = 24;
/** NaCl box overhead (Poly1305 tag). */
export const BOX_OVERHEAD = 16;
/** type(1) + length(4). */
export const FRAME_HEADER_LEN = 5;

/** Max packet data in Send/Recv/Forward (derp.go: MaxPacketSize = 64<<10). */
export const MAX_PACKET_SIZE = 64 << 10;
/** Server: ClientInfo payload bounds (derpserver.go: recvClientKey). */
export const MIN_CLIENT_INFO_LEN = KEY_LEN + NONCE_LEN;
export const MAX_CLIENT_INFO_LEN = 256 << 10;
/** Server: Ping payload bounds; only the first 8 bytes are echoed (derpserver.go: handleFramePing). */
export const PING_LEN = 8;
export const MAX_PING_LEN = 1000;
/** Client: any frame larger than this means the connection is dead (derp_client.go: recvTimeout). */
export const MAX_CLIENT_FRAME_LEN = 1 << 20;
/** Client: ServerKey payload bounds (derp_client.go: recvServerKey). */
export const MIN_SERVER_KEY_LEN = MAGIC.length + KEY_LEN;
export const MAX_SERVER_KEY_LEN = 1024;
/** Client: ServerInfo payload upper bound (derp.go: MaxInfoLen). */
export const MAX_INFO_LEN = 1 << 20;
/** PeerPresent payload from current servers: key(32) + ip(16) + port(2) + flags(1). */
export const PEER_PRESENT_LEN = KEY_LEN + 16 + 2 + 1;

export const FrameType = {
  ServerKey: 0x01,
  ClientInfo: 0x02,
  ServerInfo: 0x03,
  SendPacket: 0x04,
  RecvPacket: 0x05,
  KeepAlive: 0x06,
  NotePreferred: 0x07,
  PeerGone: 0x08,
  PeerPresent: 0x09,
  ForwardPacket: 0x0a,
  WatchConns: 0x10,
  ClosePeer: 0x11,
  Ping: 0x12,
  Pong: 0x13,
  Health: 0x14,
  Restarting: 0x15,
} as const;
export type FrameTypeName = keyof typeof FrameType;
export type FrameTypeValue = (typeof FrameType)[FrameTypeName];

const KNOWN_TYPES = new Set<number>(Object.values(FrameType));
export function isKnownFrameType(t: number): boolean {
  return KNOWN_TYPES.has(t);
}
export function frameTypeName(t: number): string {
  for (const [name, v] of Object.entries(FrameType)) if (v === t) return name;
  return `Unknown(0x${t.toString(16).padStart(2, '0')})`;
}

export const PeerGoneReason = {
  /** The peer left the region (its last connection closed). */
  Disconnected: 0x00,
  /** The server has no such peer (reply to a packet for an absent key). */
  NotHere: 0x01,
  /** Invented locally by the Go mesh client when a mesh link breaks; never on the wire. */
  MeshConnBroke: 0xf0,
} as const;
export type PeerGoneReasonValue = number;

export const PeerPresentFlags = {
  IsRegular: 0x01,
  IsMeshPeer: 0x02,
  IsProber: 0x04,
  NotIdeal: 0x08,
} as const;

/** Server keepalive period; each connection adds a fixed jitter in [0, KEEPALIVE_JITTER_MS). */
export const KEEPALIVE_INTERVAL_MS = 60_000;
export const KEEPALIVE_JITTER_MS = 5_000;
/** Clients consider a connection dead after 2× KeepAlive without any frame (derp_client.go: Recv). */
export const CLIENT_READ_TIMEOUT_MS = 2 * KEEPALIVE_INTERVAL_MS;
/** Server: deadline for sending ServerKey and for receiving ClientInfo (derpserver.go: accept). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Client: whole connect budget, DNS+TCP+TLS+HTTP+DERP (derphttp_client.go: connect). */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Client: how long Ping waits for its Pong (derphttp_client.go: Ping). */
export const PING_TIMEOUT_MS = 5_000;
/** Server per-client send queue depth, per kind (disco / other) (derpserver.go: defaultPerClientSendQueueDepth). */
export const PER_CLIENT_SEND_QUEUE_DEPTH = 32;
/** Server write deadline: 2 s for clients, 30 s for mesh peers (derpserver.go: setWriteDeadline). */
export const WRITE_TIMEOUT_MS = 2_000;
export const MESH_WRITE_TIMEOUT_MS = 30_000;
/** Reconnect backoff: min(n² × 10 ms, 5 s) × U[0.5, 1.5) (util/backoff). */
export const BACKOFF_BASE_MS = 10;
export const BACKOFF_MAX_MS = 5_000;
/** NotHere replies: 1 token/s, burst 3, per sender connection (derpserver.go: requestPeerGoneWriteLimited). */
export const PEER_GONE_NOT_HERE_RATE_PER_SEC = 1;
export const PEER_GONE_NOT_HERE_BURST = 3;

/** HTTP header names used around the upgrade. */
export const Headers = {
  FastStart: 'derp-fast-start',
  Version: 'Derp-Version',
  PublicKey: 'Derp-Public-Key',
  IdealNode: 'ideal-node',
  Challenge: 'x-tailscale-challenge',
  ChallengeResponse: 'X-Tailscale-Response',
} as const;

/** WebSocket subprotocol for DERP. */
export const WS_SUBPROTOCOL = 'derp';
/** Deployed reference servers close WebSocket messages above this size with 1009, so clients stay under it. */
export const WS_MAX_CLIENT_MESSAGE = 32 << 10;
