// netcheck's HTTPS fallback against a TLS relay pinned by sha256-raw (no STUN answers).
import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DERPMap, DERPServer } from '../../src/lib/derpmap/types.js';
import { runNetcheck } from '../../src/lib/netcheck/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/keys.js';
import { RelayServer, generateSelfSigned } from '../../src/lib/server/index.js';

describe('netcheck HTTPS fallback over TLS', () => {
  let relay: RelayServer;
  let certName: string;
  let silentPort: number;
  const silent = createSocket('udp4');
  beforeAll(async () => {
    const cert = await generateSelfSigned('127.0.0.1');
    certName = cert.certName;
    relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', tls: { cert: cert.certPem, key: cert.keyPem } });
    await relay.start();
    // A UDP port that swallows STUN: the region must fall back to HTTPS.
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    silentPort = silent.address().port;
  });
  afterAll(async () => {
    silent.close();
    await relay.stop({ restarting: false });
  });

  const mapWith = (pin: string): DERPMap => {
    const node: DERPServer = {
      id: '950a',
      hostname: '127.0.0.1',
      ipv4: '127.0.0.1',
      ipv6: 'none',
      stunPort: silentPort,
      derpPort: relay.port,
      region: 'tls',
      regionCode: 950,
      canStun: true,
      canRelay: true,
      certName: pin,
    };
    return { regions: { 950: { regionId: 950, regionCode: 'tls', regionName: 'TLS relay', nodes: [node] } } };
  };
  const fast = { ipv6: false, captivePortal: 'off', stunTimeoutMs: 300, reportTimeoutMs: 3000 } as const;

  it('times /derp/latency-check over TLS when the pin matches', async () => {
    const rep = await runNetcheck(mapWith(certName), fast);
    expect(rep.udp).toBe(false);
    expect(rep.regions[0]).toMatchObject({ regionId: 950, method: 'https', node: '950a' });
    expect(rep.regionLatency[950]).toBeGreaterThan(0);
    expect(rep.preferredDERP).toBe(950);
  });

  it('refuses a relay whose certificate does not match the pin', async () => {
    const rep = await runNetcheck(mapWith(`sha256-raw:${'0'.repeat(64)}`), fast);
    expect(rep.regions[0]!.method).toBeNull();
    expect(rep.regions[0]!.errors.join(' ')).toMatch(/does not match the pinned/);
    expect(rep.preferredDERP).toBe(0);
  });
});
