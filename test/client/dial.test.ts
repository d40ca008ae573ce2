// Dialing beyond a plain TCP connect: HTTP CONNECT proxies (env parsing, NO_PROXY, a real in-test proxy
// in front of a real RelayServer, plain and TLS) and the IPv6/IPv4 race for DERP-map nodes.
import { once } from 'node:events';
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DERPClient, IPV6_HEAD_START_MS, NODE_DIAL_TIMEOUT_MS, resolveTarget, type DERPClientOptions } from '../../src/lib/client/index.js';
import { buildConnectRequest, connectAuthority, connectThroughProxy, noProxyMatches, parseProxyUrl, proxyFromEnv } from '../../src/lib/client/proxy.js';
import type { DERPServer } from '../../src/lib/derpmap/types.js';
import { ConfigError, ConnectError, ProtocolError, TlsError } from '../../src/lib/errors.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/relay.js';
import { generateSelfSigned, type SelfSignedCert } from '../../src/lib/certs/selfsigned-cert.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function relay(addr = '127.0.0.1:0', tls?: SelfSignedCert): Promise<RelayServer> {
  const s = new RelayServer({ privateKey: NodePrivateKey.generate(), addr, ...(tls ? { tls: { cert: tls.certPem, key: tls.keyPem } } : {}) });
  await s.start();
  cleanups.push(() => s.stop({ restarting: false }));
  return s;
}

async function client(server: string | DERPServer, opts: DERPClientOptions = {}): Promise<DERPClient> {
  const c = new DERPClient(opts);
  cleanups.push(() => c.disconnect());
  await c.connect(server);
  return c;
}

/** One packet each way between two connected clients. */
async function roundTrip(a: DERPClient, b: DERPClient): Promise<void> {
  const ra = a.receive();
  const rb = b.receive();
  await a.send(b.publicKey, Buffer.from('ping via proxy'));
  expect((await rb.next()).value?.data.toString()).toBe('ping via proxy');
  await b.send(a.publicKey, Buffer.from('pong'));
  expect((await ra.next()).value?.data.toString()).toBe('pong');
  await ra.return?.();
  await rb.return?.();
}

interface TestProxy {
  url: string;
  port: number;
  /** CONNECT targets in arrival order. */
  targets: string[];
  /** Proxy-Authorization header values (undefined when absent), per CONNECT. */
  auth: (string | undefined)[];
}

/**
 * A tiny CONNECT proxy: parses the request head, answers `reject` status if given (or 407 when
 * `requireAuth` isn't matched), otherwise connects to the target and pipes both ways.
 */
async function startProxy(opts: { reject?: string; requireAuth?: string } = {}): Promise<TestProxy> {
  const sockets = new Set<Socket>();
  const p: TestProxy = { url: '', port: 0, targets: [], auth: [] };
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      client.off('data', onData);
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const rest = buf.subarray(end + 4);
      const m = /^CONNECT (\S+) HTTP\/1\.1$/.exec(lines[0]!);
      const auth = lines.find((l) => /^proxy-authorization:/i.test(l))?.replace(/^[^:]+:\s*/, '');
      p.targets.push(m?.[1] ?? `bad: ${lines[0]}`);
      p.auth.push(auth);
      if (!m) return void client.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n');
      if (opts.reject) return void client.end(`HTTP/1.1 ${opts.reject}\r\nContent-Length: 0\r\n\r\n`);
      if (opts.requireAuth !== undefined && auth !== opts.requireAuth) {
        return void client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="t"\r\nContent-Length: 0\r\n\r\n');
      }
      const t = /^\[?([^\]]+?)\]?:(\d+)$/.exec(m[1]!)!;
      const up = netConnect({ host: t[1]!, port: Number(t[2]) });
      sockets.add(up);
      up.on('close', () => sockets.delete(up));
      up.on('error', () => client.destroy());
      up.once('connect', () => {
        client.write('HTTP/1.1 200 Connection established\r\n\r\n');
        if (rest.length) up.write(rest);
        client.pipe(up);
        up.pipe(client);
      });
      client.on('close', () => up.destroy());
      up.on('close', () => client.destroy());
    };
    client.on('data', onData);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  p.port = (server.address() as AddressInfo).port;
  p.url = `http://127.0.0.1:${p.port}`;
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  });
  return p;
}

describe('proxy settings (pure)', () => {
  it('matches NO_PROXY entries like curl', () => {
    expect(noProxyMatches('*', 'anything.test', 443)).toBe(true);
    expect(noProxyMatches('example.com', 'example.com', 443)).toBe(true);
    expect(noProxyMatches('example.com', 'derp.example.com', 443)).toBe(true);
    expect(noProxyMatches('.example.com', 'example.com', 443)).toBe(true);
    expect(noProxyMatches('.example.com', 'a.b.example.com', 443)).toBe(true);
    expect(noProxyMatches('example.com', 'notexample.com', 443)).toBe(false);
    expect(noProxyMatches('EXAMPLE.com', 'Derp.Example.COM.', 443)).toBe(true);
    expect(noProxyMatches('foo.test, bar.test ,baz.test', 'bar.test', 443)).toBe(true);
    expect(noProxyMatches('derp.test:8443', 'derp.test', 8443)).toBe(true);
    expect(noProxyMatches('derp.test:8443', 'derp.test', 443)).toBe(false);
    expect(noProxyMatches('10.0.0.0/8', '10.1.2.3', 443)).toBe(true);
    expect(noProxyMatches('10.0.0.0/8', '11.1.2.3', 443)).toBe(false);
    expect(noProxyMatches('::1', '[::1]', 443)).toBe(true);
    expect(noProxyMatches('[0:0::1]:443', '[::1]', 443)).toBe(true);
    expect(noProxyMatches('[::1]:443', '[::1]', 80)).toBe(false);
    expect(noProxyMatches('127.0.0.1', '127.0.0.1', 1)).toBe(true);
    // Loopback is not exempt unless listed.
    expect(noProxyMatches('', '127.0.0.1', 1)).toBe(false);
    expect(noProxyMatches('localhost', '127.0.0.1', 1)).toBe(false);
  });

  it('picks the variable by scheme, lower case first, and honours NO_PROXY', () => {
    const https = new URL('https://derp.example.com/derp');
    const http = new URL('http://derp.example.com:8080/derp');
    expect(proxyFromEnv(https, {})).toBeUndefined();
    expect(proxyFromEnv(https, { HTTPS_PROXY: 'proxy.test:3128' })?.href).toBe('http://proxy.test:3128/');
    expect(proxyFromEnv(https, { HTTPS_PROXY: 'http://A:1', https_proxy: 'http://b:2' })?.host).toBe('b:2');
    expect(proxyFromEnv(https, { HTTP_PROXY: 'http://a:1' })).toBeUndefined();
    expect(proxyFromEnv(http, { HTTP_PROXY: 'http://a:1' })?.host).toBe('a:1');
    expect(proxyFromEnv(http, { http_proxy: 'http://a:1', HTTPS_PROXY: 'http://b:2' })?.host).toBe('a:1');
    expect(proxyFromEnv(https, { HTTPS_PROXY: 'http://p:1', NO_PROXY: '.example.com' })).toBeUndefined();
    expect(proxyFromEnv(https, { HTTPS_PROXY: 'http://p:1', no_proxy: 'other.test' })?.host).toBe('p:1');
    expect(proxyFromEnv(https, { HTTPS_PROXY: '  ' })).toBeUndefined();
    expect(() => proxyFromEnv(https, { HTTPS_PROXY: 'socks5://p:1080' })).toThrow(ConfigError);
    expect(() => parseProxyUrl('https://p:443')).toThrow(ConfigError);
  });

  it('threads the proxy into the dial target (option, env, false, noProxy)', () => {
    const env = { https_proxy: 'http://envproxy.test:3128', no_proxy: 'skip.test' };
    expect(resolveTarget('https://derp.test/derp', {}, { env }).proxy?.host).toBe('envproxy.test:3128');
    expect(resolveTarget('https://skip.test/derp', {}, { env }).proxy).toBeUndefined();
    expect(resolveTarget('https://derp.test/derp', {}, { env, proxy: false }).proxy).toBeUndefined();
    expect(resolveTarget('https://derp.test/derp', {}, { env, proxy: 'http://opt.test:1' }).proxy?.host).toBe('opt.test:1');
    // An explicit proxy ignores the environment's NO_PROXY but honours an explicit noProxy.
    expect(resolveTarget('https://skip.test/derp', {}, { env, proxy: 'http://opt.test:1' }).proxy?.host).toBe('opt.test:1');
    expect(resolveTarget('https://skip.test/derp', {}, { env, proxy: 'http://opt.test:1', noProxy: 'skip.test' }).proxy).toBeUndefined();
  });

  it('builds the CONNECT request with Basic proxy auth and bracketed IPv6', () => {
    expect(connectAuthority(new URL('https://[::1]/derp'))).toBe('[::1]:443');
    expect(connectAuthority(new URL('http://derp.test/derp'))).toBe('derp.test:80');
    expect(buildConnectRequest('derp.test:443', new URL('http://proxy.test:3128'))).toBe('CONNECT derp.test:443 HTTP/1.1\r\nHost: derp.test:443\r\n\r\n');
    const withAuth = buildConnectRequest('derp.test:443', new URL('http://us%20er:p%40ss@proxy.test:3128'));
    expect(withAuth).toContain(`Proxy-Authorization: Basic ${Buffer.from('us er:p@ss').toString('base64')}\r\n`);
  });
});

describe('DERP through an HTTP CONNECT proxy', () => {
  let cert: SelfSignedCert;
  beforeAll(async () => {
    cert = await generateSelfSigned('127.0.0.1');
  });

  it.each(['derp', 'websocket'] as const)('exchanges packets over plain HTTP via the proxy (%s)', async (transport) => {
    const s = await relay();
    const proxy = await startProxy();
    const a = await client(s.url, { transport, proxy: proxy.url });
    const b = await client(s.url, { transport, proxy: proxy.url });
    await roundTrip(a, b);
    expect(proxy.targets).toEqual([`127.0.0.1:${s.port}`, `127.0.0.1:${s.port}`]);
    expect(proxy.auth).toEqual([undefined, undefined]);
  });

  it('runs TLS with a sha256-raw pin inside the tunnel, with proxy credentials', async () => {
    const s = await relay('127.0.0.1:0', cert);
    const basic = `Basic ${Buffer.from('derp:s3cret').toString('base64')}`;
    const proxy = await startProxy({ requireAuth: basic });
    const proxyUrl = `http://derp:s3cret@127.0.0.1:${proxy.port}`;
    const a = await client(s.url, { proxy: proxyUrl, tls: { certName: cert.certName } });
    const b = await client(s.url, { proxy: proxyUrl, tls: { certName: cert.certName }, transport: 'websocket' });
    await roundTrip(a, b);
    expect(proxy.targets).toEqual([`127.0.0.1:${s.port}`, `127.0.0.1:${s.port}`]);
    expect(proxy.auth).toEqual([basic, basic]);
    // The pin is still checked through the tunnel.
    const wrong = `sha256-raw:${'00'.repeat(32)}`;
    await expect(new DERPClient({ proxy: proxyUrl, tls: { certName: wrong }, reconnect: false }).connect(s.url)).rejects.toBeInstanceOf(TlsError);
  });

  it('reports a refused CONNECT as a ConnectError naming the proxy and status', async () => {
    const s = await relay();
    const proxy = await startProxy({ requireAuth: 'Basic nope' });
    const err = await new DERPClient({ proxy: proxy.url, reconnect: false }).connect(s.url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as Error).message).toContain('407');
    expect((err as Error).message).toContain(`127.0.0.1:${proxy.port}`);
    const forbidden = await startProxy({ reject: '403 Forbidden' });
    await expect(new DERPClient({ proxy: forbidden.url, reconnect: false }).connect(s.url)).rejects.toThrow(/403 Forbidden/);
  });

  it('fails with a ConnectError when the proxy is unreachable', async () => {
    const s = await relay();
    const dead = await startProxy();
    const url = dead.url;
    await cleanups.pop()!();
    await expect(new DERPClient({ proxy: url, reconnect: false }).connect(s.url)).rejects.toThrow(/cannot connect to proxy/);
  });

  it('bypasses the proxy for NO_PROXY hosts', async () => {
    const s = await relay();
    const proxy = await startProxy();
    const a = await client(s.url, { proxy: proxy.url, noProxy: 'example.com, 127.0.0.1' });
    const b = await client(s.url, { proxy: proxy.url, noProxy: `127.0.0.1:${s.port}` });
    await roundTrip(a, b);
    expect(proxy.targets).toEqual([]);
  });

  it('keeps bytes that arrive with the CONNECT answer for the next layer', async () => {
    const server = createServer((c) => {
      c.once('data', () => c.write('HTTP/1.1 200 Connection established\r\nX-Test: 1\r\n\r\nearly bytes'));
      c.on('error', () => c.destroy());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(async () => {
      server.close();
      await once(server, 'close');
    });
    const proxy = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const sock = await connectThroughProxy(proxy, 'derp.test:80', new AbortController().signal);
    cleanups.push(() => void sock.destroy());
    const [first] = (await once(sock, 'data')) as [Buffer];
    expect(first.toString()).toBe('early bytes');
    // Before TLS such bytes can't be from the server: refused rather than fed to (or hidden from) TLS.
    const err = await new DERPClient({ proxy: proxy.href, reconnect: false }).connect('https://derp.test/derp').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as Error).message).toMatch(/11 unexpected bytes before the TLS handshake/);
  });

  it('sends a map node through the proxy by host name, not by its addresses', () => {
    const t = resolveTarget(
      { id: 'n', hostname: 'derp.test', ipv4: '192.0.2.1', ipv6: '2001:db8::1', stunPort: 0, derpPort: 8443, region: 'r', regionCode: 1, canStun: false, canRelay: true },
      {},
      { proxy: 'http://proxy.test:3128' },
    );
    expect(t.proxy?.host).toBe('proxy.test:3128');
    expect(connectAuthority(t.url)).toBe('derp.test:8443');
  });
});

describe('IPv6/IPv4 race for map nodes', () => {
  let v6 = false;
  beforeAll(async () => {
    const probe = createServer();
    v6 = await new Promise<boolean>((resolve) => {
      probe.once('error', () => resolve(false));
      probe.listen(0, '::1', () => resolve(true));
    });
    if (v6) {
      probe.close();
      await once(probe, 'close');
    }
  });
  const node = (port: number, extra: Partial<DERPServer>): DERPServer => ({
    id: 'r1', hostname: 'derp.test', stunPort: 0, derpPort: port, region: 'race', regionCode: 901, canStun: false, canRelay: true, plainHttp: true, ...extra,
  });

  /** Connects a client to `n` and returns the relay's view of the client's address. */
  async function remoteOf(s: RelayServer, n: DERPServer, opts: DERPClientOptions = {}): Promise<string> {
    const accepted = s.acceptClient();
    const c = await client(n, opts);
    for (;;) {
      const r = await accepted.next();
      if (r.done) throw new Error('relay stopped');
      if (r.value.key.equals(c.publicKey)) {
        await accepted.return?.();
        return r.value.remoteAddress;
      }
    }
  }

  it('plans each family from the node fields (derp-map §5.1)', () => {
    const plan = (extra: Partial<DERPServer>) => resolveTarget(node(1, extra), {}, { proxy: false }).node;
    expect(plan({ ipv4: '192.0.2.1', ipv6: '2001:db8::1' })).toMatchObject({ hostName: 'derp.test', ipv4: '192.0.2.1', ipv6: '2001:db8::1', ipv6HeadStartMs: IPV6_HEAD_START_MS, timeoutMs: NODE_DIAL_TIMEOUT_MS });
    // Absent or "" → DNS of the host name for that family; "none" or the wrong family → disabled.
    expect(plan({})).toMatchObject({ ipv4: '', ipv6: '' });
    expect(plan({ ipv4: '', ipv6: 'none' })).toMatchObject({ ipv4: '', ipv6: null });
    expect(plan({ ipv4: '2001:db8::1', ipv6: '192.0.2.1' })).toMatchObject({ ipv4: null, ipv6: null });
    expect(resolveTarget('http://127.0.0.1:1/derp').node).toBeUndefined();
  });

  it('falls back to IPv4 at once when the IPv6 address refuses', async (ctx) => {
    if (!v6) ctx.skip();
    const s = await relay('127.0.0.1:0');
    // Nothing listens on [::1]:port; a huge head start proves IPv4 starts on IPv6's failure, not a timer.
    const remote = await remoteOf(s, node(s.port, { ipv4: '127.0.0.1', ipv6: '::1' }), { ipv6HeadStartMs: 600_000 });
    expect(remote.replace(/^::ffff:/, '')).toBe('127.0.0.1');
  });

  it('uses IPv6 when it connects first, and IPv4 when IPv6 is "none"', async (ctx) => {
    if (!v6) ctx.skip();
    const s = await relay('[::]:0');
    const both = node(s.port, { ipv4: '127.0.0.1', ipv6: '::1' });
    // IPv4 would only start after the (huge) head start, so IPv6 wins deterministically.
    expect(await remoteOf(s, both, { ipv6HeadStartMs: 600_000 })).toBe('::1');
    expect((await remoteOf(s, node(s.port, { ipv4: '127.0.0.1', ipv6: 'none' }))).replace(/^::ffff:/, '')).toBe('127.0.0.1');
    expect(await remoteOf(s, node(s.port, { ipv4: 'none', ipv6: '::1' }))).toBe('::1');
  });

  it('resolves the host name for an empty family field', async () => {
    const s = await relay('127.0.0.1:0');
    const remote = await remoteOf(s, node(s.port, { hostname: 'localhost', ipv4: '', ipv6: 'none' }));
    expect(remote.replace(/^::ffff:/, '')).toBe('127.0.0.1');
  });

  it('refuses a node with both families disabled', async () => {
    await expect(new DERPClient({ reconnect: false }).connect(node(1, { ipv4: 'none', ipv6: '2001:db8::1x' }))).rejects.toThrow(/both IPv4 and IPv6 are explicitly disabled/);
  });

  it('reports both failures when neither family connects', async (ctx) => {
    if (!v6) ctx.skip();
    const s = await relay('127.0.0.1:0');
    const port = s.port;
    await cleanups.pop()!();
    const err = await new DERPClient({ reconnect: false }).connect(node(port, { ipv4: '127.0.0.1', ipv6: '::1' })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as Error).message).toContain(`[::1]:${port}`);
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
  });

  it('does not mask a TLS verdict by trying the other family', async (ctx) => {
    if (!v6) ctx.skip();
    const named = await generateSelfSigned('derp.test');
    const s = await relay('[::]:0', named);
    const ok = node(s.port, { ipv4: '127.0.0.1', ipv6: '::1', plainHttp: false, certName: named.certName });
    expect(await remoteOf(s, ok, { ipv6HeadStartMs: 600_000 })).toBe('::1');
    const wrong = { ...ok, certName: `sha256-raw:${'00'.repeat(32)}` };
    await expect(new DERPClient({ reconnect: false, ipv6HeadStartMs: 600_000 }).connect(wrong)).rejects.toBeInstanceOf(TlsError);
  });
});
