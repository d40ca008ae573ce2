/**
 * What a connection costs the relay before its DERP handshake: one that ends without a byte is closed
 * at once, and TCP keepalive waits for a DERP start (a flood's connect+close pays neither).
 */
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { until } from './helpers.js';
import { startRelay, type Fixture } from './fixture.js';

let f: Fixture | null = null;
afterEach(async () => {
  vi.restoreAllMocks();
  await f?.close();
  f = null;
});

const KEEPALIVE_MS = 7_000;

/** The relay's calls to setKeepAlive, by the client port of the socket they were made on. */
function spyKeepAlive(): Map<number, unknown[][]> {
  const calls = new Map<number, unknown[][]>();
  const orig = net.Socket.prototype.setKeepAlive;
  vi.spyOn(net.Socket.prototype, 'setKeepAlive').mockImplementation(function (this: net.Socket, ...args: [boolean?, number?]) {
    const port = this.remotePort ?? -1;
    calls.set(port, [...(calls.get(port) ?? []), args]);
    return orig.apply(this, args);
  });
  return calls;
}

describe('before the DERP handshake', () => {
  it('closes a connection that ends without a byte at once, with a FIN (no reset), and uncounts it', async () => {
    f = await startRelay();
    const sock = net.connect({ host: '127.0.0.1', port: f.server.port, allowHalfOpen: true });
    await new Promise<void>((res) => sock.once('connect', () => res()));
    await until(() => f!.server.stats().openConnections === 1, 'the relay counts the connection');
    let ended = false;
    let error: Error | null = null;
    sock.on('end', () => (ended = true));
    sock.on('error', (err) => (error = err));
    const closed = new Promise<void>((res) => sock.once('close', () => res()));
    sock.resume();
    sock.end();
    await closed;
    expect(error).toBeNull();
    expect(ended).toBe(true);
    await until(() => f!.server.stats().openConnections === 0, 'the count released');
    expect(f.server.stats().httpErrors).toBe(0);
  });

  it('sets TCP keepalive on DERP connections (upgrade, fast start, WebSocket) and not on a connection that never gets there', async () => {
    const calls = spyKeepAlive();
    f = await startRelay({ tcpKeepAliveMs: KEEPALIVE_MS });
    const idle = net.connect({ host: '127.0.0.1', port: f.server.port });
    await new Promise<void>((res) => idle.once('connect', () => res()));
    const idlePort = idle.localPort!;
    await until(() => f!.server.stats().openConnections === 1, 'the bare connection counted');
    idle.destroy();
    await until(() => f!.server.stats().openConnections === 0, 'the bare connection gone');
    expect(calls.size).toBe(0);
    await f.connect();
    await f.connect({ fastStart: true });
    await f.connect({ transport: 'websocket' });
    expect(calls.has(idlePort)).toBe(false);
    // One call per DERP connection, each on its own socket.
    expect([...calls.values()]).toEqual([[[true, KEEPALIVE_MS]], [[true, KEEPALIVE_MS]], [[true, KEEPALIVE_MS]]]);
  });

  it('sets it on a DERP connection over TLS', async () => {
    const calls = spyKeepAlive();
    f = await startRelay({ tcpKeepAliveMs: KEEPALIVE_MS, withTls: true });
    await f.connect();
    expect([...calls.values()]).toEqual([[[true, KEEPALIVE_MS]]]);
  });

  it('sets none with tcpKeepAliveMs 0', async () => {
    const calls = spyKeepAlive();
    f = await startRelay({ tcpKeepAliveMs: 0 });
    await f.connect();
    await f.connect({ transport: 'websocket' });
    expect(calls.size).toBe(0);
  });
});
