/** WebSocket transport: message boundaries carry no meaning (spec §3.6). */
import { afterEach, describe, expect, it } from 'vitest';
import { buildClientInfoFrame, encode, openServerInfo } from '../../src/lib/protocol/index.js';
import { dial, RawClient } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

describe('WebSocket transport', () => {
  it('sends ServerKey right after the handshake and reassembles frames split across and packed into messages', async () => {
    f = await startRelay();
    const b = await f.connect();
    const a = await f.open({ transport: 'websocket' });
    const sk = await a.nextOf('ServerKey');
    expect(sk.serverKey.equals(f.server.publicKey)).toBe(true);

    const ci = buildClientInfoFrame(a.key.keyObject, a.publicKey, f.server.publicKey, { version: 2, canAckPings: false });
    // ClientInfo in three messages: a split header, then the rest in two parts.
    a.writeMessages([ci.subarray(0, 3), ci.subarray(3, 50), ci.subarray(50)]);
    const si = await a.nextOf('ServerInfo');
    expect(openServerInfo(a.key.keyObject, f.server.publicKey, si.sealed)).toEqual({ version: 2 });

    const frames = [1, 2, 3, 4, 5].map((i) => encode.sendPacket(b.publicKey, Buffer.from(`packet-${i}`)));
    const all = Buffer.concat(frames);
    // Three frames in one message, then the last two split at odd offsets over three messages.
    const cut = frames[0]!.length + frames[1]!.length + frames[2]!.length;
    a.writeMessages([all.subarray(0, cut), all.subarray(cut, cut + 7), all.subarray(cut + 7, all.length - 1), all.subarray(all.length - 1)]);
    for (let i = 1; i <= 5; i++) {
      const p = await b.nextOf('RecvPacket');
      expect(p.data.toString()).toBe(`packet-${i}`);
      expect(p.src.equals(a.publicKey)).toBe(true);
    }
    // And the reverse direction arrives as binary messages the client can parse.
    b.sendPacket(a.publicKey, Buffer.from('back'));
    expect((await a.nextOf('RecvPacket')).data.toString()).toBe('back');
    expect(f.server.stats().websocketAccepts).toBe(1);
  });

  it('closes with 1008 when the offered subprotocol only contains "derp"', async () => {
    f = await startRelay();
    // A raw handshake: the ws client itself would refuse a reply without a subprotocol.
    const s = await dial(f.server.port);
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.write(
      'GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: xderpx\r\n\r\n',
    );
    const got = await new Promise<Buffer>((resolve) => {
      const check = () => {
        const all = Buffer.concat(chunks);
        const i = all.indexOf('\r\n\r\n');
        if (i >= 0 && all.length >= i + 8) resolve(all);
        else s.once('data', check);
      };
      check();
    });
    const body = got.subarray(got.indexOf('\r\n\r\n') + 4);
    expect(got.toString('latin1')).toMatch(/^HTTP\/1\.1 101 /);
    expect(got.toString('latin1')).not.toMatch(/Sec-WebSocket-Protocol/i);
    // Close frame (opcode 8) carrying status 1008.
    expect(body[0]).toBe(0x88);
    expect(body.readUInt16BE(2)).toBe(1008);
    s.destroy();
    await closed;
  });

  it('works over TLS with the self-signed certificate trusted as CA', async () => {
    f = await startRelay({ withTls: true });
    expect(f.server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/derp$/);
    const a = await RawClient.connect({ port: f.server.port, ca: f.ca, transport: 'websocket' });
    f.clients.push(a);
    const b = await f.connect();
    a.sendPacket(b.publicKey, Buffer.from('over-wss'));
    expect((await b.nextOf('RecvPacket')).data.toString()).toBe('over-wss');
  });
});
