/**
 * The accounting equation. The relay's side comes from its counters (derp_packets_received_total,
 * derp_packets_sent_total, derp_packets_forwarded_total{direction}, derp_packets_dropped_total{reason}),
 * summed over its lives (a restart starts them at zero); the clients' side from what they wrote and what
 * arrived intact.
 *
 * Inside one relay life, every packet it read — a client's SendPacket (received) or a mesh peer's
 * ForwardPacket (forwarded in) — left exactly once: written to a local client (sent), written to a mesh
 * link (forwarded out), or dropped with one reason (a forwarded-in packet is never forwarded again):
 *
 *   received + forwarded_in = sent + forwarded_out + Σ dropped(reason)          (per life, exact)
 *
 * Per node X, with its clients' counts (senders by the node they write to, receivers by theirs):
 *
 *   lost_before_relay(X) = clients' sent to X − received at X: written, never read by X (in a socket
 *     when the connection died, or after a stopping X stopped reading). ≤ what was unconfirmed by a
 *     Pong on connections that died.
 *   lost_after_relay(X) = sent at X − delivered to X's clients: handed to a transport, never read (the
 *     connection was reset). ≤ what the kernel buffers of reset connections hold.
 *
 * Across the nodes, forwarded out at X is forwarded in at Y except on a mesh link that died:
 *
 *   lost_on_mesh = Σ forwarded_out − Σ forwarded_in   (0 when no link died; else ≤ their in-flight bound)
 *
 * and summing the per-life identities over every node gives the region's equation:
 *
 *   sent = delivered + Σ dropped(all nodes, all reasons) + Σ lost_before_relay + Σ lost_after_relay
 *          + lost_on_mesh + held_by_killed
 *
 * A SIGKILLed life never reports its final counters; the harness scrapes it just before the kill, so
 * its counts stop there. held_by_killed = that scrape's received + forwarded_in − sent − forwarded_out
 * − dropped (read, not yet written or dropped: queued for slow readers, in a batch), ≥ 0. What the life
 * did after the scrape is then charged to its connections' terms, with the bounds widened to match:
 * a connection to it counts as confirmed only what a Pong confirmed before the scrape, lost after relay
 * may go below 0 by what its clients received after the scrape, and lost_on_mesh may go above the
 * links' bound by what the other nodes forwarded towards it after the scrape (their per-peer counters)
 * and below 0 by what it may have forwarded after the scrape (it forwards only what its clients wrote).
 */
import { DROP_REASONS, type DropReason } from '../../server/stats.js';

export interface RelayCounts {
  received: number;
  sent: number;
  /** Written to a mesh link (out) and read from one (in). */
  forwardedOut: number;
  forwardedIn: number;
  dropped: Record<DropReason, number>;
}

export function zeroDrops(): Record<DropReason, number> {
  return Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
}

export function zeroCounts(): RelayCounts {
  return { received: 0, sent: 0, forwardedOut: 0, forwardedIn: 0, dropped: zeroDrops() };
}

export function addCounts(a: RelayCounts, b: RelayCounts): RelayCounts {
  const dropped = zeroDrops();
  for (const r of DROP_REASONS) dropped[r] = a.dropped[r] + b.dropped[r];
  return { received: a.received + b.received, sent: a.sent + b.sent, forwardedOut: a.forwardedOut + b.forwardedOut, forwardedIn: a.forwardedIn + b.forwardedIn, dropped };
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
    else if (name === 'packets_forwarded_total') {
      const d = /direction="([a-z]+)"/.exec(m[2] ?? '')?.[1];
      if (d === 'out') c.forwardedOut += v;
      else if (d === 'in') c.forwardedIn += v;
    }
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
  const fwd = (k: string): number => (typeof o[k] === 'number' ? (o[k] as number) : 0);
  return { received: o.packetsReceived, sent: o.packetsSent, forwardedOut: fwd('packetsForwardedOut'), forwardedIn: fwd('packetsForwardedIn'), dropped };
}

/** Per mesh peer (by its endpoint id, `<address>:<port>`): whether the link is up and what was written to it. */
export interface MeshPeerCounts {
  up: boolean;
  forwarded: number;
  /** Keys the peer reported connected to it. */
  keys: number;
}

/** derp_mesh_peer_up, derp_mesh_peer_keys and derp_mesh_peer_forwarded_packets_total from /metrics text. */
export function parseMeshPeers(text: string, prefix = 'derp_'): Map<string, MeshPeerCounts> {
  const out = new Map<string, MeshPeerCounts>();
  for (const line of text.split('\n')) {
    const m = SAMPLE.exec(line);
    if (m === null || !m[1]!.startsWith(prefix)) continue;
    const name = m[1]!.slice(prefix.length);
    if (name !== 'mesh_peer_up' && name !== 'mesh_peer_forwarded_packets_total' && name !== 'mesh_peer_keys') continue;
    const peer = /peer="([^"]*)"/.exec(m[2] ?? '')?.[1];
    if (peer === undefined) continue;
    const p = out.get(peer) ?? { up: false, forwarded: 0, keys: 0 };
    if (name === 'mesh_peer_up') p.up = Number(m[3]) === 1;
    else if (name === 'mesh_peer_keys') p.keys = Number(m[3]);
    else p.forwarded = Number(m[3]);
    out.set(peer, p);
  }
  return out;
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
  /** Of unconfirmedOnDied, on connections to a SIGKILLed life (counted from the Pong before its last scrape). */
  unconfirmedOnKilled: number;
  /** Packets that arrived on connections to a SIGKILLed life after its last scrape (it may have sent them after). */
  deliveredAfterKilledScrape: number;
}

export function zeroClientCounts(): ClientCounts {
  return { sent: 0, delivered: 0, misdelivered: 0, corrupted: 0, duplicated: 0, reordered: 0, diedLinks: 0, unconfirmedOnDied: 0, resetLinks: 0, resetAfterRestarting: 0, inFlightBoundOnDied: 0, unconfirmedOnKilled: 0, deliveredAfterKilledScrape: 0 };
}

export interface NodeAccount {
  name: string;
  /** Lives of the relay process (1 + restarts + kills). */
  lives: number;
  /** Of those, lives ended by SIGKILL (their counters are from a scrape just before). */
  killedLives: number;
  relay: RelayCounts;
  clients: ClientCounts;
  lostBeforeRelay: number;
  lostAfterRelay: number;
  /** Read by a SIGKILLed life and not yet written or dropped at its last scrape (≥ 0). */
  heldByKilled: number;
  problems: string[];
}

/** The per-node checks. `heldByKilled`: Σ over the node's SIGKILLed lives of their last scrape's residual. */
export function account(name: string, lives: number, relay: RelayCounts, clients: ClientCounts, killed: { lives: number; held: number } = { lives: 0, held: 0 }): NodeAccount {
  const lostBeforeRelay = clients.sent - relay.received;
  const lostAfterRelay = relay.sent - clients.delivered;
  const problems: string[] = [];
  const dropped = totalDropped(relay);
  const into = relay.received + relay.forwardedIn;
  const outOf = relay.sent + relay.forwardedOut + dropped;
  if (killed.held < 0) problems.push(`${name}: a killed life's last scrape shows ${-killed.held} more packets out than in`);
  if (into !== outOf + killed.held) {
    const by = DROP_REASONS.map((r) => `${r}=${relay.dropped[r]}`).join(' ');
    const fwd = relay.forwardedIn + relay.forwardedOut > 0 ? ` (forwarded in ${relay.forwardedIn}, out ${relay.forwardedOut})` : '';
    const held = killed.held !== 0 ? `, ${killed.held} held by killed lives` : '';
    problems.push(`${name}: the relay read ${into} packets${fwd} but sent ${relay.sent}, forwarded ${relay.forwardedOut} and dropped ${dropped} (${by})${held}: ${into - outOf - killed.held} unaccounted`);
  }
  if (lostBeforeRelay < 0) problems.push(`${name}: the relay read ${-lostBeforeRelay} more packets than the clients wrote`);
  else if (lostBeforeRelay > clients.unconfirmedOnDied) {
    problems.push(`${name}: ${lostBeforeRelay} packets written but never read by the relay; only ${clients.unconfirmedOnDied} were unconfirmed on ${clients.diedLinks} connections that died`);
  }
  if (lostAfterRelay < -clients.deliveredAfterKilledScrape) {
    const after = clients.deliveredAfterKilledScrape > 0 ? ` (${clients.deliveredAfterKilledScrape} of them may have been sent by a killed life after its last scrape)` : '';
    problems.push(`${name}: ${-lostAfterRelay} more packets arrived intact than the relay says it sent${after}`);
  } else if (lostAfterRelay > clients.inFlightBoundOnDied) {
    problems.push(`${name}: ${lostAfterRelay} packets sent by the relay never arrived; at most ${clients.inFlightBoundOnDied} could be in flight on ${clients.resetLinks} connections that were reset`);
  }
  if (clients.resetAfterRestarting !== 0) problems.push(`${name}: ${clients.resetAfterRestarting} connections were reset after Restarting instead of closed cleanly`);
  for (const k of ['misdelivered', 'corrupted', 'duplicated', 'reordered'] as const) if (clients[k] !== 0) problems.push(`${name}: ${clients[k]} packets ${k}`);
  return { name, lives, killedLives: killed.lives, relay, clients, lostBeforeRelay, lostAfterRelay, heldByKilled: killed.held, problems };
}

/** What the mesh links did, for the region's account. */
export interface MeshCounts {
  /** Mesh links that died (both directions of every pair with a node that stopped or was killed). */
  diedLinks: number;
  /** Upper bound on ForwardPackets one dying link can hold unread (send buffer + kernel buffers). */
  inFlightPerLink: number;
  /** Written by the other nodes to links towards a killed life after its last scrape (it may have read them). */
  forwardedTowardKilledAfterScrape: number;
}

export interface RegionAccount extends NodeAccount {
  /** Σ forwarded out − Σ forwarded in. */
  lostOnMesh: number;
  mesh: MeshCounts;
}

/**
 * The region: every node's terms summed, and the forward balance. The per-node checks are not repeated
 * (the sums of bounded terms are bounded); what is new is lost_on_mesh.
 */
export function regionAccount(nodes: NodeAccount[], mesh: MeshCounts): RegionAccount {
  const relay = nodes.reduce((a, n) => addCounts(a, n.relay), zeroCounts());
  const clients = nodes.reduce((a, n) => sumClientCounts(a, n.clients), zeroClientCounts());
  const sum = (f: (n: NodeAccount) => number): number => nodes.reduce((a, n) => a + f(n), 0);
  const lostOnMesh = relay.forwardedOut - relay.forwardedIn;
  const heldByKilled = sum((n) => n.heldByKilled);
  const problems: string[] = [];
  const upper = mesh.diedLinks * mesh.inFlightPerLink + mesh.forwardedTowardKilledAfterScrape;
  // A killed life forwards only what its clients wrote (never a forwarded packet): after its scrape, at most their unconfirmed plus what it held.
  const lower = -(clients.unconfirmedOnKilled + heldByKilled);
  if (mesh.diedLinks === 0 && lostOnMesh !== 0) problems.push(`region: ${relay.forwardedOut} packets forwarded out but ${relay.forwardedIn} forwarded in, and no mesh link died`);
  else if (lostOnMesh > upper) {
    problems.push(`region: ${lostOnMesh} forwarded packets never read by the peer; at most ${upper} could be in flight on ${mesh.diedLinks} mesh links that died (${mesh.forwardedTowardKilledAfterScrape} written towards a killed node after its last scrape)`);
  } else if (lostOnMesh < lower) problems.push(`region: ${-lostOnMesh} more packets forwarded in than out (a killed node may account for ${-lower})`);
  const base: NodeAccount = {
    name: 'total',
    lives: sum((n) => n.lives),
    killedLives: sum((n) => n.killedLives),
    relay,
    clients,
    lostBeforeRelay: sum((n) => n.lostBeforeRelay),
    lostAfterRelay: sum((n) => n.lostAfterRelay),
    heldByKilled,
    problems,
  };
  return { ...base, lostOnMesh, mesh };
}

export function sumClientCounts(a: ClientCounts, b: ClientCounts): ClientCounts {
  const o = zeroClientCounts();
  for (const k of Object.keys(o) as Array<keyof ClientCounts>) o[k] = a[k] + b[k];
  return o;
}

/** The table: one column per node and, for several nodes, the region's total. */
export function renderAccounts(accounts: Array<NodeAccount | RegionAccount>): string {
  const meshOn = accounts.some((a) => a.relay.forwardedOut + a.relay.forwardedIn > 0 || 'lostOnMesh' in a);
  const killedOn = accounts.some((a) => a.killedLives > 0);
  const region = (f: (r: RegionAccount) => number) => (a: NodeAccount): number | string => ('lostOnMesh' in a ? f(a as RegionAccount) : '');
  const rows: Array<[string, (a: NodeAccount) => number | string]> = [
    ['relay lives', (a) => a.lives],
    ...(killedOn ? [['  of them SIGKILLed', (a: NodeAccount) => a.killedLives] as [string, (a: NodeAccount) => number]] : []),
    ['sent (clients wrote)', (a) => a.clients.sent],
    ['delivered (intact, once, in order)', (a) => a.clients.delivered],
    ...DROP_REASONS.map((r): [string, (a: NodeAccount) => number] => [`dropped: ${r}`, (a) => a.relay.dropped[r]]),
    ['lost before relay (never read)', (a) => a.lostBeforeRelay],
    ['  bound: unconfirmed on died conns', (a) => a.clients.unconfirmedOnDied],
    ['lost after relay (never arrived)', (a) => a.lostAfterRelay],
    ['  bound: in flight on reset conns', (a) => a.clients.inFlightBoundOnDied],
  ];
  if (meshOn) {
    rows.push(
      ['lost on mesh links (fwd out − in)', region((r) => r.lostOnMesh)],
      ['  mesh links that died', region((r) => r.mesh.diedLinks)],
      ['  fwd towards killed after scrape', region((r) => r.mesh.forwardedTowardKilledAfterScrape)],
    );
  }
  if (killedOn) {
    rows.push(
      ['held by killed life at last scrape', (a) => a.heldByKilled],
      ['  delivered after killed scrape', (a) => a.clients.deliveredAfterKilledScrape],
    );
  }
  rows.push(
    ['died connections', (a) => a.clients.diedLinks],
    ['  reset (not a clean EOF)', (a) => a.clients.resetLinks],
    ['  reset after Restarting', (a) => a.clients.resetAfterRestarting],
    ['relay: received', (a) => a.relay.received],
    ['relay: sent', (a) => a.relay.sent],
    ...(meshOn
      ? [
          ['relay: forwarded out', (a: NodeAccount) => a.relay.forwardedOut] as [string, (a: NodeAccount) => number],
          ['relay: forwarded in', (a: NodeAccount) => a.relay.forwardedIn] as [string, (a: NodeAccount) => number],
        ]
      : []),
    ['misdelivered', (a) => a.clients.misdelivered],
    ['corrupted', (a) => a.clients.corrupted],
    ['duplicated', (a) => a.clients.duplicated],
    ['reordered', (a) => a.clients.reordered],
    ['equation', (a) => (a.problems.length === 0 ? 'holds' : 'FAILS')],
  );
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const cols = accounts.map((a) => Math.max(a.name.length, ...rows.map((r) => String(r[1](a)).length)));
  const line = (label: string, cells: string[]): string => `${label.padEnd(w0)}  ${cells.map((c, i) => c.padStart(cols[i]!)).join('  ')}`;
  const out = [line('', accounts.map((a) => a.name))];
  for (const [label, f] of rows) out.push(line(label, accounts.map((a) => String(f(a)))));
  return out.join('\n');
}
