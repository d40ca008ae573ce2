/** The relay's metrics after real traffic: a real relay, real clients on loopback, real scrapes of /metrics. */
import { afterEach, describe, expect, it } from 'vitest';
import { DERPClient } from '../../src/lib/client/index.js';
import { MetricsServer, RelayMetrics, debugRoutes } from '../../src/lib/metrics/index.js';
import { SCRAPE_METRICS_PER_TURN } from '../../src/lib/metrics/constants.js';
import { FrameType, MAX_PACKET_SIZE, NodePrivateKey, encode } from '../../src/lib/protocol/index.js';
import { RelayServer, type RelayServerInit } from '../../src/lib/server/index.js';
import { StunServer } from '../../src/lib/stun/index.js';
import { encodeMessage, MessageType } from '../../src/lib/stun/message.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RawClient } from '../helpers/rawclient.js';
import { turnCounter } from '../helpers/turns.js';
import { hasIPv6Loopback, nextHandled, Peer } from '../stun/helpers.js';
import { histogramCount, scrape, scrapeUntil, value } from './helpers.js';
import { runningAllocator } from '../../src/lib/util/malloc.js';

interface Setup {
  relay: RelayServer;
  metrics: RelayMetrics;
  http: MetricsServer;
  url: string;
  raw(o?: { canAckPings?: boolean }): Promise<RawClient>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(init: Partial<RelayServerInit> = {}): Promise<Setup> {
  const logger = new MemoryLogger();
  const metrics = new RelayMetrics({ version: '9.9.9-test' });
  const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', logger, routes: debugRoutes(metrics), ...init });
  metrics.attachRelay(relay);
  await relay.start();
  cleanups.push(() => relay.stop({ restarting: false }));
  const http = new MetricsServer({ metrics, addr: '127.0.0.1:0', logger });
  await http.start();
  cleanups.push(() => http.stop());
  return {
    relay,
    metrics,
    http,
    url: http.url,
    async raw(o = {}) {
      const c = await RawClient.connect({ port: relay.port }, { version: 2, canAckPings: o.canAckPings ?? true });
      cleanups.push(() => c.destroy());
      return c;
    },
  };
}

/** A disco-looking payload ("TS💬" magic, ≥ 62 bytes). */
const DISCO = Buffer.concat([Buffer.from('TS💬', 'utf8'), Buffer.alloc(70, 1)]);

describe('relay metrics after real traffic', () => {
  it('counts connections, accepts, handshakes, packets and bytes', async () => {
    const s = await setup();
    const a = await s.raw();
    const b = await s.raw();
    for (let i = 0; i < 5; i++) a.sendPacket(b.publicKey, Buffer.alloc(100, i));
    for (let i = 0; i < 5; i++) await b.nextOf('RecvPacket');
    const m = await scrape(s.url);
    expect(value(m, 'derp_connections', { transport: 'derp', tls: 'false' })).toBe(2);
    expect(value(m, 'derp_connections', { transport: 'websocket' })).toBe(0);
    expect(value(m, 'derp_accepts_total')).toBe(2);
    expect(value(m, 'derp_clients')).toBe(2);
    expect(value(m, 'derp_handshakes_total', { result: 'ok' })).toBe(2);
    expect(histogramCount(m, 'derp_handshake_duration_seconds', { result: 'ok' })).toBe(2);
    expect(value(m, 'derp_packets_received_total', { kind: 'other' })).toBe(5);
    expect(value(m, 'derp_packets_received_total', { kind: 'disco' })).toBe(0);
    expect(value(m, 'derp_bytes_received_total')).toBe(500);
    expect(value(m, 'derp_packets_sent_total')).toBe(5);
    expect(value(m, 'derp_bytes_sent_total')).toBe(500);
    expect(value(m, 'derp_build_info', { version: '9.9.9-test', node: process.version })).toBe(1);
    // The malloc this process runs on (jemalloc when derp serve preloaded it).
    expect(value(m, 'derp_build_info', { allocator: runningAllocator() })).toBe(1);
    // prom-client's default process metrics, under their standard names.
    expect(m.has('process_cpu_user_seconds_total')).toBe(true);
    expect(m.has('nodejs_eventloop_lag_seconds')).toBe(true);

    await a.close();
    const after = await scrapeUntil(s.url, (f) => value(f, 'derp_connections') === 1, 'one connection left');
    // b was sent packets by a: it hears PeerGone(Disconnected).
    expect((await b.nextOf('PeerGone')).reason).toBe(0);
    expect(value(await scrape(s.url), 'derp_peer_gone_frames_total', { reason: 'disconnected' })).toBe(1);
    expect(value(after, 'derp_accepts_total')).toBe(2);
  });

  it('a scrape lets the event loop run between slices of metrics, renders what prom-client renders, and scrapes run one at a time', async () => {
    const s = await setup();
    const a = await s.raw();
    const b = await s.raw();
    for (let i = 0; i < 3; i++) a.sendPacket(b.publicKey, Buffer.alloc(10, i));
    for (let i = 0; i < 3; i++) await b.nextOf('RecvPacket');
    const turns = turnCounter();
    const text = await s.metrics.metrics();
    turns.stop();
    const count = s.metrics.registry.getMetricsAsArray().length;
    expect(turns.turn).toBeGreaterThanOrEqual(Math.floor((count - 1) / SCRAPE_METRICS_PER_TURN));
    // The same exposition, metric by metric, as prom-client's own (values aside: CPU, memory, lag move).
    const shape = (t: string): string[] => t.split('\n').filter((l) => l.startsWith('#'));
    expect(shape(text)).toEqual(shape(await s.metrics.registry.metrics()));
    expect(text.endsWith('\n')).toBe(true);
    // Concurrent scrapes (text and the workers' JSON) each see every metric and the same counters.
    const [t1, json, t2] = await Promise.all([s.metrics.metrics(), s.metrics.metricsJson(), s.metrics.metrics()]);
    expect(json.map((m) => m.name)).toEqual(s.metrics.registry.getMetricsAsArray().map((m) => m.name));
    expect(json.find((m) => m.name === 'derp_packets_received_total')?.values.find((v) => v.labels.kind === 'other')?.value).toBe(3);
    for (const t of [t1, t2]) expect(t).toMatch(/^derp_packets_received_total\{kind="other"\} 3$/m);
  });

  it('counts drops by reason and kind: unknown destination, and a slow receiver (queue_head) with its queue depth and wait', async () => {
    const s = await setup({ writeTimeoutMs: 0, sendQueueDepth: 4 });
    const a = await s.raw();
    const nobody = NodePrivateKey.generate().publicKey;
    a.sendPacket(nobody, Buffer.alloc(10));
    a.sendPacket(nobody, DISCO);
    await a.ping();
    let m = await scrape(s.url);
    expect(value(m, 'derp_packets_dropped_total', { reason: 'unknown_dest', kind: 'other' })).toBe(1);
    expect(value(m, 'derp_packets_dropped_total', { reason: 'unknown_dest', kind: 'disco' })).toBe(1);
    expect(value(m, 'derp_bytes_dropped_total', { reason: 'unknown_dest', kind: 'other' })).toBe(10);
    expect(value(m, 'derp_bytes_dropped_total', { reason: 'unknown_dest', kind: 'disco' })).toBe(DISCO.length);
    expect(value(m, 'derp_peer_gone_frames_total', { reason: 'not_here' })).toBeGreaterThanOrEqual(1);
    expect(value(m, 'derp_packets_dropped_total', { reason: 'queue_head' })).toBe(0);

    const b = await s.raw();
    b.pause();
    const payload = Buffer.alloc(MAX_PACKET_SIZE);
    for (let i = 0; i < 400; i++) {
      if (!a.sock!.write(encode.sendPacket(b.publicKey, payload))) await new Promise((r) => a.sock!.once('drain', r));
    }
    await a.ping();
    m = await scrape(s.url);
    expect(value(m, 'derp_packets_dropped_total', { reason: 'queue_head', kind: 'other' })).toBeGreaterThan(0);
    expect(value(m, 'derp_queued_packets')).toBe(4);
    expect(value(m, 'derp_blocked_connections')).toBe(1);
    expect(histogramCount(m, 'derp_queue_wait_seconds')).toBe(0);

    b.onFrame = (f) => f.type === 'RecvPacket';
    b.resume();
    // A scrape reads its metrics over a few event-loop turns: the drain can land between two of them.
    m = await scrapeUntil(s.url, (f) => histogramCount(f, 'derp_queue_wait_seconds') >= 1 && value(f, 'derp_queued_packets') === 0, 'a queue wait observation, the queue empty');
    expect(value(m, 'derp_blocked_connections')).toBe(0);
  });

  it('counts failed handshakes by result (rejected, closed, timeout) and protocol errors', async () => {
    const s = await setup({ handshakeTimeoutMs: 200 });
    const bad = await RawClient.open({ port: s.relay.port });
    cleanups.push(() => bad.destroy());
    await bad.next(); // ServerKey
    bad.write(encode.ping(Buffer.alloc(8))); // not ClientInfo
    await bad.closedPromise;

    const quitter = await RawClient.open({ port: s.relay.port });
    await quitter.next();
    await quitter.close();

    const silent = await RawClient.open({ port: s.relay.port });
    cleanups.push(() => silent.destroy());
    await silent.closedPromise;

    const ok = await s.raw();
    ok.write(Buffer.from([FrameType.NotePreferred, 0, 0, 0, 2, 1, 1])); // NotePreferred must be 1 byte
    await ok.closedPromise;

    const m = await scrapeUntil(s.url, (f) => value(f, 'derp_handshakes_total', { result: 'closed' }) === 1, 'the closed handshake');
    expect(value(m, 'derp_handshakes_total', { result: 'rejected' })).toBe(1);
    expect(value(m, 'derp_handshakes_total', { result: 'timeout' })).toBe(1);
    expect(value(m, 'derp_handshakes_total', { result: 'ok' })).toBe(1);
    expect(histogramCount(m, 'derp_handshake_duration_seconds', { result: 'timeout' })).toBe(1);
    expect(value(m, 'derp_errors_total', { kind: 'handshake' })).toBe(3);
    expect(value(m, 'derp_errors_total', { kind: 'protocol' })).toBe(1);
    expect(value(m, 'derp_pending_handshakes')).toBe(0);
  });

  it('times server pings: our DERPClient answers, the RTT histogram gets observations', async () => {
    const s = await setup({ pingIntervalMs: 50 });
    const c = new DERPClient();
    await c.connect(s.relay.url);
    cleanups.push(() => c.disconnect());
    // The counters and the histogram are read a few event-loop turns apart within one scrape.
    const m = await scrapeUntil(s.url, (f) => histogramCount(f, 'derp_client_rtt_seconds') >= 2 && value(f, 'derp_server_pongs_received_total')! >= 2, 'two RTT observations');
    expect(value(m, 'derp_server_pings_sent_total')).toBeGreaterThanOrEqual(value(m, 'derp_server_pongs_received_total')!);
  });

  it('sends no server pings to a client that cannot answer them, nor once the observer is detached', async () => {
    // Ping and keepalive share one interval and one tick; a due Ping is written before the KeepAlive.
    const s = await setup({ pingIntervalMs: 20, keepAliveMs: 20 });
    const framesUntilKeepAlives = async (c: RawClient, n: number): Promise<string[]> => {
      const seen: string[] = [];
      for (let k = 0; k < n; ) {
        const f = await c.next();
        seen.push(f.type);
        if (f.type === 'KeepAlive') k++;
      }
      return seen;
    };
    const mute = await s.raw({ canAckPings: false });
    const acks = await s.raw();
    expect(await framesUntilKeepAlives(acks, 2)).toContain('Ping');
    expect(await framesUntilKeepAlives(mute, 2)).not.toContain('Ping');

    s.metrics.detach();
    const later = await s.raw();
    expect(await framesUntilKeepAlives(later, 2)).not.toContain('Ping');
  });

  it('reports config reloads and certificate expiry set through its API', async () => {
    const s = await setup();
    let m = await scrape(s.url);
    expect(value(m, 'derp_config_reloads_total', { result: 'ok' })).toBe(0);
    expect(m.get('derp_certificate_expiry_timestamp_seconds')?.metrics ?? []).toEqual([]);
    s.metrics.noteReload('ok');
    s.metrics.noteReload('failed');
    s.metrics.noteReload('failed');
    const notAfter = new Date(Date.now() + 30 * 86_400_000);
    s.metrics.setCertificate(notAfter, 'acme');
    m = await scrape(s.url);
    expect(value(m, 'derp_config_reloads_total', { result: 'ok' })).toBe(1);
    expect(value(m, 'derp_config_reloads_total', { result: 'failed' })).toBe(2);
    expect(value(m, 'derp_config_last_reload_timestamp_seconds', { result: 'failed' })).toBeGreaterThan(0);
    expect(value(m, 'derp_certificate_expiry_timestamp_seconds', { source: 'acme' })).toBe(notAfter.getTime() / 1000);
    const left = value(m, 'derp_certificate_expires_in_seconds')!;
    expect(left).toBeGreaterThan(29 * 86_400);
    expect(left).toBeLessThanOrEqual(30 * 86_400);
    s.metrics.setCertificate(null);
    expect((await scrape(s.url)).get('derp_certificate_expires_in_seconds')?.metrics ?? []).toEqual([]);
  });
});

describe('STUN metrics', () => {
  it('counts STUN requests by result and responses by address family over real UDP', async () => {
    const v6 = await hasIPv6Loopback();
    const s = await setup();
    const stun = new StunServer({ host: '127.0.0.1', port: 0, ipv6: v6, host6: '::1' });
    await stun.start();
    cleanups.push(() => stun.stop());
    s.metrics.attachStun(stun);
    const request = (): Buffer => encodeMessage({ type: MessageType.BindingRequest, transactionId: Buffer.from(Array.from({ length: 12 }, () => Math.floor(Math.random() * 256))), attributes: [] });

    const p4 = await Peer.open('udp4', '127.0.0.1');
    cleanups.push(() => p4.close());
    const done4 = nextHandled(stun, p4.port);
    await p4.send(request(), stun.ports.ipv4!, '127.0.0.1');
    expect((await done4).disposition).toBe('success');
    await p4.next();
    const junk = nextHandled(stun, p4.port);
    await p4.send(Buffer.from('not a stun message at all'), stun.ports.ipv4!, '127.0.0.1');
    await junk;
    if (v6) {
      const p6 = await Peer.open('udp6', '::1');
      cleanups.push(() => p6.close());
      const done6 = nextHandled(stun, p6.port);
      await p6.send(request(), stun.ports.ipv6!, '::1');
      expect((await done6).disposition).toBe('success');
    }
    const m = await scrape(s.url);
    expect(value(m, 'derp_stun_requests_total', { result: 'success' })).toBe(v6 ? 2 : 1);
    expect(value(m, 'derp_stun_requests_total', { result: 'not_stun' })).toBe(1);
    expect(value(m, 'derp_stun_responses_total', { family: 'ipv4' })).toBe(1);
    expect(value(m, 'derp_stun_responses_total', { family: 'ipv6' })).toBe(v6 ? 1 : 0);
  });
});
