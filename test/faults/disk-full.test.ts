/**
 * Fault: the disk is full (a real ENOSPC: a tiny tmpfs, filled). Key files and the ACME certificate
 * store write to a temporary name and rename it into place, so a failed write leaves neither a partial
 * file nor a temporary one, names the file in a typed error, and keeps what was there before.
 */
import * as acme from 'acme-client';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AcmeCertSource, type CertEvent } from '../../src/lib/certs/index.js';
import { CertStore } from '../../src/lib/certs/store.js';
import { CertificateError } from '../../src/lib/errors.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { Port80Server } from '../../src/lib/server/port80.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { makePair, servedSha256 } from '../certs/fixtures.js';
import { flatCliText, runCli } from '../helpers/cli.js';
import { freePort, havePebble, startLoopbackDns, startPebble } from '../helpers/pebble.js';
import { RawClient } from '../helpers/rawclient.js';
import { canaryWorks } from '../server/helpers.js';
import { tinyDisk, type TinyDisk } from './helpers.js';

const HOST = 'relay.example.com';

let disk: TinyDisk | null = null;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await disk?.close();
  disk = null;
});

/** Everything in the disk's directory but the filler. */
async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n !== '.filler').sort();
}

describe('fault: disk full', () => {
  it('derp keygen --out and derp serve --key-file: exit 2 naming the file and ENOSPC, nothing left behind', async () => {
    disk = await tinyDisk(16);
    await disk.fill(0);
    const keyA = join(disk.dir, 'keygen.key');
    const keyB = join(disk.dir, 'serve.key');
    const [gen, srv] = await Promise.all([
      runCli(['keygen', '--out', keyA]),
      runCli(['serve', '--dev', '--addr', '127.0.0.1:0', '--key-file', keyB, '--no-stun', '--metrics-addr', 'none']),
    ]);
    expect(gen.code).toBe(2);
    expect(flatCliText(gen.stderr)).toContain(`${keyA}: cannot write: ENOSPC`);
    expect(srv.code).toBe(2);
    expect(flatCliText(srv.stderr)).toContain(`${keyB}: cannot write: ENOSPC`);
    expect(srv.stdout).not.toMatch(/listening/);
    expect(await leftovers(disk.dir)).toEqual([]);
  });

  it('the certificate store: a renewal that does not fit fails naming the file and keeps the old pair whole', async () => {
    disk = await tinyDisk(32);
    const store = new CertStore(join(disk.dir, 'certs'));
    await store.init();
    const old = await makePair({ name: HOST });
    await store.saveCert(HOST, { cert: old.cert, key: old.key, directory: 'https://ca.example/dir' });
    // A chain longer than one 4 KiB page, with one page free: the new key fits, the new chain does not.
    const next = await makePair({ name: HOST });
    const chain = [next.cert, ...(await Promise.all(Array.from({ length: 11 }, async () => (await makePair()).cert)))].join('');
    expect(chain.length).toBeGreaterThan(4096);
    await disk.fill(1);
    const err = await store.saveCert(HOST, { cert: chain, key: next.key, directory: 'https://ca.example/dir' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CertificateError);
    expect((err as CertificateError).file).toBe(store.paths(HOST).cert);
    expect((err as CertificateError).message).toMatch(/cannot write: ENOSPC/);
    // The old certificate, key and record, as they were: never a new key beside the old certificate.
    expect(await store.loadCert(HOST)).toEqual({ cert: old.cert, key: old.key, directory: 'https://ca.example/dir' });
    expect(await leftovers(store.dir)).toEqual([`${HOST}.crt`, `${HOST}.json`, `${HOST}.key`]);
  });
});

describe.skipIf(!havePebble)(havePebble ? 'fault: disk full at ACME renewal' : 'fault: disk full at ACME renewal (SKIPPED: /usr/bin/pebble is not installed)', () => {
  let dns: Awaited<ReturnType<typeof startLoopbackDns>>;
  beforeAll(async () => {
    dns = await startLoopbackDns();
  });
  afterAll(async () => {
    await dns?.close();
  });

  it('the running relay keeps serving the old certificate, the canary relays, and the renewal lands once there is room', async () => {
    const httpPort = await freePort();
    const tlsPort = await freePort();
    const pebble = await startPebble({ httpPort, tlsPort, dnsPort: dns.port, validitySeconds: 30 * 86_400 });
    cleanups.push(() => pebble.stop());
    disk = await tinyDisk(32);
    const certDir = join(disk.dir, 'certs');
    // A stored certificate from this CA, already due (renewFraction 1 %): start() renews at once.
    const store = new CertStore(certDir);
    await store.init();
    const old = await makePair({ name: HOST });
    await store.saveCert(HOST, { cert: old.cert, key: old.key, directory: pebble.directory });
    await store.writePrivate(store.accountKeyPath(), (await acme.crypto.createPrivateEcdsaKey()).toString());
    await disk.fill(0);

    const logger = new MemoryLogger();
    const source = new AcmeCertSource(
      { hostname: HOST, directory: pebble.directory, directoryCa: pebble.listenerCa, certDir, challenges: ['http-01'], renewFraction: 0.01, httpRetries: 0, retryBaseMs: 100, retryMaxMs: 200, pollMinMs: 50, pollMaxMs: 200 },
      logger,
    );
    const events: CertEvent[] = [];
    source.on('event', (e) => events.push(e));
    const failed = new Promise<CertEvent>((resolve) => source.on('event', (e) => e.type === 'failed' && resolve(e)));
    const renewed = new Promise<CertEvent>((resolve) => source.on('event', (e) => e.type === 'renewed' && resolve(e)));
    const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: `127.0.0.1:${tlsPort}`, certSource: source, logger });
    const port80 = new Port80Server({ host: '127.0.0.1', port: httpPort, challenges: source.challenges, logger });
    cleanups.push(async () => {
      await port80.stop();
      await relay.stop({ restarting: false });
      await source.close();
    });
    await source.start();
    await relay.start();
    await port80.start();
    const a = await RawClient.connect({ port: relay.port, ca: old.cert });
    const b = await RawClient.connect({ port: relay.port, ca: old.cert });
    cleanups.push(async () => (a.destroy(), b.destroy()));
    await canaryWorks(a, b, 'before');

    const f = await Promise.race([failed, renewed]);
    expect(f.type === 'failed' && f.reason).toContain(`${store.paths(HOST).key}: cannot write: ENOSPC`);
    expect(logger.entries.some((l) => l.msg === 'ACME renewal failed; the current certificate keeps serving' && String(l.fields.reason).includes('ENOSPC'))).toBe(true);
    expect(source.current().sha256).toBe(old.sha256);
    expect(await servedSha256(relay.port, { servername: HOST })).toBe(old.sha256);
    expect(await store.loadCert(HOST)).toEqual({ cert: old.cert, key: old.key, directory: pebble.directory });
    expect(await leftovers(certDir)).toEqual(['account.key', `${HOST}.crt`, `${HOST}.json`, `${HOST}.key`]);
    await canaryWorks(a, b, 'during');

    await disk.unfill();
    await renewed;
    const now = source.current();
    expect(now.sha256).not.toBe(old.sha256);
    expect(await servedSha256(relay.port, { servername: HOST, ca: [await pebble.root()] })).toBe(now.sha256);
    expect((await store.loadCert(HOST))?.cert).toBe(now.cert);
    // The connections made under the old certificate still relay.
    await canaryWorks(a, b, 'after');
    expect(relay.stats().currentConnections).toBe(2);
    expect(events.filter((e) => e.type === 'failed').length).toBeGreaterThanOrEqual(1);
  });
});
