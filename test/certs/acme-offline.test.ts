/** ACME behaviour that needs no CA: an unreachable directory, the retry schedule, the placeholder. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AcmeCertSource, retryDelayMs, type CertEvent } from '../../src/lib/certs/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { freePort } from '../helpers/pebble.js';
import { servedSha256 } from './fixtures.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('ACME without a CA', () => {
  it('retries with doubling, jittered, capped delays', () => {
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, 60_000, 6 * 3600_000, 0.5))).toEqual([60_000, 120_000, 240_000, 480_000]);
    expect(retryDelayMs(1, 60_000, 6 * 3600_000, 0)).toBe(30_000);
    expect(retryDelayMs(1, 60_000, 6 * 3600_000, 0.999)).toBe(89_940);
    expect(retryDelayMs(40, 60_000, 6 * 3600_000, 0.999)).toBe(6 * 3600_000);
    expect(retryDelayMs(9, 60_000, 6 * 3600_000, 0)).toBe(7_680_000);
    expect(retryDelayMs(10, 60_000, 6 * 3600_000, 0)).toBe(3 * 3600_000); // capped first, then jittered
  });

  it('serves a placeholder, reports an unreachable CA precisely, and keeps retrying', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'derp-acme-off-'));
    const port = await freePort(); // nothing listens here
    const logger = new MemoryLogger();
    const source = new AcmeCertSource({ hostname: 'relay.example.com', directory: `https://127.0.0.1:${port}/dir`, certDir: join(dir, 'certs'), httpRetries: 0, retryBaseMs: 20, retryMaxMs: 40 }, logger);
    const failures: CertEvent[] = [];
    const third = new Promise<void>((resolve) =>
      source.on('event', (e) => {
        if (e.type !== 'failed') return;
        failures.push(e);
        if (failures.length === 3) resolve();
      }),
    );
    await source.start();
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', certSource: source, logger });
    await relay.start();
    cleanups.push(async () => {
      await relay.stop({ restarting: false });
      await source.close();
      await rm(dir, { recursive: true, force: true });
    });
    await third;
    expect(failures.map((e) => e.type === 'failed' && e.attempt)).toEqual([1, 2, 3]);
    const f = failures[0]!;
    expect(f.type === 'failed' && f.reason).toMatch(new RegExp(`ACME order for relay.example.com at https://127.0.0.1:${port}/dir: cannot reach the CA: .*ECONNREFUSED`));
    expect(logger.entries.some((l) => l.level === 'warn' && l.msg === 'ACME issuance failed' && l.fields.attempt === 1)).toBe(true);
    expect(source.issued).toBe(false);
    const placeholder = source.current();
    expect(placeholder.origin).toBe('placeholder');
    expect(await servedSha256(relay.port)).toBe(placeholder.sha256);
    const closed = source.whenIssued();
    await source.close();
    await expect(closed).rejects.toMatchObject({ code: 'DERP_ERR_ACME' });
  });
});
