/**
 * The relay's hooks for policy that lives outside it: admission (who may connect, spec §11), abuse
 * events (what the abuse detectors count) and bans. The relay calls them; it never implements policy.
 */

/** What the relay knows about a client when it asks whether to admit it (after ClientInfo, before ServerInfo). */
export interface AdmitRequest {
  key: Buffer;
  /** "nodekey:<hex>". */
  keyText: string;
  /** The client's IP (from X-Forwarded-For when the TCP peer is a trusted proxy); no port. */
  remoteAddress: string;
  /** Authenticated with the mesh key (spec §10.1). */
  mesh: boolean;
}

export interface AdmitDecision {
  allow: boolean;
  /** Which source decided (e.g. "deny-list", "verify-client-url"): logged and counted by the caller. */
  source: string;
  reason: string;
}

/**
 * Decides admission. A synchronous answer takes no extra turn; while a promise is pending the client's
 * reading is paused. A rejected promise refuses the client (fail closed).
 */
export type AdmitFn = (req: AdmitRequest) => AdmitDecision | Promise<AdmitDecision>;

/** Events the abuse detectors count (issue 7 §4): never per packet, except a sender's new destination. */
export type AbuseEvent = 'fanout' | 'absent_peer' | 'handshake_failure' | 'protocol_violation' | 'admission_refused';

export interface AbuseWho {
  /** The client's IP, no port. */
  ip: string;
  /** Its key once ClientInfo was opened, else null. */
  key: Buffer | null;
}

export type AbuseHook = (event: AbuseEvent, who: AbuseWho) => void;

/** True when the IP (at accept) or the key (at admission, with its IP) is banned. Must be O(1). */
export type BanCheck = (ip: string, key: Buffer | null) => boolean;

/**
 * A mesh link that reaches keys held by another node of the region (spec §10.3). The relay hands it a
 * packet for a key it learned from that link; the link writes ForwardPacket on its own connection.
 */
export interface PacketForwarder {
  /** For logs and /debug: the peer node it reaches. */
  readonly name: string;
  /**
   * Writes ForwardPacket(src, dst, data) where `buf[dstOff, dstOff + 32)` is dst and the `len` bytes after
   * it are the data (a SendPacket payload as it arrived). False = not written (link down or over its bound).
   */
  forwardPacket(src: Buffer, buf: Buffer, dstOff: number, len: number): boolean;
  /**
   * A link to another worker of this host (`--workers`): keys learned from it are reported on to the
   * region's watchers, and a ForwardPacket from the region for such a key takes this one extra hop.
   */
  readonly sibling?: boolean;
}
