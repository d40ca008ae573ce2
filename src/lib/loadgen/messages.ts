/** IPC between an orchestrator (scenarios.ts, bench/) and its load-generator workers (worker.ts). */
import type { LoadTls, Transport } from './conn.js';

/** Packet payload layout (throughput and canary): send time (float64 ms, performance.now) then sequence number (uint32). */
export const TS_OFF = 0;
export const SEQ_OFF = 8;
export const MIN_PAYLOAD = 12;

export type WorkerCommand =
  | {
      cmd: 'throughput';
      url: string;
      /** Transport override for an http(s) URL ('ws': WebSocket); default from the URL scheme. */
      transport?: Transport;
      tls?: LoadTls;
      pairs: number;
      /** Packet data bytes per SendPacket. */
      size: number;
      /** Max un-received packets per pair. */
      window: number;
      /** Packets/s per pair; 0 = as fast as the window allows. */
      ratePerPair: number;
    }
  /** Start sending (throughput). */
  | { cmd: 'go' }
  /** Snapshot counters; the first mark also starts latency recording, the second stops it. */
  | { cmd: 'mark' }
  /** Snapshot counters without touching the recording (live progress; answered with a 'mark' event). */
  | { cmd: 'peek' }
  /** Stop sending, wait for in-flight packets, report and disconnect. */
  | { cmd: 'stop' }
  | { cmd: 'idle'; url: string; transport: Transport; tls?: LoadTls; count: number; concurrency: number }
  /** Close the idle connections. */
  | { cmd: 'close' }
  | { cmd: 'handshakes'; url: string; transport?: Transport; tls?: LoadTls; concurrency: number; durationMs: number; maxCount?: number }
  /**
   * STUN Binding load: `sockets` UDP sockets, each keeping `window` requests in flight (fresh transaction
   * IDs). Then 'go', 'mark' × 2 and 'stop' as for throughput ('done': gaps = requests given up as lost).
   */
  | { cmd: 'stun'; host: string; port: number; sockets: number; window: number }
  /** Flood scenario (flood-load.ts): a canary pair, `rate` packets/s each way, until 'canary-stop'. */
  | { cmd: 'canary'; url: string; rate: number; size: number }
  /** Canary counters and latency since the previous snapshot ('canary' event). */
  | { cmd: 'canary-snap' }
  /** Stop the canary, wait for in-flight packets, last snapshot, disconnect. */
  | { cmd: 'canary-stop' }
  /** One attack for `durationMs`; `count` = slowloris connections or absent keys. */
  | { cmd: 'attack'; kind: AttackKind; url: string; durationMs: number; count: number }
  | { cmd: 'exit' };

export type AttackKind = 'connect' | 'slowloris' | 'handshake' | 'blast' | 'absent' | 'probe';

export interface CanaryReport {
  ev: 'canary';
  sent: number;
  received: number;
  /** Sequence numbers skipped: packets the relay lost. */
  gaps: number;
  /** Final snapshot only: sent but neither received nor skipped after the drain. */
  undelivered: number;
  hist: [number, number][];
  errors: string[];
}

export interface AttackReport {
  ev: 'attack';
  kind: AttackKind;
  /** Connections, handshakes or packets done (by kind). */
  count: number;
  failed: number;
  elapsedMs: number;
  detail: string;
  firstError?: string;
}

export interface MarkReport {
  ev: 'mark';
  /** performance.now() in the worker, ms. */
  t: number;
  sent: number;
  received: number;
  /** user+system CPU of the worker so far, µs. */
  cpuUs: number;
}

export type WorkerEvent =
  | {
      ev: 'ready';
      opened: number;
      failed: number;
      firstError?: string;
      openFiles?: number;
      /** Throughput: each pair's client TCP ports [sender, receiver] (0 = unknown, e.g. WebSocket). */
      ports?: [number, number][];
    }
  | MarkReport
  | {
      ev: 'done';
      sent: number;
      received: number;
      /** Packets skipped in the sequence (never arrived before a later one did). */
      gaps: number;
      /** Times a pair made no progress for STALL_MS and had its window reset. */
      stalls: number;
      /** Sparse latency histogram: [bucket, count] pairs; bucket = floor(latency µs / HIST_BUCKET_US). */
      hist: [number, number][];
      /** Event-loop lag of this worker while recording, ms (monitorEventLoopDelay). */
      loopDelayP99Ms: number;
      loopDelayMaxMs: number;
      errors: string[];
    }
  | { ev: 'closed' }
  | { ev: 'handshakes'; count: number; failed: number; elapsedMs: number; cpuUs: number; firstError?: string }
  | CanaryReport
  /** The attack's preparation is done and its clock started. */
  | { ev: 'attack-started' }
  | AttackReport
  | { ev: 'error'; message: string };
