/** `derp serve`'s limits through a RelayNode: given to the relay at start, applied to live connections on reload. */
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfigText, resolveServeConfig, type ServeConfig } from '../../src/lib/config/index.js';
import { RelayNode } from '../../src/lib/node/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RawClient } from '../helpers/rawclient.js';

let node: RelayNode | null = null;
const clients: RawClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await node?.stop();
  node = null;
});

const config = (yaml: string): ServeConfig => resolveServeConfig(parseConfigText(`dev: true\naddr: "127.0.0.1:0"\nmetrics:\n  addr: none\nstun:\n  enabled: false\n${yaml}`, 'derp.yaml'));

describe('RelayNode limits', () => {
  it('starts with the configured limits and applies a reload to connected clients, naming only the timeouts as restart-only', async () => {
    let next = config('limits:\n  clientRate: 100000\n  maxConnsPerIp: 5\n  handshakeTimeoutSeconds: 5\n');
    node = await RelayNode.start({ config: next, logger: new MemoryLogger(), loadConfig: async () => next });
    const port = Number(new URL(node.relay.url).port);
    const a = await RawClient.connect({ port });
    clients.push(a);
    expect(a.serverInfo).toMatchObject({ tokenBucketBytesPerSecond: 100_000, tokenBucketBytesBurst: 100_000 });
    expect(node.relay.clientRateOf(a.publicKey)).toEqual({ bytesPerSecond: 100_000, burstBytes: 100_000 });

    next = config(`limits:\n  clientRate: 100000\n  perKey:\n    "nodekey:${a.publicKey.toString('hex')}": { rate: 250000, burst: 500000 }\n  maxConnsPerIp: 1\n  handshakeTimeoutSeconds: 7\n`);
    const r = await node.reload();
    expect(r).toEqual({ ok: true, problems: [], restartNeeded: ['limits.handshakeTimeoutSeconds'] });
    // The live connection has its new bucket; the per-IP cap of 1 now refuses a second client.
    expect(node.relay.clientRateOf(a.publicKey)).toEqual({ bytesPerSecond: 250_000, burstBytes: 500_000 });
    await expect(RawClient.connect({ port })).rejects.toThrow();
    expect(node.relay.stats().connectionsRefused.per_ip).toBe(1);
    await a.ping();
    expect(node.config.limits.handshakeTimeoutSeconds).toBe(5);
    expect(node.config.limits.maxConnsPerIp).toBe(1);
  });
});
