/**
 * The accounting equation. The relay's side comes from its counters (derp_packets_received_total,
 * derp_packets_sent_total, derp_packets_dropped_total{reason}), summed over its lives (a restart starts
 * them at zero); the clients' side from what they wrote and what arrived intact.
 *
 *   sent = delivered + Σ dropped(reason) + lost_before_relay + lost_after_relay
 *
 * lost_before_relay = sent − relay received: written by a client, never read by the relay (in the
 * kernel when the connection died, or the relay stopped reading at a restart). lost_after_relay =
 * relay sent − delivered: handed to the transport by the relay, never read by the client (its
 * connection died). Both are allowed only on connections that died, and bounded (see checkAccounting).
 */
import { DROP_REASONS, type DropReason } from '../../server/stats.js';

export interface RelayCounts {
  received: number;
  sent: number;
  dropped: Record<DropReason, number>;
}

export function zeroDrops(): Record<DropReason, number> {
  return Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
}

export function zeroCounts(): RelayCounts {
  return { received: 0, sent: 0, dropped: zeroDrops() };
}

export function addCounts(a: RelayCounts, b: RelayCounts): RelayCounts {
  const dropped = zeroDrops();
  for (const r of DROP_REASONS) dropped[r] = a.dropped[r] + b.dropped[r];
  return { received: a.received + b.received, sent: a.sent + b.sent, dropped };
}

export function totalDropped(c: RelayCounts): number {
  let n = 0;
  for (const r of DROP_REASONS) n += c.dropped[r];
  return n;
}

const SAMPLE = /^([a-z_]+)(?:\{([^}]*)\})?\s+(\S+)/;

/** The packet counters in a Prometheus text exposition (`derp serve`'s /metrics; any name prefix). */
export function parseMetricsCounts(text: string, prefix = 'derp_'): RelayCounts {
  const c = zeroCounts();
  for (const line of text.split('\n')) {
    const m = SAMPLE.exec(line);
    if (m === null || !m[1]!.startsWith(prefix)) continue;
    const name = m[1]!.slice(prefix.length);
    const v = Number(m[3]);
    if (name === 'packets_received_total') c.received += v;
    else if (name === 'packets_sent_total') c.sent += v;
    else if (name === 'packets_dropped_total') {
      const r = /reason="([a-z_]+)"/.exec(m[2] ?? '')?.[1];
      if (r !== undefined && r in c.dropped) c.dropped[r as DropReason] += v;
    }
  }
  return c;
}

/** The final counters in a relay's "relay stopped" log line (JSON), else null. */
export function parseStopLine(o: Record<string, unknown>): RelayCounts | null {
  if (o.msg !== 'relay stopped' || typeof o.packetsReceived !== 'number' || typeof o.packetsSent !== 'number') return null;
  const dropped = zeroDrops();
  for (const r of DROP_REASONS) {
    const v = o[`packetsDropped_${r}`];
    if (typeof v === 'number') dropped[r] = v;
  }
  return { received: o.packetsReceived, sent: o.packetsSent, dropped };
}

/** What the clients saw (per node: senders by their node, receivers by theirs). */
export interface ClientCounts {
  sent: number;
  delivered: number;
  misdelivered: number;
  corrupted: number;
  duplicated: number;
  reordered: number;
  /** Connections that closed without a confirmed goodbye (relay restart, a close by the relay). */
  diedLinks: number;
  /** Packets those connections wrote after the last Pong that confirmed the relay had read them. */
  unconfirmedOnDied: number;
  /** Died connections that ended in a reset (or that the harness destroyed), not a clean EOF. */
  resetLinks: number;
  /** Of those, connections reset after the relay had said Restarting: a graceful stop must end with FIN. */
  resetAfterRestarting: number;
  /** Upper bound on packets the relay handed to those reset connections' transports that they never read (kernel buffers). */
  inFlightBoundOnDied: number;
}

export function zeroClientCounts(): ClientCounts {
  return { sent: 0, delivered: 0, misdelivered: 0, corrupted: 0, duplicated: 0, reordered: 0, diedLinks: 0, unconfirmedOnDied: 0, resetLinks: 0, resetAfterRestarting: 0, inFlightBoundOnDied: 0 };
}

export interface NodeAccount {
  name: string;
  /** Lives of the relay process (1 + restarts). */
  lives: number;
  relay: RelayCounts;
  clients: ClientCounts;
  lostBeforeRelay: number;
  lostAfterRelay: number;
  problems: string[];
}

export function account(name: string, lives: number, relay: RelayCounts, clients: ClientCounts): NodeAccount {
  const lostBeforeRelay = clients.sent - relay.received;
  const lostAfterRelay = relay.sent - clients.delivered;
  const problems: string[] = [];
  const dropped = totalDropped(relay);
  if (relay.received !== relay.sent + dropped) {
    const by = DROP_REASONS.map((r) => `${r}=${relay.dropped[r]}`).join(' ');
    problems.push(`${name}: the relay read ${relay.received} packets but sent ${relay.sent} and dropped ${dropped} (${by}): ${relay.received - relay.sent - dropped} unaccounted`);
  }
  if (lostBeforeRelay < 0) problems.push(`${name}: the relay read ${-lostBeforeRelay} more packets than the clients wrote`);
  else if (lostBeforeRelay > clients.unconfirmedOnDied) {
    problems.push(`${name}: ${lostBeforeRelay} packets written but never read by the relay; only ${clients.unconfirmedOnDied} were unconfirmed on ${clients.diedLinks} connections that died`);
  }
  if (lostAfterRelay < 0) problems.push(`${name}: ${-lostAfterRelay} more packets arrived intact than the relay says it sent`);
  else if (lostAfterRelay > clients.inFlightBoundOnDied) {
    problems.push(`${name}: ${lostAfterRelay} packets sent by the relay never arrived; at most ${clients.inFlightBoundOnDied} could be in flight on ${clients.resetLinks} connections that were reset`);
  }
  if (clients.resetAfterRestarting !== 0) problems.push(`${name}: ${clients.resetAfterRestarting} connections were reset after Restarting instead of closed cleanly`);
  for (const k of ['misdelivered', 'corrupted', 'duplicated', 'reordered'] as const) if (clients[k] !== 0) problems.push(`${name}: ${clients[k]} packets ${k}`);
  return { name, lives, relay, clients, lostBeforeRelay, lostAfterRelay, problems };
}

export function sumClientCounts(a: ClientCounts, b: ClientCounts): ClientCounts {
  const o = zeroClientCounts();
  for (const k of Object.keys(o) as Array<keyof ClientCounts>) o[k] = a[k] + b[k];
  return o;
}

/** The table: one column per node and the total. */
export function renderAccounts(accounts: NodeAccount[]): string {
  const rows: Array<[string, (a: NodeAccount) => number | string]> = [
    ['relay lives', (a) => a.lives],
    ['sent (clients wrote)', (a) => a.clients.sent],
    ['delivered (intact, once, in order)', (a) => a.clients.delivered],
    ...DROP_REASONS.map((r): [string, (a: NodeAccount) => number] => [`dropped: ${r}`, (a) => a.relay.dropped[r]]),
    ['lost before relay (never read)', (a) => a.lostBeforeRelay],
    ['  bound: unconfirmed on died conns', (a) => a.clients.unconfirmedOnDied],
    ['lost after relay (never arrived)', (a) => a.lostAfterRelay],
    ['  bound: in flight on reset conns', (a) => a.clients.inFlightBoundOnDied],
    ['died connections', (a) => a.clients.diedLinks],
    ['  reset (not a clean EOF)', (a) => a.clients.resetLinks],
    ['  reset after Restarting', (a) => a.clients.resetAfterRestarting],
    ['relay: received', (a) => a.relay.received],
    ['relay: sent', (a) => a.relay.sent],
    ['misdelivered', (a) => a.clients.misdelivered],
    ['corrupted', (a) => a.clients.corrupted],
    ['duplicated', (a) => a.clients.duplicated],
    ['reordered', (a) => a.clients.reordered],
    ['equation', (a) => (a.problems.length === 0 ? 'holds' : 'FAILS')],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const cols = accounts.map((a) => Math.max(a.name.length, ...rows.map((r) => String(r[1](a)).length)));
  const line = (label: string, cells: string[]): string => `${label.padEnd(w0)}  ${cells.map((c, i) => c.padStart(cols[i]!)).join('  ')}`;
  const out = [line('', accounts.map((a) => a.name))];
  for (const [label, f] of rows) out.push(line(label, accounts.map((a) => String(f(a)))));
  return out.join('\n');
}
