// DERPClient given the nodes of one region: it connects to the first that answers and, when its node
// dies, reconnects to the next one (derphttp's dialRegion), so a meshed region keeps its clients.
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { DERPClient } from '../../src/lib/client/index.js';
import { ConfigError } from '../../src/lib/errors.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/relay.js';
import { freePort } from '../faults/helpers.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function relay(): Promise<RelayServer> {
  const s = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0' });
  await s.start();
  cleanups.push(() => s.stop({ restarting: false, signal: AbortSignal.abort() }));
  return s;
}

function client(): DERPClient {
  const c = new DERPClient({ reconnect: { baseMs: 10, maxMs: 100 } });
  cleanups.push(() => c.disconnect());
  return c;
}

describe('DERPClient with several servers', () => {
  it('connects to the first server that answers', async () => {
    const dead = `http://127.0.0.1:${await freePort()}/derp`;
    const s = await relay();
    const c = client();
    const connected = once(c, 'connected');
    await c.connect([dead, s.url]);
    expect((await connected)[0].url).toBe(s.url);
    expect(s.stats().clients).toBe(1);
  });

  it('when its server dies it reconnects to the next one, and packets reach it there', async () => {
    const s1 = await relay();
    const s2 = await relay();
    const c = client();
    await c.connect([s1.url, s2.url]);
    const peer = client();
    await peer.connect(s2.url);
    const moved = once(c, 'connected');
    await s1.stop({ restarting: false, signal: AbortSignal.abort() });
    const [ev] = await moved;
    expect(ev).toMatchObject({ url: s2.url, reconnected: true });
    const got = c.receive()[Symbol.asyncIterator]().next();
    await peer.send(c.publicKey, Buffer.from('found you'));
    expect((await got).value?.data.toString()).toBe('found you');
    expect(c.stats.connects).toBe(2);
  });

  it('refuses an empty list', async () => {
    await expect(client().connect([])).rejects.toBeInstanceOf(ConfigError);
  });
});
