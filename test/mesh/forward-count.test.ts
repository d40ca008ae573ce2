/**
 * The forwarding counters balance: every packet a client sends is delivered, forwarded out, or dropped
 * with one reason — never two of those (packet accounting across a mesh relies on it).
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { NodePrivateKey, encode } from '../../src/lib/protocol/index.js';
import { RelayServer, type PacketForwarder } from '../../src/lib/server/index.js';
import { RawClient } from '../helpers/rawclient.js';
import { until } from '../server/helpers.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('forwarded packet counters', () => {
  it('a ForwardPacket write that fails is dropped as forward_error and not also counted as forwarded out', async () => {
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0' });
    await relay.start();
    cleanups.push(() => relay.stop({ restarting: false }));
    const remote = NodePrivateKey.generate().publicKey;
    let ok = true;
    let calls = 0;
    const link: PacketForwarder = {
      name: 'fake link',
      forwardPacket: () => {
        calls++;
        return ok;
      },
    };
    relay.addForwarder(remote, link);
    const c = await RawClient.connect({ port: relay.port });
    cleanups.push(() => c.close());
    c.sendPacket(remote, Buffer.from('written to the link'));
    await until(() => calls === 1, 'the first packet reached the forwarder');
    ok = false;
    c.sendPacket(remote, Buffer.from('the link refuses this one'));
    await until(() => calls === 2, 'the second packet reached the forwarder');
    const s = relay.stats();
    expect(s.packetsReceived).toBe(2);
    expect(s.packetsDropped.forward_error).toBe(1);
    expect(s.packetsForwardedOut).toBe(1);
    const dropped = Object.values(s.packetsDropped).reduce((a, b) => a + b, 0);
    expect(s.packetsReceived + s.packetsForwardedIn).toBe(s.packetsSent + s.packetsForwardedOut + dropped);
  });

  it('the same holds for a region ForwardPacket passed on to a sibling worker that refuses it', async () => {
    const meshKey = randomBytes(32);
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', meshKey });
    await relay.start();
    cleanups.push(() => relay.stop({ restarting: false }));
    const onSibling = NodePrivateKey.generate().publicKey;
    let calls = 0;
    const sibling: PacketForwarder = { name: 'fake sibling', sibling: true, forwardPacket: () => (calls++, false) };
    relay.addForwarder(onSibling, sibling);
    const peer = await RawClient.connect({ port: relay.port }, { version: 2, canAckPings: false, meshKey });
    cleanups.push(() => peer.close());
    peer.write(encode.forwardPacket(NodePrivateKey.generate().publicKey, onSibling, Buffer.from('refused by the sibling')));
    await until(() => calls === 1, 'the packet reached the sibling link');
    const s = relay.stats();
    expect(s.packetsForwardedIn).toBe(1);
    expect(s.packetsDropped.forward_error).toBe(1);
    expect(s.packetsForwardedOut).toBe(0);
    const dropped = Object.values(s.packetsDropped).reduce((a, b) => a + b, 0);
    expect(s.packetsReceived + s.packetsForwardedIn).toBe(s.packetsSent + s.packetsForwardedOut + dropped);
  });
});
