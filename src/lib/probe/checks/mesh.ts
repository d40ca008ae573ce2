/**
 * `mesh`: from a client on node A to a client on node B of the same region (derpprobe's mesh probe,
 * prober/derp.go: fresh keys for both ends, unless --key-file gives them). A delivers B's packet only
 * if it is meshed with B; until B's presence reaches A a packet may be dropped, so it is resent
 * every MESH_RESEND_MS until one arrives or MESH_DELIVERY_TIMEOUT_MS passes.
 */
import { randomBytes } from 'node:crypto';
import type { DERPServer } from '../../derpmap/types.js';
import { MESH_DELIVERY_TIMEOUT_MS, MESH_RESEND_MS } from '../constants.js';
import { Inbox, bad, openPair, relaySkip, round, type CheckContext, type CheckOutcome } from '../context.js';

export async function mesh(ctx: CheckContext, peer: DERPServer): Promise<CheckOutcome> {
  const node = ctx.target.node;
  const skip = relaySkip(node) ?? relaySkip(peer);
  if (skip) return skip;
  const pair = await openPair(ctx, node, peer);
  if (!Array.isArray(pair)) return pair;
  const [a, b] = pair;
  let notHere = 0;
  a.on('peerGone', (e) => {
    if (e.peer === b.publicText() && e.reasonText === 'not-here') notHere++;
  });
  const inbox = new Inbox(b, ctx.signal);
  const payload = randomBytes(8);
  const budget = Math.min(MESH_DELIVERY_TIMEOUT_MS, Math.floor(ctx.budgetMs * 0.8));
  const start = performance.now();
  let sent = 0;
  for (;;) {
    const left = budget - (performance.now() - start);
    if (left <= 0) break;
    const t0 = performance.now();
    await a.send(b.publicKey, payload, ctx.signal);
    sent++;
    const got = await inbox.next((p) => p.srcText === a.publicText() && p.data.equals(payload), Math.min(MESH_RESEND_MS, left));
    if (got) {
      const ms = round(performance.now() - t0);
      return { status: 'good', value: ms, unit: 'ms', message: `packet ${node.id} → ${peer.id} delivered`, details: { sent, notHere } };
    }
  }
  const hint = notHere > 0 ? `${node.id} answered PeerGone(not here) ${notHere}×: it does not know ${peer.id}'s clients (not meshed?)` : 'no answer';
  return bad(`packet from a client on ${node.id} to a client on ${peer.id} not delivered within ${budget} ms (${sent} sent; ${hint})`, { sent, notHere });
}
