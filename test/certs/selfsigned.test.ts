import { describe, expect, it } from 'vitest';
import { createCertSource, SelfSignedCertSource } from '../../src/lib/certs/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { servedSha256 } from './fixtures.js';

describe('self-signed certificate source', () => {
  it('serves one generated certificate whose CertName pins it, and keeps it on reload', async () => {
    const src = createCertSource({ selfSigned: '127.0.0.1' });
    expect(src).toBeInstanceOf(SelfSignedCertSource);
    await src.start();
    const m = src.current();
    expect((src as SelfSignedCertSource).certName).toBe(`sha256-raw:${m.sha256}`);
    expect(m.names).toEqual(['127.0.0.1']);
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', certSource: src });
    await relay.start();
    try {
      expect(await servedSha256(relay.port)).toBe(m.sha256);
      expect(await src.reload()).toEqual({ changed: false });
      expect(await servedSha256(relay.port)).toBe(m.sha256);
    } finally {
      await relay.stop({ restarting: false });
      await src.close();
    }
  });
});
