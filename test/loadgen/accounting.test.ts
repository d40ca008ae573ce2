/**
 * Packet accounting against a real `derp serve` child process: mixed load (pairs, churn, slow readers,
 * a flooder, a duplicate key, a restart under load), then sent = delivered + Σ dropped(reason) + what
 * died in transit (bounded), and nothing misdelivered, corrupted, duplicated or reordered.
 */
import { afterAll, describe, expect, it } from 'vitest';
import {
  ServeNode,
  account,
  parseMetricsCounts,
  parseStopLine,
  readPayload,
  renderAccounts,
  runAccounting,
  totalDropped,
  writePayload,
  zeroCounts,
  type AccountingReport,
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
  });

  it('flags a packet the relay read but neither sent nor dropped, and losses on connections that did not die', () => {
    const relay = { ...zeroCounts(), received: 10, sent: 8, dropped: { ...zeroCounts().dropped, unknown_dest: 1 } };
    const clients = { sent: 10, delivered: 8, misdelivered: 0, corrupted: 0, duplicated: 0, reordered: 0, diedLinks: 0, unconfirmedOnDied: 0, resetLinks: 0, resetAfterRestarting: 0, inFlightBoundOnDied: 0 };
    expect(account('n', 1, relay, clients).problems.join('\n')).toMatch(/1 unaccounted/);
    const lost = account('n', 1, { ...relay, received: 9 }, clients);
    expect(lost.lostBeforeRelay).toBe(1);
    expect(lost.problems.join('\n')).toMatch(/only 0 were unconfirmed/);
    expect(account('n', 1, { ...relay, received: 9 }, { ...clients, diedLinks: 1, unconfirmedOnDied: 1 }).problems).toEqual([]);
  });
});

describe('accounting against derp serve', () => {
  let node: ServeNode | null = null;
  afterAll(async () => {
    await node?.stop().catch(() => node?.kill());
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
});
