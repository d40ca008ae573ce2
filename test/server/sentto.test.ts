/**
 * Issue 7 §0: a long-lived sender talking to many peers that then leave must not make the relay keep
 * anything per departed peer (the PeerGone bookkeeping used to hold each closed connection).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import type { Frame } from '../../src/lib/protocol/index.js';
import { PeerGoneReason } from '../../src/lib/protocol/constants.js';
import type { RawClient } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const DESTINATIONS = 20_000;
const CONCURRENCY = 32;
const WARMUP = 2_000;

let fx: Fixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

describe('PeerGone bookkeeping under destination churn', () => {
  it('holds nothing for destinations that left, while the sender stays connected', async () => {
    fx = await startRelay();
    const f = fx;
    const sender = await f.connect();
    // Destinations wait for their PeerGone(Disconnected) at the sender: proof the relay handled the close.
    const gone = new Map<string, () => void>();
    sender.onFrame = (fr: Frame) => {
      if (fr.type === 'PeerGone' && fr.reason === PeerGoneReason.Disconnected) gone.get(fr.peer.toString('hex'))?.();
      return fr.type === 'PeerGone' || fr.type === 'RecvPacket';
    };

    const churnOne = async (): Promise<void> => {
      const dst: RawClient = await f.open();
      await dst.handshake();
      const hex = dst.publicKey.toString('hex');
      const left = new Promise<void>((resolve) => gone.set(hex, resolve));
      sender.sendPacket(dst.publicKey, Buffer.from('to you'));
      const got = await dst.nextOf('RecvPacket');
      expect(got.src.equals(sender.publicKey)).toBe(true);
      // A reply makes the destination a sender too, so its leaving is announced to `sender`.
      dst.sendPacket(sender.publicKey, Buffer.from('and back'));
      // Wait until the relay has routed the reply (a ping after it is answered in order).
      await dst.ping();
      dst.destroy();
      await left;
      gone.delete(hex);
    };
    const churn = async (n: number): Promise<void> => {
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < n) {
            next++;
            await churnOne();
          }
        }),
      );
      f.clients.length = 1; // the fixture need not keep the departed clients
    };

    await churn(WARMUP);
    expect(f.server.peerGoneEntries()).toBe(0);
    const before = heapAfterGc();
    await churn(DESTINATIONS - WARMUP);
    const after = heapAfterGc();

    expect(f.server.peerGoneEntries()).toBe(0);
    expect(f.server.stats().currentConnections).toBe(1);
    // 18,000 departed peers at the old ~3.6 KB each would be ~65 MB; allow well under a tenth of that.
    expect(after - before).toBeLessThan(4 * 1024 * 1024);
    // The sender is still served normally.
    await sender.ping();
  }, 300_000);
});
