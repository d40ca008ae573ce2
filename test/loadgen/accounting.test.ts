/**
 * Packet accounting against real `derp serve` child processes: mixed load (pairs, churn, slow readers,
 * a flooder, a duplicate key, a restart under load), then sent = delivered + Σ dropped(reason) + what
 * died in transit (bounded), and nothing misdelivered, corrupted, duplicated or reordered — on one
 * node, and on three meshed nodes where most pairs cross a mesh hop and one node is SIGKILLed mid-stream.
 */
import { afterAll, describe, expect, it } from 'vitest';
import {
  ServeNode,
  account,
  parseMeshPeers,
  parseMetricsCounts,
  parseStopLine,
  readPayload,
  regionAccount,
  renderAccounts,
  runAccounting,
  totalDropped,
  writePayload,
  zeroClientCounts,
  zeroCounts,
  type AccountingReport,
  type ServeRegion,
} from '../../src/lib/loadgen/accounting/index.js';
import { DROP_REASONS } from '../../src/lib/server/index.js';
import { NODE, ROOT, RUN } from '../helpers/cli.js';

describe('accounting payload', () => {
  it('round-trips its fields and rejects any changed byte', () => {
    const b = Buffer.alloc(100);
    writePayload(b, 10, 80, { stream: 7, src: 3, dst: 9, seq: 123_456 });
    expect(readPayload(b, 10, 80)).toEqual({ stream: 7, src: 3, dst: 9, seq: 123_456 });
    for (const i of [10, 14, 30, 60, 89]) {
      const c = Buffer.from(b);
      c[i]! ^= 0x40;
      expect(readPayload(c, 10, 80), `byte ${i}`).toBeNull();
    }
    expect(readPayload(b, 10, 79)).toBeNull();
  });
});

describe('accounting counts', () => {
  it('reads the packet counters from /metrics text and from the relay stopped line', () => {
    const text = [
      'derp_packets_received_total{kind="disco"} 2',
      'derp_packets_received_total{kind="other"} 10',
      'derp_packets_sent_total 7',
      'derp_packets_dropped_total{reason="unknown_dest",kind="other"} 3',
      'derp_packets_dropped_total{reason="queue_head",kind="disco"} 1',
      'derp_packets_dropped_total{reason="queue_head",kind="other"} 1',
      'derp_bytes_dropped_total{reason="queue_head",kind="other"} 999',
    ].join('\n');
    const c = parseMetricsCounts(text);
    expect(c.received).toBe(12);
    expect(c.sent).toBe(7);
    expect(c.dropped.unknown_dest).toBe(3);
    expect(c.dropped.queue_head).toBe(2);
    expect(totalDropped(c)).toBe(5);
    expect(parseStopLine({ msg: 'relay stopped', packetsReceived: 4, packetsSent: 3, packetsDropped_dup_client: 1 })).toEqual({ ...zeroCounts(), received: 4, sent: 3, dropped: { ...zeroCounts().dropped, dup_client: 1 } });
    expect(parseStopLine({ msg: 'listening' })).toBeNull();
    expect(parseStopLine({ msg: 'relay stopped', packetsReceived: 4, packetsSent: 3, packetsForwardedOut: 2, packetsForwardedIn: 5 })).toMatchObject({ forwardedOut: 2, forwardedIn: 5 });
  });

  it('reads the forwarded counters and the per-peer mesh link counters', () => {
    const text = [
      'derp_packets_forwarded_total{direction="out"} 11',
      'derp_packets_forwarded_total{direction="in"} 7',
      'derp_mesh_peer_up{peer="127.0.0.1:4001"} 1',
      'derp_mesh_peer_up{peer="127.0.0.1:4002"} 0',
      'derp_mesh_peer_keys{peer="127.0.0.1:4001"} 5',
      'derp_mesh_peer_forwarded_packets_total{peer="127.0.0.1:4001"} 9',
      'derp_mesh_peer_forwarded_packets_total{peer="127.0.0.1:4002"} 2',
    ].join('\n');
    expect(parseMetricsCounts(text)).toMatchObject({ forwardedOut: 11, forwardedIn: 7 });
    const p = parseMeshPeers(text);
    expect(p.get('127.0.0.1:4001')).toEqual({ up: true, keys: 5, forwarded: 9 });
    expect(p.get('127.0.0.1:4002')).toEqual({ up: false, keys: 0, forwarded: 2 });
  });

  it('balances forwarded packets per node and across the region', () => {
    const relay = { ...zeroCounts(), received: 10, sent: 4, forwardedOut: 5, forwardedIn: 3, dropped: { ...zeroCounts().dropped, unknown_dest_on_fwd: 4 } };
    const clients = { ...zeroClientCounts(), sent: 10, delivered: 4 };
    expect(account('n', 1, relay, clients).problems).toEqual([]);
    // A forwarded packet also counted as dropped (the forward_error double count) is caught.
    expect(account('n', 1, { ...relay, dropped: { ...relay.dropped, forward_error: 1 } }, clients).problems.join('\n')).toMatch(/-1 unaccounted/);
    const a = account('a', 1, relay, clients);
    const b = account('b', 1, { ...relay, forwardedOut: 3, forwardedIn: 5 }, clients);
    expect(regionAccount([a, b], { diedLinks: 0, inFlightPerLink: 100, forwardedTowardKilledAfterScrape: 0 }).problems).toEqual([]);
    const b2 = account('b', 1, { ...relay, forwardedOut: 3, forwardedIn: 4, dropped: { ...relay.dropped, unknown_dest_on_fwd: 3 } }, clients);
    const lost = regionAccount([a, b2], { diedLinks: 0, inFlightPerLink: 100, forwardedTowardKilledAfterScrape: 0 });
    expect(lost.lostOnMesh).toBe(1);
    expect(lost.problems.join('\n')).toMatch(/no mesh link died/);
    // The same loss is allowed once a link died, up to its bound.
    expect(regionAccount([a, b2], { diedLinks: 2, inFlightPerLink: 100, forwardedTowardKilledAfterScrape: 0 }).problems).toEqual([]);
    expect(regionAccount([a, b2], { diedLinks: 1, inFlightPerLink: 0, forwardedTowardKilledAfterScrape: 0 }).problems.join('\n')).toMatch(/at most 0 could be in flight/);
    // A killed life: its scrape held 2 packets, and its clients received 3 after the scrape.
    const k = account('k', 2, { ...relay, sent: 2, dropped: { ...relay.dropped, unknown_dest_on_fwd: 4 } }, { ...clients, delivered: 5, deliveredAfterKilledScrape: 3 }, { lives: 1, held: 2 });
    expect(k.problems).toEqual([]);
    expect(k.lostAfterRelay).toBe(-3);
  });

  it('flags a packet the relay read but neither sent nor dropped, and losses on connections that did not die', () => {
    const relay = { ...zeroCounts(), received: 10, sent: 8, dropped: { ...zeroCounts().dropped, unknown_dest: 1 } };
    const clients = { ...zeroClientCounts(), sent: 10, delivered: 8 };
    expect(account('n', 1, relay, clients).problems.join('\n')).toMatch(/1 unaccounted/);
    const lost = account('n', 1, { ...relay, received: 9 }, clients);
    expect(lost.lostBeforeRelay).toBe(1);
    expect(lost.problems.join('\n')).toMatch(/only 0 were unconfirmed/);
    expect(account('n', 1, { ...relay, received: 9 }, { ...clients, diedLinks: 1, unconfirmedOnDied: 1 }).problems).toEqual([]);
  });
});

describe('accounting against derp serve', () => {
  let node: ServeNode | null = null;
  let region: ServeRegion | null = null;
  afterAll(async () => {
    await node?.stop().catch(() => node?.kill());
    await region?.stop();
  });

  it('accounts for every packet under mixed load with a restart', async () => {
    node = await ServeNode.start({ name: 'node-1', node: NODE, entry: RUN, cwd: ROOT });
    const r: AccountingReport = await runAccounting({ nodes: [node], durationMs: 5_000, restarts: 1 });
    const t = r.perNode[0]!;
    const table = `${renderAccounts([t])}\n${r.problems.join('\n')}\n${r.samples.join('\n')}`;
    expect(r.problems, table).toEqual([]);
    expect(r.ok).toBe(true);
    // The equation, term by term.
    const dropped = DROP_REASONS.reduce((a, k) => a + t.relay.dropped[k], 0);
    expect(t.clients.sent, table).toBe(t.clients.delivered + dropped + t.lostBeforeRelay + t.lostAfterRelay);
    expect(t.relay.received, table).toBe(t.relay.sent + dropped);
    expect(t.lostBeforeRelay, table).toBeLessThanOrEqual(t.clients.unconfirmedOnDied);
    expect([t.clients.misdelivered, t.clients.corrupted, t.clients.duplicated, t.clients.reordered, t.clients.resetAfterRestarting]).toEqual([0, 0, 0, 0, 0]);
    // The scenario did what it says: a restart, churn and an absent key, slow readers overflowing.
    expect(t.lives).toBe(2);
    expect(t.clients.diedLinks, table).toBeGreaterThan(0);
    expect(t.relay.dropped.unknown_dest, table).toBeGreaterThan(0);
    expect(t.relay.dropped.queue_head, table).toBeGreaterThan(0);
    expect(t.clients.delivered, table).toBeGreaterThan(0);
  }, 60_000);

  it('accounts for every packet across three meshed nodes, with a SIGTERM restart and a SIGKILL mid-stream', async () => {
    region = await ServeNode.startRegion(3, { node: NODE, entry: RUN, cwd: ROOT });
    const r: AccountingReport = await runAccounting({ nodes: region.nodes, durationMs: 4_000, restarts: 1, kills: 1, rate: 2000 });
    const t = r.total;
    const table = `${renderAccounts([...r.perNode, t])}\n${r.problems.join('\n')}\n${r.samples.join('\n')}`;
    expect(r.problems, table).toEqual([]);
    // The region's equation, term by term.
    const dropped = DROP_REASONS.reduce((a, k) => a + t.relay.dropped[k], 0);
    expect(t.clients.sent, table).toBe(t.clients.delivered + dropped + t.lostBeforeRelay + t.lostAfterRelay + t.lostOnMesh + t.heldByKilled);
    expect(t.relay.received + t.relay.forwardedIn, table).toBe(t.relay.sent + t.relay.forwardedOut + dropped + t.heldByKilled);
    expect(t.lostBeforeRelay, table).toBeLessThanOrEqual(t.clients.unconfirmedOnDied);
    expect(t.lostOnMesh, table).toBeLessThanOrEqual(t.mesh.diedLinks * t.mesh.inFlightPerLink + t.mesh.forwardedTowardKilledAfterScrape);
    expect([t.clients.misdelivered, t.clients.corrupted, t.clients.duplicated, t.clients.reordered, t.clients.resetAfterRestarting]).toEqual([0, 0, 0, 0, 0]);
    // Node 1 was restarted (SIGTERM), node 2 killed (SIGKILL) and started again; packets crossed the mesh.
    expect(r.perNode.map((n) => [n.lives, n.killedLives]), table).toEqual([
      [2, 0],
      [2, 1],
      [1, 0],
    ]);
    expect(t.relay.forwardedOut, table).toBeGreaterThan(0);
    expect(t.mesh.diedLinks).toBe(8);
    // While node 2 was gone, the others kept relaying; half its clients moved to node 3 and were reachable
    // there, the other half came back to its new life and received again.
    expect(r.kills).toHaveLength(1);
    const k = r.kills[0]!;
    expect(k.deliveredElsewhere, table).toBeGreaterThan(0);
    expect(k.movedPeers, table).toBeGreaterThan(0);
    expect(k.deliveredToMoved, JSON.stringify(k)).toBeGreaterThan(0);
    expect(k.deliveredAfterRevive, JSON.stringify(k)).toBeGreaterThan(0);
  }, 90_000);
});
