import { createHash } from 'node:crypto';
import * as tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { BaseCertSource, validateCertPair, type CertSource, type ChallengeResponder, type ReloadResult } from '../../src/lib/certs/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RawClient } from '../helpers/rawclient.js';
import { makePair, servedSha256, type TestPair } from './fixtures.js';

/** A source with a fixed pair and a hand-driven TLS-ALPN-01 challenge table. */
class StubSource extends BaseCertSource implements CertSource {
  readonly mode = 'acme' as const;
  readonly alpn = new Map<string, { cert: string; key: string }>();
  readonly challenges: ChallengeResponder = {
    http01: () => undefined,
    tlsAlpnPending: () => this.alpn.size > 0,
    tlsAlpn01: (name) => this.alpn.get(name),
  };
  constructor(private readonly pair: TestPair) {
    super();
  }
  start(): Promise<void> {
    this.material = { ...validateCertPair(this.pair.cert, this.pair.key), cert: this.pair.cert, key: this.pair.key, origin: 'stub' };
    return Promise.resolve();
  }
  swap(p: TestPair): void {
    this.setMaterial({ ...validateCertPair(p.cert, p.key), cert: p.cert, key: p.key, origin: 'stub' });
  }
  reload(): Promise<ReloadResult> {
    return Promise.resolve({ changed: false });
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function alpnDial(port: number, servername: string, protocols: string[]): Promise<{ sha256: string; alpn: string | false }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, ALPNProtocols: protocols, rejectUnauthorized: false }, () => {
      const r = { sha256: createHash('sha256').update(s.getPeerCertificate().raw).digest('hex'), alpn: s.alpnProtocol ?? false };
      s.destroy();
      resolve(r);
    });
    s.once('error', reject);
  });
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup() {
  const main = await makePair({ name: 'relay.example.com' });
  const source = new StubSource(main);
  await source.start();
  const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', certSource: source, logger: new MemoryLogger() });
  await relay.start();
  cleanups.push(() => relay.stop({ restarting: false }));
  return { main, source, relay };
}

describe('relay TLS: certificate source hooks', () => {
  it('answers acme-tls/1 for a pending name with the challenge certificate, and only that', async () => {
    const { main, source, relay } = await setup();
    expect(main.sha256).toBe(source.current().sha256);
    const challenge = await makePair({ name: 'relay.example.com' });
    // No challenge pending: an acme-tls/1 hello goes to the normal TLS path, which refuses the protocol.
    await expect(alpnDial(relay.port, 'relay.example.com', ['acme-tls/1'])).rejects.toThrow(/no application protocol/);
    source.alpn.set('relay.example.com', { cert: challenge.cert, key: challenge.key });
    expect(await alpnDial(relay.port, 'relay.example.com', ['acme-tls/1'])).toEqual({ sha256: challenge.sha256, alpn: 'acme-tls/1' });
    // While it is pending, ordinary clients still get the real certificate and a working relay.
    expect(await alpnDial(relay.port, 'relay.example.com', ['http/1.1'])).toEqual({ sha256: main.sha256, alpn: 'http/1.1' });
    await expect(alpnDial(relay.port, 'other.example.com', ['acme-tls/1'])).rejects.toThrow(/no application protocol/);
    const c = await RawClient.connect({ port: relay.port, ca: main.cert });
    await c.ping();
    c.destroy();
  });

  it('swaps the served certificate on change without dropping connections; setTls does the same', async () => {
    const { source, relay } = await setup();
    const c = await RawClient.connect({ port: relay.port, ca: source.current().cert });
    cleanups.push(async () => c.destroy());
    const next = await makePair();
    source.swap(next);
    expect(await servedSha256(relay.port)).toBe(next.sha256);
    const third = await makePair();
    relay.setTls({ cert: third.cert, key: third.key });
    expect(await servedSha256(relay.port)).toBe(third.sha256);
    expect(() => relay.setTls({ cert: third.cert, key: 'nope' })).toThrow(/TLS certificate\/key rejected/);
    expect(await servedSha256(relay.port)).toBe(third.sha256);
    await c.ping();
    expect(relay.url).toMatch(/^https:/);
  });
});
