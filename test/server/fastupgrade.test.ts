import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAST_HEAD_MAX_BYTES, parseDerpUpgradeHead } from '../../src/lib/server/fasthead.js';
import { dial } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';

const GO_HEAD = 'GET /derp HTTP/1.1\r\nHost: derp.example.com\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n';

function head(text: string): ReturnType<typeof parseDerpUpgradeHead> {
  const b = Buffer.from(text, 'latin1');
  return parseDerpUpgradeHead(b, b.length);
}

function withHeaders(...headers: string[]): string {
  return `GET /derp HTTP/1.1\r\nHost: x\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;
}

describe('fast DERP upgrade recogniser', () => {
  it('takes the plain DERP upgrade, fast start, legacy websocket and a query string', () => {
    expect(head(GO_HEAD)).toEqual({ fastStart: false, end: GO_HEAD.length });
    expect(head(withHeaders('Connection: keep-alive, Upgrade', 'Upgrade: derp', 'Derp-Fast-Start: 1'))).toMatchObject({ fastStart: true });
    expect(head(withHeaders('Connection: upgrade', 'Upgrade: WebSocket'))).toMatchObject({ fastStart: false });
    expect(head(GO_HEAD.replace('/derp', '/derp?x=1'))).not.toBeNull();
    // derper looks only at Upgrade, so do we (Node's parser alone would answer these with 426).
    expect(head(withHeaders('Upgrade: DERP'))).toMatchObject({ fastStart: false });
    expect(head(withHeaders('Connection: close', 'Upgrade: DERP'))).toMatchObject({ fastStart: false });
    // Pipelined bytes after the blank line start at `end`.
    const piped = Buffer.concat([Buffer.from(GO_HEAD, 'latin1'), Buffer.from([1, 2, 3])]);
    expect(parseDerpUpgradeHead(piped, piped.length)!.end).toBe(GO_HEAD.length);
  });

  it('leaves everything else to Node', () => {
    const cases = [
      GO_HEAD.slice(0, -2), // incomplete head
      GO_HEAD.replace('GET', 'POST'),
      GO_HEAD.replace('HTTP/1.1', 'HTTP/1.0'),
      GO_HEAD.replace('/derp', '/derp/probe'),
      GO_HEAD.replace(/\r\n/g, '\n'), // bare LF
      withHeaders('Connection: Upgrade', 'Upgrade: h2c'),
      withHeaders('Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Protocol: derp'),
      withHeaders('Connection: Upgrade', 'Upgrade: DERP', 'Upgrade: DERP'),
      withHeaders('Connection: Upgrade', 'Upgrade: DERP', 'Content-Length: 0'),
      withHeaders('Connection: Upgrade', 'Upgrade: DERP', 'Transfer-Encoding: chunked'),
      withHeaders('Connection: Upgrade', 'Upgrade: DERP', 'Derp-Fast-Start: 1 '), // trailing whitespace
      withHeaders('Connection: Upgrade', 'Upgrade: DERP', 'Bad Name: x'),
      withHeaders('Connection: Upgrade', 'Upgrade: DERP', 'X: caf\u00e9'),
      withHeaders('Connection: Upgrade', 'Upgrade: DERP', `X-Pad: ${'a'.repeat(FAST_HEAD_MAX_BYTES)}`),
    ];
    for (const c of cases) expect(head(c), JSON.stringify(c.slice(0, 120))).toBeNull();
  });
});

describe('fast DERP upgrade on the relay', () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startRelay({ handshakeTimeoutMs: 300 });
  });
  afterAll(async () => {
    await f.close();
  });

  it('an upgrade the recogniser declines is still served by Node (POST /derp upgrades, as before)', async () => {
    const s = await dial(f.server.port);
    const first = new Promise<Buffer>((resolve) => s.once('data', resolve));
    s.write(GO_HEAD.replace('GET', 'POST'));
    expect((await first).toString('latin1')).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\nUpgrade: DERP\r\n/);
    s.destroy();
  });

  it('a head split across reads still upgrades', async () => {
    const s = await dial(f.server.port);
    const first = new Promise<Buffer>((resolve) => s.once('data', resolve));
    s.write(GO_HEAD.slice(0, 20));
    // The second half goes out only after the server has surely taken the first read on its own.
    await new Promise<void>((resolve) => setImmediate(resolve));
    s.write(GO_HEAD.slice(20));
    expect((await first).toString('latin1')).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    s.destroy();
  });

  it('a connection that never sends a request is closed at the deadline with a logged reason', async () => {
    const s = await dial(f.server.port);
    s.on('error', () => undefined);
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    await new Promise<void>((resolve) => s.once('close', () => resolve()));
    expect(Buffer.concat(chunks).toString('latin1')).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    const e = await f.logger.waitFor((x) => x.msg === 'closing connection' && String(x.fields.reason).includes('ERR_HTTP_REQUEST_TIMEOUT'));
    expect(e.fields.remote).toMatch(/^127\.0\.0\.1:\d+$/);
  });
});

describe('stop() with a connection that has sent nothing', () => {
  it('closes it instead of waiting for it', async () => {
    const g = await startRelay();
    const s = await dial(g.server.port);
    s.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.resume();
    // Such a socket is in none of the HTTP server's lists: unless stop() closes it, stop() never resolves.
    await g.close();
    await closed;
  });
});
