import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualCertSource, createCertSource, type CertEvent } from '../../src/lib/certs/index.js';
import { CertificateError, ConfigError } from '../../src/lib/errors.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RawClient } from '../helpers/rawclient.js';
import { days, makePair, servedSha256, type TestPair } from './fixtures.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The next event of this type (and matching `pred`): a pair replaced in two steps may be refused mid-way for another reason first. */
function nextEvent(src: ManualCertSource, type: CertEvent['type'], pred: (e: CertEvent) => boolean = () => true): Promise<CertEvent> {
  return new Promise((resolve) => {
    const on = (e: CertEvent) => {
      if (e.type !== type || !pred(e)) return;
      src.off('event', on);
      resolve(e);
    };
    src.on('event', on);
  });
}

/** Replaces a file the way editors and certbot do: write elsewhere, rename over. */
async function replace(file: string, data: string): Promise<void> {
  await writeFile(`${file}.new`, data);
  await rename(`${file}.new`, file);
}

async function setup(first: TestPair) {
  const dir = await mkdtemp(join(tmpdir(), 'derp-manual-'));
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  await writeFile(certFile, first.cert);
  await writeFile(keyFile, first.key);
  const logger = new MemoryLogger();
  const source = new ManualCertSource({ certFile, keyFile, debounceMs: 20 }, logger);
  await source.start();
  const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', certSource: source, logger });
  await relay.start();
  cleanups.push(async () => {
    await relay.stop({ restarting: false });
    await source.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, certFile, keyFile, source, relay, logger };
}

describe('manual certificates', () => {
  it('serves a replaced pair to new connections while an established DERP connection stays up', async () => {
    const first = await makePair();
    const { certFile, keyFile, source, relay } = await setup(first);
    expect(await servedSha256(relay.port)).toBe(first.sha256);
    const client = await RawClient.connect({ port: relay.port, ca: first.cert });
    cleanups.push(async () => client.destroy());

    const second = await makePair();
    const loaded = nextEvent(source, 'loaded');
    // Key first, then the certificate: the in-between state (new key, old cert) must not win.
    await replace(keyFile, second.key);
    await replace(certFile, second.cert);
    expect((await loaded).type).toBe('loaded');
    expect(source.current().sha256).toBe(second.sha256);
    expect(await servedSha256(relay.port)).toBe(second.sha256);
    await client.ping(); // the connection made under the old certificate still relays
  });

  it.each([
    ['garbage', async (p: TestPair) => ({ cert: 'this is not PEM\n', key: p.key }), /no PEM "CERTIFICATE" block/],
    ['a mismatched key', async (p: TestPair) => ({ cert: p.cert, key: (await makePair()).key }), /private key does not match/],
    ['an expired certificate', async () => makePair({ notBefore: new Date(Date.now() - days(9)), notAfter: new Date(Date.now() - days(1)) }), /expired at/],
  ])('refuses %s with the reason and keeps serving the old pair', async (_name, make, reason) => {
    const first = await makePair();
    const { certFile, keyFile, source, relay, logger } = await setup(first);
    const bad = await make(first);
    const refused = nextEvent(source, 'refused', (e) => e.type === 'refused' && reason.test(e.reason));
    await replace(keyFile, bad.key);
    await replace(certFile, bad.cert);
    const e = await refused;
    expect(e.type === 'refused' && e.reason).toMatch(reason);
    expect(logger.entries.some((l) => l.level === 'warn' && reason.test(String(l.fields.reason)))).toBe(true);
    expect(source.current().sha256).toBe(first.sha256);
    expect(await servedSha256(relay.port)).toBe(first.sha256);
    // reload() (SIGHUP) says the same, with a typed error.
    const r = await source.reload();
    expect(r.changed).toBe(false);
    expect(r.error).toBeInstanceOf(CertificateError);
  });

  it('reload() picks up a change without the watcher, and start() refuses a bad first pair', async () => {
    const first = await makePair();
    const dir = await mkdtemp(join(tmpdir(), 'derp-manual-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const certFile = join(dir, 'c.pem');
    const keyFile = join(dir, 'k.pem');
    await writeFile(certFile, first.cert);
    await writeFile(keyFile, first.key);
    const src = new ManualCertSource({ certFile, keyFile, watch: false });
    await src.start();
    const second = await makePair();
    await writeFile(certFile, second.cert);
    await writeFile(keyFile, second.key);
    const changed = new Promise((resolve) => src.once('change', resolve));
    expect(await src.reload()).toEqual({ changed: true });
    await changed;
    expect(src.current().sha256).toBe(second.sha256);
    expect(await src.reload()).toEqual({ changed: false });
    await src.close();

    const missing = new ManualCertSource({ certFile: join(dir, 'nope.pem'), keyFile, watch: false });
    await expect(missing.start()).rejects.toMatchObject({ code: 'DERP_ERR_CERT', reason: 'unreadable', file: join(dir, 'nope.pem') });
  });

  it('createCertSource picks the mode from the flags and names what is missing', () => {
    expect(createCertSource({ tlsCert: 'c', tlsKey: 'k' }).mode).toBe('manual');
    expect(createCertSource({ selfSigned: '203.0.113.7' }).mode).toBe('self-signed');
    expect(createCertSource({ certMode: 'acme', hostname: 'relay.example.com', certDir: '/tmp/x' }).mode).toBe('acme');
    expect(() => createCertSource({ certMode: 'manual', tlsCert: 'c' })).toThrow(/needs both --tls-cert and --tls-key/);
    expect(() => createCertSource({ certMode: 'acme' })).toThrow(/needs --hostname/);
    expect(() => createCertSource({ certMode: 'acme', hostname: 'h.example', acmeStaging: true, acmeDirectory: 'https://ca/dir' })).toThrow(/not both/);
    expect(() => createCertSource({ certMode: 'acme', hostname: 'h.example', acmeDirectory: 'http://ca/dir' })).toThrow(/https:\/\/ URL/);
    expect(() => createCertSource({ certMode: 'acme', hostname: 'h.example', tlsCert: 'c' })).toThrow(/--tls-cert does not apply to --cert-mode acme/);
    expect(() => createCertSource({ certMode: 'bogus' as never })).toThrow(ConfigError);
    expect(() => createCertSource({ certMode: 'acme', hostname: '../etc', certDir: '/tmp/x' })).toThrow(CertificateError);
  });
});
