import * as net from 'node:net';
import * as tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { parseClientHello } from '../../src/lib/certs/index.js';

const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** The first bytes Node's TLS client sends, captured by a plain TCP server. */
async function captureHello(o: tls.ConnectionOptions): Promise<Buffer> {
  const srv = net.createServer();
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  const got = new Promise<Buffer>((resolve) =>
    srv.once('connection', (sock) => {
      let buf = Buffer.alloc(0);
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          sock.destroy();
          resolve(buf);
        }
      });
    }),
  );
  const c = tls.connect({ host: '127.0.0.1', port, ...o });
  c.on('error', () => undefined); // the capture server hangs up mid-handshake on purpose
  const hello = await got;
  c.destroy();
  return hello;
}

describe('parseClientHello', () => {
  it('reads SNI and ALPN from a real ClientHello', async () => {
    const hello = await captureHello({ servername: 'relay.example.com', ALPNProtocols: ['acme-tls/1'] });
    expect(parseClientHello(hello)).toEqual({ status: 'ok', serverName: 'relay.example.com', alpn: ['acme-tls/1'] });
    const plain = await captureHello({ ALPNProtocols: ['h2', 'http/1.1'] });
    expect(parseClientHello(plain)).toEqual({ status: 'ok', serverName: undefined, alpn: ['h2', 'http/1.1'] });
  });

  it('asks for more bytes on every strict prefix, and reassembles a hello split over two records', async () => {
    const hello = await captureHello({ servername: 'a.example', ALPNProtocols: ['acme-tls/1'] });
    for (const n of [0, 1, 4, 5, 9, 40, hello.length - 1]) expect(parseClientHello(hello.subarray(0, n)).status).toBe('incomplete');
    const body = hello.subarray(5);
    const cut = 20;
    const rec = (b: Buffer) => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, b.length >> 8, b.length & 0xff]), b]);
    const split = Buffer.concat([rec(body.subarray(0, cut)), rec(body.subarray(cut))]);
    expect(parseClientHello(split.subarray(0, split.length - 1)).status).toBe('incomplete');
    expect(parseClientHello(split)).toMatchObject({ status: 'ok', serverName: 'a.example', alpn: ['acme-tls/1'] });
  });

  it('calls anything else invalid instead of throwing', async () => {
    expect(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n')).status).toBe('invalid');
    expect(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])).status).toBe('invalid');
    // A ServerHello (type 2) is not a ClientHello.
    expect(parseClientHello(Buffer.from([0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00])).status).toBe('invalid');
    // A record announcing more than a ClientHello may be is given up on at once, not waited for.
    expect(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff])).status).toBe('invalid');
    // Lengths that run past the end, at every byte of a real hello.
    const hello = await captureHello({ servername: 'x.example', ALPNProtocols: ['acme-tls/1'] });
    for (let i = 5; i < hello.length; i++) {
      const bad = Buffer.from(hello);
      bad[i] = 0xff;
      expect(['ok', 'invalid', 'incomplete']).toContain(parseClientHello(bad).status);
    }
  });
});
