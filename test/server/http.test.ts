import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encode, buildUpgradeResponse } from '../../src/lib/protocol/index.js';
import { dial, RawClient } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';

/** One HTTP/1.1 exchange over a fresh socket; returns the whole response text once the server closes. */
async function rawHttp(port: number, request: string): Promise<string> {
  const s = await dial(port);
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  const done = new Promise<void>((resolve) => s.once('close', () => resolve()));
  s.write(request);
  await done;
  return Buffer.concat(chunks).toString('latin1');
}

function req(method: string, path: string, headers: string[] = []): string {
  return `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;
}

describe('relay HTTP endpoints', () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startRelay();
  });
  afterAll(async () => {
    await f.close();
  });

  it('answers the DERP upgrade with the exact 101 and the ServerKey frame in the same write', async () => {
    const c = await f.open();
    const expected = Buffer.concat([Buffer.from(buildUpgradeResponse(f.server.publicKey), 'latin1'), encode.serverKey(f.server.publicKey)]);
    // The 101 and the 45-byte ServerKey leave the server in one write: the first read holds both.
    expect(c.firstChunk!.equals(expected)).toBe(true);
    const sk = await c.next();
    expect(sk).toEqual({ type: 'ServerKey', serverKey: f.server.publicKey });
  });

  it('fast start sends no 101, only the ServerKey frame, and takes ClientInfo pipelined with the request', async () => {
    const c = await f.open({ fastStart: true });
    await c.handshake();
    expect(c.firstChunk!.subarray(0, 45).equals(encode.serverKey(f.server.publicKey))).toBe(true);
    expect(c.serverInfo).toEqual({ version: 2 });
  });

  it('accepts Upgrade: DERP case-insensitively and legacy Upgrade: websocket without the derp subprotocol', async () => {
    for (const up of ['derp', 'DeRp', 'websocket']) {
      const s = await dial(f.server.port);
      const first = new Promise<Buffer>((resolve) => s.once('data', resolve));
      s.write(`GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ${up}\r\n\r\n`);
      expect((await first).toString('latin1')).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\nUpgrade: DERP\r\n/);
      s.destroy();
    }
  });

  it('upgrades on the Upgrade header alone, as derper does (no Connection: Upgrade needed)', async () => {
    for (const conn of ['', 'Connection: keep-alive\r\n']) {
      const s = await dial(f.server.port);
      const first = new Promise<Buffer>((resolve) => s.once('data', resolve));
      s.write(`GET /derp HTTP/1.1\r\nHost: x\r\n${conn}Upgrade: DERP\r\n\r\n`);
      expect((await first).toString('latin1')).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
      s.destroy();
    }
  });

  it('426 for /derp without an upgrade, or with an unknown protocol', async () => {
    const plain = await rawHttp(f.server.port, req('GET', '/derp'));
    expect(plain).toMatch(/^HTTP\/1\.1 426 Upgrade Required\r\n/);
    expect(plain.endsWith('\r\n\r\nDERP requires connection upgrade\n')).toBe(true);
    const other = await rawHttp(f.server.port, req('GET', '/derp', ['Connection: Upgrade', 'Upgrade: h2c']).replace('Connection: close\r\n', ''));
    expect(other).toMatch(/^HTTP\/1\.1 426 Upgrade Required\r\n/);
    expect(other.endsWith('DERP requires connection upgrade\n')).toBe(true);
  });

  it('probe and latency-check: GET/HEAD 200 with CORS, other methods 405', async () => {
    for (const path of ['/derp/probe', '/derp/latency-check']) {
      for (const m of ['GET', 'HEAD']) {
        const r = await fetch(`http://127.0.0.1:${f.server.port}${path}`, { method: m });
        expect(r.status).toBe(200);
        expect(r.headers.get('access-control-allow-origin')).toBe('*');
        expect(await r.text()).toBe('');
      }
      const post = await fetch(`http://127.0.0.1:${f.server.port}${path}`, { method: 'POST' });
      expect(post.status).toBe(405);
      expect(await post.text()).toBe('bogus probe method\n');
    }
  });

  it('/generate_204 echoes a valid challenge and ignores an invalid one', async () => {
    const ok = await fetch(`http://127.0.0.1:${f.server.port}/generate_204?t=1`, { headers: { 'X-Tailscale-Challenge': 'ts_192.0.2.10' } });
    expect(ok.status).toBe(204);
    expect(ok.headers.get('cache-control')).toBe('no-cache, no-store, must-revalidate, no-transform, max-age=0');
    expect(ok.headers.get('x-tailscale-response')).toBe('response ts_192.0.2.10');
    const bad = await fetch(`http://127.0.0.1:${f.server.port}/generate_204`, { headers: { 'X-Tailscale-Challenge': 'bad challenge!' } });
    expect(bad.status).toBe(204);
    expect(bad.headers.get('x-tailscale-response')).toBeNull();
    const none = await fetch(`http://127.0.0.1:${f.server.port}/generate_204`);
    expect(none.headers.get('x-tailscale-response')).toBeNull();
  });

  it('serves robots.txt, a home page with the server key, and 404 elsewhere', async () => {
    const robots = await fetch(`http://127.0.0.1:${f.server.port}/robots.txt`);
    expect(await robots.text()).toBe('User-agent: *\nDisallow: /\n');
    const home = await fetch(`http://127.0.0.1:${f.server.port}/`);
    expect(home.status).toBe(200);
    const html = await home.text();
    expect(html).toContain('DERP');
    expect(html).toContain(`nodekey:${f.server.publicKey.toString('hex')}`);
    expect((await fetch(`http://127.0.0.1:${f.server.port}/derp/`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${f.server.port}/nope`)).status).toBe(404);
  });

  it('closes a connection that sends garbage instead of HTTP, with a logged reason', async () => {
    const s = await dial(f.server.port);
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    s.on('error', () => undefined);
    s.resume();
    s.write(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a]));
    await closed;
    const e = await f.logger.waitFor((x) => x.msg === 'closing connection' && String(x.fields.reason).startsWith('bad HTTP request'));
    expect(e.fields.remote).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('reports its URL, port and key; healthCheck is ok while listening', async () => {
    expect(f.server.url).toBe(`http://127.0.0.1:${f.server.port}/derp`);
    expect(f.server.healthCheck()).toMatchObject({ ok: true, listening: true, problems: [] });
    const c = await RawClient.connect({ port: f.server.port });
    expect(f.server.healthCheck().clients).toBeGreaterThanOrEqual(1);
    c.destroy();
  });
});
