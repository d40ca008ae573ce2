import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Port80Server, resolveHttpPort } from '../../src/lib/server/port80.js';

const servers: Port80Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
});

async function start(o: ConstructorParameters<typeof Port80Server>[0] = {}): Promise<Port80Server> {
  const s = new Port80Server({ host: '127.0.0.1', port: 0, ...o });
  await s.start();
  servers.push(s);
  return s;
}

/** Raw request so the Host header is exactly what we say. */
function request(port: number, head: string): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(head));
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (buf += d));
    s.on('end', () => {
      const [h, ...rest] = buf.split('\r\n\r\n');
      const lines = h!.split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({ status: Number(lines[0]!.split(' ')[1]), headers, body: rest.join('\r\n\r\n') });
    });
    s.on('error', reject);
  });
}

const get = (port: number, path: string, host = 'relay.example.com', extra = '') => request(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`);

describe('port-80 listener', () => {
  it('runs on 80 by default only with TLS; -1 turns it off; other values are refused', () => {
    expect(resolveHttpPort(undefined, true)).toBe(80);
    expect(resolveHttpPort(8080, true)).toBe(8080);
    expect(resolveHttpPort(0, true)).toBe(0);
    expect(resolveHttpPort(-1, true)).toBeNull();
    expect(resolveHttpPort(undefined, false)).toBeNull();
    expect(resolveHttpPort(80, false)).toBeNull();
    expect(() => resolveHttpPort(-2, true)).toThrow(/--http-port must be -1 \(off\) or a port from 0 to 65535, found -2/);
    expect(() => resolveHttpPort(70000, true)).toThrow(/found 70000/);
  });

  it('serves /generate_204 with the challenge echo, as the main listener does', async () => {
    const s = await start();
    const r = await get(s.port, '/generate_204', 'relay.example.com', 'X-Tailscale-Challenge: abc123\r\n');
    expect(r.status).toBe(204);
    expect(r.headers['x-tailscale-response']).toBe('response abc123');
    expect(r.headers['cache-control']).toContain('no-store');
    expect((await get(s.port, '/generate_204', 'h', 'X-Tailscale-Challenge: bad value!\r\n')).headers['x-tailscale-response']).toBeUndefined();
  });

  it('answers pending HTTP-01 tokens and 404s the rest', async () => {
    const tokens = new Map([['tok_EN-1', 'tok_EN-1.thumbprint']]);
    const s = await start({ challenges: { http01: (t) => tokens.get(t), tlsAlpnPending: () => false, tlsAlpn01: () => undefined } });
    const ok = await get(s.port, '/.well-known/acme-challenge/tok_EN-1');
    expect([ok.status, ok.body]).toEqual([200, 'tok_EN-1.thumbprint']);
    expect((await get(s.port, '/.well-known/acme-challenge/other')).status).toBe(404);
    expect((await get(s.port, '/.well-known/acme-challenge/../../etc/passwd')).status).toBe(404);
    const none = await start();
    expect((await get(none.port, '/.well-known/acme-challenge/tok_EN-1')).status).toBe(404);
  });

  it('redirects everything else to https with 302 (derper), keeping the path and query', async () => {
    const s = await start();
    const r = await get(s.port, '/derp/probe?x=1', 'relay.example.com:80');
    expect(r.status).toBe(302);
    expect(r.headers.location).toBe('https://relay.example.com/derp/probe?x=1');
    const fixed = await start({ hostname: 'derp.example.net', httpsPort: 8443 });
    expect((await get(fixed.port, '/', 'evil.example')).headers.location).toBe('https://derp.example.net:8443/');
    expect((await request(s.port, 'POST /derp HTTP/1.1\r\nHost: relay.example.com\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')).status).toBe(400);
    const badHost = await get(s.port, '/', 'a b<script>');
    expect(badHost.status).toBe(400);
  });
});
