/** Connections the relay closes or answers on the upgrade path all leave a count (found by the live fuzzer). */
import { afterEach, describe, expect, it } from 'vitest';
import { tcp, until } from './helpers.js';
import { startRelay, type Fixture } from './fixture.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

const WS_HEAD = 'GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: derp\r\n';

describe('counted closes', () => {
  it('counts a malformed WebSocket frame as a protocol error', async () => {
    f = await startRelay();
    const { sock, closed } = await tcp(f.server.port);
    sock.write(`${WS_HEAD}Sec-WebSocket-Version: 13\r\n\r\n`);
    await until(() => f!.server.stats().websocketAccepts === 1, 'the WebSocket upgrade');
    // An unmasked client frame: RFC 6455 §5.1 says the server must fail the connection.
    sock.write(Buffer.from([0x82, 0x03, 1, 2, 3]));
    await closed;
    await until(() => f!.server.stats().handshakeFailures + f!.server.stats().protocolErrors === 1, 'a counted reason');
  });

  it('counts a WebSocket upgrade ws refuses as an HTTP error, answered 400', async () => {
    f = await startRelay();
    const { sock, closed } = await tcp(f.server.port);
    let answer = '';
    sock.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    sock.write(`${WS_HEAD}Sec-WebSocket-Version: 7\r\n\r\n`);
    await closed;
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(f.server.stats().httpErrors).toBe(1);
  });

  it('counts upgrade requests answered 404 or 426 as HTTP requests', async () => {
    f = await startRelay();
    for (const head of ['GET /robots.txt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n', 'GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: xERP\r\n\r\n']) {
      const { sock, closed } = await tcp(f.server.port);
      sock.write(head);
      await closed;
    }
    expect(f.server.stats().httpRequests).toBe(2);
  });
});
