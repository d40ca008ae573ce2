/**
 * warmUpHandshakes: before it listens the relay handshakes with a private loopback copy of itself; its
 * own clients, counters and crypto thread are as if it had not, and a warm-up that fails only warns.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/lib/errors.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { warmUpAgainst } from '../../src/lib/server/warmup.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { startRelay, type Fixture } from './fixture.js';
import { canaryWorks, tcp } from './helpers.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

describe('RelayServer warm-up', () => {
  it('makes its handshakes before listening and leaves the relay as if it had not', async () => {
    f = await startRelay({ warmUpHandshakes: 100, cryptoThread: true });
    expect(f.server.warmUpResult).toMatchObject({ handshakes: 100 });
    expect(f.server.warmUpResult?.error).toBeUndefined();
    expect(f.logger.entries).toContainEqual(expect.objectContaining({ level: 'debug', msg: 'warmed up', fields: expect.objectContaining({ handshakes: 100 }) }));
    // None of the warm-up's connections are this relay's.
    const before = f.server.stats();
    expect(before).toMatchObject({ accepts: 0, clients: 0, handshakesOnThread: 0, httpErrors: 0 });
    // The crypto thread it lent the warm-up still opens this relay's handshakes.
    const a = await f.connect();
    const b = await f.connect();
    await canaryWorks(a, b, 'after the warm-up');
    expect(f.server.stats()).toMatchObject({ accepts: 2, clients: 2, handshakesOnThread: 2, handshakeThreadFailures: 0 });
  });

  it('warms a TLS relay too (over plain TCP: its DERP code is the same), which then serves TLS', async () => {
    f = await startRelay({ warmUpHandshakes: 20, withTls: true });
    expect(f.server.warmUpResult).toEqual({ handshakes: 20, ms: expect.any(Number) });
    const a = await f.connect();
    const b = await f.connect();
    await canaryWorks(a, b, 'TLS after the warm-up');
  });

  it('does none by default', async () => {
    f = await startRelay();
    expect(f.server.warmUpResult).toBeNull();
    expect(f.logger.entries.find((e) => e.msg === 'warmed up')).toBeUndefined();
  });

  it('refuses a count that is not a whole number ≥ 0', () => {
    for (const bad of [-1, 1.5, Number.NaN]) {
      expect(() => new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', warmUpHandshakes: bad })).toThrow(ConfigError);
    }
    expect(() => new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', warmUpHandshakes: -1 })).toThrow(/warmUpHandshakes must be a whole number ≥ 0, not -1/);
  });

  it('a warm-up that fails warns and the relay still starts and serves', async () => {
    // A 1 ms handshake deadline: the private copy closes the warm-up's handshakes, as a broken one would.
    f = await startRelay({ warmUpHandshakes: 200, handshakeTimeoutMs: 1 });
    const w = f.server.warmUpResult;
    expect(w?.error).toBeDefined();
    expect(w!.handshakes).toBeLessThan(200);
    const warn = f.logger.entries.find((e) => e.msg === 'warm-up stopped early; the relay starts colder');
    expect(warn).toMatchObject({ level: 'warn', fields: { reason: w!.error, handshakes: w!.handshakes } });
    const { closed } = await tcp(f.server.port);
    await closed;
    expect(f.server.stats().accepts).toBe(0);
    expect(f.server.healthCheck()).toMatchObject({ listening: true });
  });

  it('stop() during the warm-up cuts it short: start() fails, nothing listens', async () => {
    const logger = new MemoryLogger();
    const server = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', logger, warmUpHandshakes: 10_000, cryptoThread: true });
    const started = server.start().then(() => null, (err: unknown) => err);
    // One warm-up, whoever asks.
    expect(server.warmUp()).toBe(server.warmUp());
    await expect(server.start()).rejects.toThrow(/already started/);
    await server.stop({ restarting: false });
    expect(await started).toMatchObject({ code: 'DERP_ERR_SERVER', message: 'relay stopped while it warmed up' });
    expect(server.warmUpResult).toMatchObject({ error: 'the relay stopped' });
    expect(server.warmUpResult!.handshakes).toBeLessThan(10_000);
    expect(server.healthCheck()).toMatchObject({ listening: false });
  });

  it('stops at its time cap, cutting what is in flight', async () => {
    f = await startRelay();
    const r = await warmUpAgainst({ port: f.server.port, serverKey: f.server.publicKey, count: 1_000_000, timeoutMs: 10_000, maxMs: 200 });
    expect(r.error).toBe("the warm-up's 200 ms were up");
    expect(r.handshakes).toBeLessThan(1_000_000);
  });

  it('stops at the first failure, with its reason', async () => {
    f = await startRelay();
    // Another relay's key: the ClientInfo box does not open, so the relay closes the connection.
    const other = NodePrivateKey.generate().publicKey;
    const r = await warmUpAgainst({ port: f.server.port, serverKey: other, count: 50, timeoutMs: 10_000 });
    expect(r).toMatchObject({ handshakes: 0, error: 'the relay closed a warm-up handshake' });
  });
});
