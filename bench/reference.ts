/**
 * Tailscale's Go derper measured on the same kind of 2-core machine (the figures the issue quotes),
 * and the targets this project set itself. Printed beside our numbers for scale.
 */

/** Throughput scenarios: pairs × packet data bytes, with derper's delivered packets/s. */
/** Every K ∈ {1, 8, 64} × {1200 B, 64 B}; the Go derper was measured for four of them. */
export const THROUGHPUT_SCENARIOS: readonly { pairs: number; size: number; reference?: number; target?: number }[] = [
  { pairs: 1, size: 1200, reference: 93_000 },
  { pairs: 8, size: 1200, reference: 180_000, target: 350_000 },
  { pairs: 64, size: 1200, reference: 194_000 },
  { pairs: 1, size: 64 },
  { pairs: 8, size: 64, reference: 496_000, target: 500_000 },
  { pairs: 64, size: 64 },
];

/** The scenario rerun at half of its measured max rate for latency. */
export const HALF_LOAD = { pairs: 8, size: 1200 } as const;

export const REFERENCE = {
  halfLoadP99Ms: 3,
  idleBytesPerConn: { tcp: 35_000, ws: 52_000 } as Partial<Record<'tcp' | 'tls' | 'ws', number>>,
  handshakesPerSec: 4300,
};

export const TARGETS = {
  halfLoadP99Ms: 3,
  idleTcpBytesPerConn: 10 * 1024,
  handshakesPerSec: 4300,
};

/**
 * STUN Binding requests/s on loopback, measured on this kind of 2-core machine with an independent
 * generator (the figures): coturn (C), and a bare Node 24 dgram responder (hand-built answer,
 * no validation). Our target is for one process with full validation.
 */
export const STUN_REFERENCE = { coturnReqPerSec: 143_000, bareNodeReqPerSec: 54_000 };
export const STUN_TARGET_REQ_PER_SEC = 50_000;
/** Regions in the netcheck wall-time measurement (about a full Tailscale map). */
export const NETCHECK_REGIONS = 25;
