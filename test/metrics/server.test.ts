/** MetricsServer (/metrics only, loopback by default) and derper's /debug/ pages on the relay port. */
import * as http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/lib/errors.js';
import { MetricsServer, RelayMetrics, allowDebugAccess, debugRoutes, metricsEnabled } from '../../src/lib/metrics/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RawClient } from '../helpers/rawclient.js';
import { parseText, value } from './helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A raw HTTP request (fetch cannot bind a local address or send arbitrary methods as easily). */
function request(o: { port: number; host?: string; path: string; method?: string; headers?: Record<string, string>; localAddress?: string }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: o.host ?? '127.0.0.1', port: o.port, path: o.path, method: o.method ?? 'GET', headers: o.headers, localAddress: o.localAddress, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function metricsServer(addr: string): Promise<{ srv: MetricsServer; logger: MemoryLogger; metrics: RelayMetrics }> {
  const logger = new MemoryLogger();
  const metrics = new RelayMetrics({ defaultMetrics: false });
  const srv = new MetricsServer({ metrics, addr, logger });
  await srv.start();
  cleanups.push(() => srv.stop());
  return { srv, logger, metrics };
}

describe('MetricsServer', () => {
  it('serves GET /metrics in the Prometheus text format and nothing else', async () => {
    const { srv, logger } = await metricsServer('127.0.0.1:0');
    const ok = await request({ port: srv.port, path: '/metrics' });
    expect(ok.status).toBe(200);
    expect(ok.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(value(parseText(ok.body), 'derp_build_info')).toBe(1);
    expect((await request({ port: srv.port, path: '/metrics?x=1' })).status).toBe(200);
    expect((await request({ port: srv.port, path: '/' })).status).toBe(404);
    expect((await request({ port: srv.port, path: '/debug/varz' })).status).toBe(404);
    expect((await request({ port: srv.port, path: '/metrics/extra' })).status).toBe(404);
    const post = await request({ port: srv.port, path: '/metrics', method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
    expect(logger.entries.filter((e) => e.level === 'warn')).toEqual([]);
  });

  it('warns when explicitly bound beyond loopback', async () => {
    const { srv, logger } = await metricsServer('0.0.0.0:0');
    expect(srv.url).toBe(`http://127.0.0.1:${srv.port}/metrics`);
    const warn = logger.entries.find((e) => e.level === 'warn');
    expect(warn?.msg).toMatch(/reachable beyond this host/);
    expect(warn?.fields.addr).toBe('0.0.0.0:0');
  });

  it('"none" turns it off; a malformed address is a ConfigError naming it', () => {
    expect(metricsEnabled('none')).toBe(false);
    expect(metricsEnabled('NONE')).toBe(false);
    expect(metricsEnabled('127.0.0.1:9090')).toBe(true);
    const make = (): MetricsServer => new MetricsServer({ metrics: new RelayMetrics({ defaultMetrics: false }), addr: 'localhost' });
    expect(make).toThrow(ConfigError);
    expect(make).toThrow(/"localhost"/);
  });

  it('a port already in use is a DERP_ERR_SERVER error naming the address', async () => {
    const { srv } = await metricsServer('127.0.0.1:0');
    const again = new MetricsServer({ metrics: new RelayMetrics({ defaultMetrics: false }), addr: `127.0.0.1:${srv.port}` });
    await expect(again.start()).rejects.toMatchObject({ code: 'DERP_ERR_SERVER', message: expect.stringContaining(`127.0.0.1:${srv.port}`) as unknown });
  });
});

describe('derper debug pages on the relay port', () => {
  async function relay(addr: string): Promise<{ relay: RelayServer; metrics: RelayMetrics }> {
    const metrics = new RelayMetrics({ defaultMetrics: false });
    const r = new RelayServer({ privateKey: NodePrivateKey.generate(), addr, routes: debugRoutes(metrics) });
    metrics.attachRelay(r);
    await r.start();
    cleanups.push(() => r.stop({ restarting: false }));
    return { relay: r, metrics };
  }

  it('/debug/varz speaks derper\'s Prometheus names, /debug/vars its expvar JSON, /debug/ links both', async () => {
    const { relay: r } = await relay('127.0.0.1:0');
    const a = await RawClient.connect({ port: r.port });
    const b = await RawClient.connect({ port: r.port });
    cleanups.push(() => a.destroy());
    cleanups.push(() => b.destroy());
    a.sendPacket(b.publicKey, Buffer.alloc(33));
    await b.nextOf('RecvPacket');
    a.sendPacket(NodePrivateKey.generate().publicKey, Buffer.alloc(7));
    await a.ping();

    const varz = await request({ port: r.port, path: '/debug/varz' });
    expect(varz.status).toBe(200);
    const m = parseText(varz.body);
    expect(value(m, 'derp_accepts')).toBe(2);
    expect(value(m, 'derp_current_connections')).toBe(2);
    expect(m.get('derp_current_connections')?.type).toBe('GAUGE');
    expect(value(m, 'derp_packets_received')).toBe(2);
    expect(value(m, 'derp_bytes_sent')).toBe(33);
    expect(value(m, 'derp_packets_dropped', { reason: 'unknown_dest', kind: 'other' })).toBe(1);
    expect(value(m, 'derp_packets_received_kind', { kind: 'other' })).toBe(2);
    expect(value(m, 'derp_got_ping')).toBe(1);
    expect(m.has('derp_average_queue_duration_ms')).toBe(true);

    const vars = await request({ port: r.port, path: '/debug/vars' });
    expect(vars.headers['content-type']).toMatch(/^application\/json/);
    const j = JSON.parse(vars.body) as { derp: Record<string, unknown> };
    expect(j.derp.accepts).toBe(2);
    expect(j.derp.gauge_current_connections).toBe(2);
    expect(j.derp.packets_dropped).toBe(1);
    expect(j.derp.counter_packets_dropped_reason).toMatchObject({ unknown_dest: 1 });

    const index = await request({ port: r.port, path: '/debug/' });
    expect(index.status).toBe(200);
    expect(index.body).toContain('href="/debug/varz"');
  });

  it('refuses a request that a proxy forwarded (X-Forwarded-For), though its socket peer is loopback', async () => {
    const { relay: r } = await relay('127.0.0.1:0');
    for (const h of ['X-Forwarded-For', 'Forwarded', 'X-Real-IP']) {
      const res = await request({ port: r.port, path: '/debug/varz', headers: { [h]: '203.0.113.9' } });
      expect(res.status).toBe(403);
      expect(res.body).toBe('debug access denied\n');
    }
  });

  it('answers 127.0.0.2 (loopback too) on a relay bound to all interfaces', async () => {
    const { relay: r } = await relay('0.0.0.0:0');
    const res = await request({ port: r.port, path: '/debug/varz', localAddress: '127.0.0.2' });
    expect(res.status).toBe(200);
    expect(res.body).toContain('derp_accepts 0');
  });

  it('the access check: loopback (v4, v6, v4-mapped) only, never with proxy headers', () => {
    for (const a of ['127.0.0.1', '127.0.0.2', '::1', '::ffff:127.0.0.1']) expect(allowDebugAccess(a, {})).toBe(true);
    for (const a of ['10.0.0.1', '192.0.2.7', '::ffff:192.0.2.7', '2001:db8::1', '::', '0.0.0.0', '', undefined]) expect(allowDebugAccess(a, {})).toBe(false);
    expect(allowDebugAccess('127.0.0.1', { 'x-forwarded-for': '127.0.0.1' })).toBe(false);
  });
});
