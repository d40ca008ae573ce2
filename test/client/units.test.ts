// Pure parts of the client: backoff, the bounded queue, dial-target resolution.
import { describe, expect, it } from 'vitest';
import { BoundedQueue, DEFAULT_RECONNECT_POLICY, backoffDelay, reconnectPolicy, resolveTarget, wsUrl } from '../../src/lib/client/index.js';
import { ConfigError } from '../../src/lib/errors.js';

describe('backoffDelay', () => {
  it('is min(n² × 10 ms, 5 s) × U[0.5, 1.5)', () => {
    expect(backoffDelay(DEFAULT_RECONNECT_POLICY, 1, () => 0)).toBe(5);
    expect(backoffDelay(DEFAULT_RECONNECT_POLICY, 3, () => 0.5)).toBe(90);
    expect(backoffDelay(DEFAULT_RECONNECT_POLICY, 100, () => 0)).toBe(2500);
    expect(backoffDelay(DEFAULT_RECONNECT_POLICY, 100, () => 0.999999)).toBeLessThan(7500);
  });
  it('honours a custom delay function and partial policies', () => {
    expect(backoffDelay(reconnectPolicy({ delay: (n) => n * 7 }), 3)).toBe(21);
    expect(backoffDelay(reconnectPolicy({ baseMs: 1, jitter: [1, 1] }), 4)).toBe(16);
  });
});

describe('BoundedQueue', () => {
  it('drops the oldest and counts drops', async () => {
    const q = new BoundedQueue<number>(3);
    for (let i = 0; i < 5; i++) q.push(i);
    expect(q.dropped).toBe(2);
    expect(q.drain()).toEqual([2, 3, 4]);
  });
  it('hands items to waiting consumers and ends them', async () => {
    const q = new BoundedQueue<number>(2);
    const it1 = q.iterate();
    const p = it1.next();
    q.push(7);
    expect(await p).toEqual({ value: 7, done: false });
    const p2 = it1.next();
    q.end();
    expect(await p2).toEqual({ value: undefined, done: true });
  });
  it('rejects a waiting consumer on abort', async () => {
    const q = new BoundedQueue<number>(2);
    const ac = new AbortController();
    const p = q.next(ac.signal);
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
    q.push(1);
    expect(q.length).toBe(1);
  });
});

describe('resolveTarget', () => {
  it('maps URLs and defaults the path to /derp', () => {
    const t = resolveTarget('http://127.0.0.1:1234');
    expect(t.url.href).toBe('http://127.0.0.1:1234/derp');
    expect(t.port).toBe(1234);
    expect(t.secure).toBe(false);
    expect(t.dialAddrs).toEqual(['127.0.0.1']);
    expect(wsUrl(t)).toBe('ws://127.0.0.1:1234/derp');
    const w = resolveTarget('wss://[::1]/derp');
    expect(w.secure).toBe(true);
    expect(w.port).toBe(443);
    expect(w.dialAddrs).toEqual(['::1']);
    expect(w.serverName).toBe('::1');
  });
  it('uses a map node: explicit IPs first, SNI = hostname, certName and insecure', () => {
    const t = resolveTarget({
      id: 'n1', hostname: 'derp.example.com', ipv4: '192.0.2.1', ipv6: 'none', stunPort: 3478, derpPort: 8443,
      region: 'x', regionCode: 1, canStun: true, canRelay: true, certName: 'sha256-raw:' + 'ab'.repeat(32), insecureForTests: false,
    });
    expect(t.url.href).toBe('https://derp.example.com:8443/derp');
    expect(t.dialAddrs).toEqual(['192.0.2.1']);
    expect(t.serverName).toBe('derp.example.com');
    expect(t.certName).toBe('sha256-raw:' + 'ab'.repeat(32));
  });
  it('rejects bad URLs and malformed pins', () => {
    expect(() => resolveTarget('ftp://x/derp')).toThrow(ConfigError);
    expect(() => resolveTarget('not a url')).toThrow(ConfigError);
    expect(() => resolveTarget('https://x/derp', { certName: 'sha256-raw:abc' })).toThrow(ConfigError);
  });
});
