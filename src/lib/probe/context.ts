/** What a check gets from the runner, and the DERP-client plumbing the client-based checks share. */
import { DERPClient, type ReceivedPacket } from '../client/client.js';
import type { TransportKind } from '../client/transport.js';
import type { DERPServer } from '../derpmap/types.js';
import { DerpError, HandshakeError, describeError } from '../errors.js';
import type { NodePrivateKey } from '../protocol/keys.js';
import type { CheckName, CheckResult, ProbeRegion, ProbeTarget, ProbeTransport } from './types.js';

/** ProbeOptions with every default applied. */
export interface ResolvedProbeOptions {
  checks: CheckName[];
  transports: ProbeTransport[];
  packets: number;
  bandwidthBytes: number | undefined;
  warnDays: number;
  failDays: number;
  /** Key of the first client of every check (the one that connects / sends). Absent = a fresh one each time. */
  privateKey: NodePrivateKey | undefined;
  /** Key of the second client (the receiver of packet, mesh, bandwidth). Absent = a fresh one each time. */
  peerPrivateKey: NodePrivateKey | undefined;
  tls: { ca?: string | Buffer; caFile?: string; insecure: boolean };
  /** Port CanPort80 nodes answer plain HTTP on. */
  port80: number;
  now: () => number;
}

export interface CheckContext {
  target: ProbeTarget;
  region: ProbeRegion;
  /** Aborts at the check's timeout or the run's end; every wait of the check follows it. */
  signal: AbortSignal;
  /** The check's timeout. */
  budgetMs: number;
  opts: ResolvedProbeOptions;
  /** Closes `fn`'s resource when the check ends, however it ends. */
  defer(fn: () => Promise<void> | void): void;
}

/** What a check returns; the runner adds the name, the peer and the duration. */
export type CheckOutcome = Omit<CheckResult, 'check' | 'durationMs' | 'peer'>;

export type Check = (ctx: CheckContext) => Promise<CheckOutcome>;

export function skipped(message: string): CheckOutcome {
  return { status: 'skipped', message };
}

export function bad(message: string, details?: CheckOutcome['details']): CheckOutcome {
  return { status: 'bad', message, ...(details ? { details } : {}) };
}

/** A STUN-only node has nothing for the DERP-side checks to talk to. */
export function relaySkip(node: DERPServer): CheckOutcome | undefined {
  return node.canRelay ? undefined : skipped('STUN-only node (no DERP relay)');
}

export const transportKind = (t: ProbeTransport): TransportKind => (t === 'upgrade' ? 'derp' : 'websocket');

export function round(ms: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(ms * f) / f;
}

/** Why connecting a probe client failed, in words that name the node and, when refused, the key. */
export function connectFailure(node: DERPServer, client: DERPClient, err: unknown): string {
  if (err instanceof HandshakeError && /closed the connection/.test(err.message)) {
    return `${node.id}: the relay closed the connection before ServerInfo: it refused the probe's key ${client.publicText()} (admission)`;
  }
  return `${node.id}: ${describeError(err)}`;
}

/** Connects a probe client (no reconnects; closed when the check ends). Throws ProbeConnectError with a specific message. */
export async function openClient(
  ctx: CheckContext,
  node: DERPServer,
  key: NodePrivateKey | undefined,
  transport: ProbeTransport = 'upgrade',
): Promise<DERPClient> {
  const { tls } = ctx.opts;
  const client = new DERPClient({
    ...(key ? { privateKey: key } : {}),
    transport: transportKind(transport),
    tls: { ...(tls.ca !== undefined ? { ca: tls.ca } : {}), ...(tls.caFile !== undefined ? { caFile: tls.caFile } : {}), insecure: tls.insecure },
    reconnect: false,
    isProber: true,
    connectTimeoutMs: ctx.budgetMs,
  });
  ctx.defer(() => client.disconnect());
  try {
    await client.connect(node, ctx.signal);
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    throw new ProbeConnectError(connectFailure(node, client, err), err);
  }
  return client;
}

/**
 * The sender (the probe's key) on `from` and the receiver (the peer key) on `to`, for the checks that move
 * packets; a connect failure becomes the check's bad outcome.
 */
export async function openPair(ctx: CheckContext, from: DERPServer, to: DERPServer = from): Promise<[DERPClient, DERPClient] | CheckOutcome> {
  try {
    return [await openClient(ctx, from, ctx.opts.privateKey), await openClient(ctx, to, ctx.opts.peerPrivateKey)];
  } catch (err) {
    if (err instanceof ProbeConnectError) return bad(err.message);
    throw err;
  }
}

/** A probe client could not connect; the message is ready for CheckResult.message. */
export class ProbeConnectError extends DerpError {
  constructor(message: string, cause: unknown) {
    super('DERP_ERR_CONNECT', message, { cause });
  }
}

/**
 * Reads a client's packets into a buffer so a check can wait for the one it wants (with a bound)
 * without losing the others. Stops when the check's signal aborts or the client disconnects.
 */
export class Inbox {
  private readonly buf: ReceivedPacket[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  /** Why reading stopped early, if it did. */
  failure: unknown;

  constructor(client: DERPClient, signal: AbortSignal, onPacket?: (p: ReceivedPacket) => boolean) {
    void (async () => {
      try {
        for await (const p of client.receive(signal)) {
          if (onPacket?.(p)) continue;
          this.buf.push(p);
          this.waiter?.();
        }
      } catch (err) {
        // Aborted or disconnected: waits end at once; the check reports what it did not receive.
        this.failure = err;
      } finally {
        this.ended = true;
        this.waiter?.();
      }
    })();
  }

  /** The first buffered or arriving packet `match` accepts, or undefined after `timeoutMs` (or the end). */
  async next(match: (p: ReceivedPacket) => boolean, timeoutMs: number): Promise<ReceivedPacket | undefined> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const i = this.buf.findIndex(match);
      if (i >= 0) return this.buf.splice(i, 1)[0];
      const left = deadline - performance.now();
      if (left <= 0 || this.ended) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, left);
        function done(): void {
          clearTimeout(t);
          resolve();
        }
        this.waiter = done;
      });
      this.waiter = undefined;
    }
  }
}
