/**
 * deferListen (what a --workers worker uses): the relay runs, its private mesh listener serves, but the
 * public port is bound only by listenPublic(); until then the kernel refuses connections to it.
 */
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../faults/helpers.js';
import { startRelay, type Fixture } from './fixture.js';
import { canaryWorks, tcp } from './helpers.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

describe('RelayServer deferListen', () => {
  it('serves the mesh listener at once and the public port only after listenPublic()', async () => {
    const port = await freePort();
    f = await startRelay({ addr: `127.0.0.1:${port}`, deferListen: true, meshListen: '127.0.0.1:0' });
    expect(f.server.port).toBe(port);
    expect(f.server.url).toBe(`http://127.0.0.1:${port}/derp`);
    expect(f.server.healthCheck()).toMatchObject({ ok: false, listening: false });
    await expect(tcp(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    // The sibling links' listener is up meanwhile.
    const sibling = await f.connect({ port: f.server.meshPort! });
    await f.server.listenPublic();
    expect(f.server.healthCheck()).toMatchObject({ ok: true, listening: true });
    const client = await f.connect();
    await canaryWorks(sibling, client, 'mesh listener ↔ public port');
    // Idempotent once bound.
    await f.server.listenPublic();
  });

  it('a public port taken meanwhile fails listenPublic() with the address, and stop() still works', async () => {
    const port = await freePort();
    f = await startRelay({ addr: `127.0.0.1:${port}`, deferListen: true });
    const squatter = net.createServer();
    await new Promise<void>((res, rej) => {
      squatter.once('error', rej);
      squatter.listen({ host: '127.0.0.1', port }, res);
    });
    await expect(f.server.listenPublic()).rejects.toMatchObject({ code: 'DERP_ERR_SERVER', message: expect.stringContaining(`cannot listen on 127.0.0.1:${port}`) });
    expect(f.server.healthCheck().listening).toBe(false);
    await new Promise<void>((res) => squatter.close(() => res()));
  });
});
