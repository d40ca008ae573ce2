/** /debug/bans on a real relay listener, and the derp_abuse_* metrics on a real registry. */
import * as http from 'node:http';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { AbuseMonitor, BANS_PATH, abuseDebugRoutes, keyIdentity, registerAbuseMetrics, type BanView } from '../../src/lib/abuse/index.js';
import { RelayMetrics, debugRoutes } from '../../src/lib/metrics/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/keys.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { parseText, value } from '../metrics/helpers.js';
import { Clock, key, settings } from './helpers.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(o: { port: number; path: string; method?: string; headers?: Record<string, string> }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: o.port, path: o.path, method: o.method ?? 'GET', headers: o.headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function relayWithBans() {
  const clock = new Clock();
  const monitor = new AbuseMonitor({ settings: settings({ ban: true, thresholds: { fanout: 2, handshakeFailure: 2 } }), now: clock.now });
  const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', routes: abuseDebugRoutes(monitor, clock.now) });
  await relay.start();
  cleanups.push(() => relay.stop({ restarting: false }));
  return { monitor, relay, clock };
}

describe('/debug/bans', () => {
  it('lists the bans in force as JSON: identity, kind, reason, since, until, offences', async () => {
    const { monitor, relay, clock } = await relayWithBans();
    const empty = await request({ port: relay.port, path: BANS_PATH });
    expect(empty.status).toBe(200);
    expect(empty.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(JSON.parse(empty.body)).toMatchObject({ banning: true, count: 0, bans: [] });

    const k = key();
    monitor.onAbuse('fanout', { ip: '198.51.100.7', key: k });
    monitor.onAbuse('fanout', { ip: '198.51.100.7', key: k });
    monitor.onAbuse('handshake_failure', { ip: '2001:db8:5:5::1', key: null });
    monitor.onAbuse('handshake_failure', { ip: '2001:db8:5:5::2', key: null });
    clock.advance(100);
    const res = await request({ port: relay.port, path: BANS_PATH });
    expect(res.status).toBe(200);
    const doc = JSON.parse(res.body) as { now: string; count: number; bans: BanView[] };
    expect(doc.count).toBe(3);
    expect(doc.now).toBe(new Date(clock.t).toISOString());
    const byId = new Map(doc.bans.map((b) => [b.identity, b]));
    expect(byId.get(keyIdentity(k))).toEqual({
      identity: keyIdentity(k),
      type: 'key',
      kind: 'fanout',
      reason: 'fanout: 2 in 60 s (threshold 2)',
      since: new Date(clock.t - 100_000).toISOString(),
      until: new Date(clock.t + 500_000).toISOString(),
      remainingSeconds: 500,
      offences: 1,
    });
    expect(byId.get('198.51.100.7')?.type).toBe('ip');
    expect(byId.get('2001:db8:5:5::/64')?.kind).toBe('handshake_failure');

    // Expired bans are gone from the page.
    clock.advance(600);
    expect(JSON.parse((await request({ port: relay.port, path: BANS_PATH })).body)).toMatchObject({ count: 0 });
    const head = await request({ port: relay.port, path: BANS_PATH, method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });

  it('refuses proxied requests (though the socket peer is loopback) and other methods', async () => {
    const { relay } = await relayWithBans();
    for (const h of ['X-Forwarded-For', 'Forwarded', 'X-Real-IP']) {
      const res = await request({ port: relay.port, path: BANS_PATH, headers: { [h]: '203.0.113.9' } });
      expect(res.status).toBe(403);
      expect(res.body).toBe('debug access denied\n');
    }
    const post = await request({ port: relay.port, path: BANS_PATH, method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  it('refuses a non-loopback peer', () => {
    const monitor = new AbuseMonitor();
    let status = 0;
    const res = {
      writeHead: (s: number) => ((status = s), res),
      setHeader: () => res,
      end: () => res,
    };
    const req = { socket: { remoteAddress: '192.0.2.10' }, headers: {}, method: 'GET' };
    abuseDebugRoutes(monitor)[BANS_PATH]!(req as unknown as http.IncomingMessage, res as unknown as http.ServerResponse);
    expect(status).toBe(403);
  });
});

describe('derp_abuse_* metrics', () => {
  it('count events, crossings by kind and action, bans, refusals', async () => {
    const clock = new Clock();
    const allowed = key();
    const monitor = new AbuseMonitor({ settings: settings({ ban: true, thresholds: { protocolViolation: 1 } }), now: clock.now, isAllowListed: (k) => k.equals(allowed) });
    const registry = new Registry();
    registerAbuseMetrics(registry, monitor);
    const k = key();
    monitor.onAbuse('protocol_violation', { ip: '198.51.100.7', key: k });
    monitor.onAbuse('protocol_violation', { ip: '198.51.100.8', key: allowed });
    monitor.isBanned('198.51.100.7', null);
    monitor.isBanned('192.0.2.1', k);
    const m = parseText(await registry.metrics());
    expect(value(m, 'derp_abuse_events_total', { kind: 'protocol_violation' })).toBe(2);
    expect(value(m, 'derp_abuse_crossings_total', { kind: 'protocol_violation', action: 'banned' })).toBe(2);
    expect(value(m, 'derp_abuse_crossings_total', { kind: 'protocol_violation', action: 'exempt' })).toBe(1);
    expect(value(m, 'derp_abuse_bans', { type: 'key' })).toBe(1);
    expect(value(m, 'derp_abuse_bans', { type: 'ip' })).toBe(1);
    expect(value(m, 'derp_abuse_bans_total')).toBe(2);
    expect(value(m, 'derp_abuse_banned_refusals_total', { type: 'ip' })).toBe(1);
    expect(value(m, 'derp_abuse_banned_refusals_total', { type: 'key' })).toBe(1);
    expect(value(m, 'derp_abuse_tracked', { type: 'key' })).toBe(2);
  });
});

describe('the /debug/ index', () => {
  it('lists /debug/bans when it is passed to debugRoutes', async () => {
    const monitor = new AbuseMonitor();
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', routes: debugRoutes(new RelayMetrics({ defaultMetrics: false }), abuseDebugRoutes(monitor)) });
    await relay.start();
    cleanups.push(() => relay.stop({ restarting: false }));
    const index = await request({ port: relay.port, path: '/debug/' });
    expect(index.body).toContain('href="/debug/bans"');
    expect(index.body).toContain('href="/debug/varz"');
    expect((await request({ port: relay.port, path: BANS_PATH })).status).toBe(200);
  });
});
