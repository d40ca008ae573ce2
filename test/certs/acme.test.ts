/** ACME end to end against Debian's pebble on loopback: HTTP-01, TLS-ALPN-01, restart, renewal, CA down. */
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AcmeCertSource, type AcmeOptions, type CertEvent } from '../../src/lib/certs/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { Port80Server } from '../../src/lib/server/port80.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import * as tls from 'node:tls';
import { freePort, havePebble, startLoopbackDns, startPebble, type Pebble } from '../helpers/pebble.js';
import { servedSha256 } from './fixtures.js';

const HOST = 'relay.example.com';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Status line of a DERP upgrade over TLS verified against `root` for HOST. */
function derpUpgradeStatus(port: number, root: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: HOST, ca: [root], ALPNProtocols: ['http/1.1'] }, () => {
      s.write(`GET /derp HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n`);
    });
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        s.destroy();
        resolve(buf.slice(0, i));
      }
    });
    s.once('error', reject);
  });
}

function waitEvent(src: AcmeCertSource, pred: (e: CertEvent) => boolean): Promise<CertEvent> {
  return new Promise((resolve) => {
    const on = (e: CertEvent) => {
      if (!pred(e)) return;
      src.off('event', on);
      resolve(e);
    };
    src.on('event', on);
  });
}

describe.skipIf(!havePebble)(havePebble ? 'ACME against pebble' : 'ACME against pebble (SKIPPED: /usr/bin/pebble is not installed; apt-get install pebble)', () => {
  let dns: Awaited<ReturnType<typeof startLoopbackDns>>;
  beforeAll(async () => {
    dns = await startLoopbackDns();
  });
  afterAll(async () => {
    await dns?.close();
  });

  /** pebble (validating against our ports), the relay on its tlsPort and the port-80 listener on its httpPort. */
  async function rig(o: { challenges: AcmeOptions['challenges']; validitySeconds?: number; certDir?: string; port80?: boolean }) {
    const httpPort = await freePort();
    const tlsPort = await freePort();
    const pebble = await startPebble({ httpPort, tlsPort, dnsPort: dns.port, validitySeconds: o.validitySeconds });
    const parent = await mkdtemp(join(tmpdir(), 'derp-acme-'));
    const certDir = o.certDir ?? join(parent, 'certs');
    const state = { pebble };
    cleanups.push(async () => {
      await state.pebble.stop();
      await rm(parent, { recursive: true, force: true });
    });
    const open = async (p: Pebble = state.pebble) => {
      const logger = new MemoryLogger();
      const source = new AcmeCertSource(
        {
          hostname: HOST,
          email: 'ops@example.com',
          directory: p.directory,
          directoryCa: p.listenerCa,
          certDir,
          challenges: o.challenges,
          httpRetries: 0,
          retryBaseMs: 200,
          retryMaxMs: 1000,
          pollMinMs: 100,
          pollMaxMs: 500,
        },
        logger,
      );
      const events: CertEvent[] = [];
      source.on('event', (e) => events.push(e));
      const issued = waitEvent(source, (e) => e.type === 'issued' || e.type === 'loaded');
      await source.start();
      const relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: `127.0.0.1:${tlsPort}`, certSource: source, logger });
      await relay.start();
      const port80 = o.port80 === false ? null : new Port80Server({ host: '127.0.0.1', port: httpPort, challenges: source.challenges, logger });
      await port80?.start();
      const close = async () => {
        await port80?.stop();
        await relay.stop({ restarting: false });
        await source.close();
      };
      cleanups.push(close);
      return { source, relay, logger, events, issued, close };
    };
    return { state, certDir, httpPort, tlsPort, open };
  }

  it('issues over HTTP-01, stores it privately, serves it, and reuses it after a restart without a new order', async () => {
    const r = await rig({ challenges: ['http-01'] });
    const a = await r.open();
    expect(a.source.current().origin).toBe('placeholder');
    const e = await a.issued;
    expect(e.type).toBe('issued');
    const m = a.source.current();
    expect(m.names).toEqual([HOST]);
    expect(a.logger.entries.some((l) => l.msg === 'answered HTTP-01 validation')).toBe(true);
    // A real TLS client that trusts only pebble's root gets the issued certificate for the name.
    const root = await r.state.pebble.root();
    expect(await servedSha256(a.relay.port, { servername: HOST, ca: [root] })).toBe(m.sha256);

    expect((await stat(r.certDir)).mode & 0o777).toBe(0o700);
    const files = (await readdir(r.certDir)).sort();
    expect(files).toEqual(['account.key', `${HOST}.crt`, `${HOST}.json`, `${HOST}.key`]);
    for (const f of files) expect((await stat(join(r.certDir, f))).mode & 0o777).toBe(0o600);

    await a.close();
    const orders = () => r.state.pebble.lines.filter((l) => l.includes('/order-plz')).length;
    const before = orders();
    const b = await r.open();
    expect((await b.issued).type).toBe('loaded');
    expect(b.source.current().sha256).toBe(m.sha256);
    expect(b.events.map((x) => x.type)).toEqual(['loaded', 'scheduled']);
    expect(await servedSha256(b.relay.port, { servername: HOST, ca: [root] })).toBe(m.sha256);
    expect(orders()).toBe(before);
  });

  it('issues over TLS-ALPN-01 on the DERP port (no port-80 listener) and relays over the issued certificate', async () => {
    const r = await rig({ challenges: ['tls-alpn-01'], port80: false });
    const a = await r.open();
    expect((await a.issued).type).toBe('issued');
    expect(a.logger.entries.some((l) => l.msg === 'answered TLS-ALPN-01 validation' && l.fields.servername === HOST)).toBe(true);
    const root = await r.state.pebble.root();
    expect(await servedSha256(a.relay.port, { servername: HOST, ca: [root] })).toBe(a.source.current().sha256);
    // And it is still a DERP relay over that certificate: the upgrade answers 101 on a verified connection.
    expect(await derpUpgradeStatus(a.relay.port, root)).toBe('HTTP/1.1 101 Switching Protocols');
  });

  it('renews a short-lived certificate at two thirds of its life; with the CA down it keeps serving, retries, then renews', async () => {
    const r = await rig({ challenges: ['http-01'], validitySeconds: 12 });
    const a = await r.open();
    expect((await a.issued).type).toBe('issued');
    const first = a.source.current();
    expect(first.notAfter.getTime() - first.notBefore.getTime()).toBeLessThanOrEqual(13_000);
    const sched = a.events.find((e) => e.type === 'scheduled');
    const due = first.notBefore.getTime() + (first.notAfter.getTime() - first.notBefore.getTime()) * (2 / 3);
    expect(sched?.type === 'scheduled' && Math.abs(sched.nextAttempt.getTime() - due)).toBeLessThanOrEqual(1);

    const renewed = await waitEvent(a.source, (e) => e.type === 'renewed');
    const second = a.source.current();
    expect(renewed.type === 'renewed' && renewed.sha256).toBe(second.sha256);
    expect(second.sha256).not.toBe(first.sha256);
    expect(await servedSha256(a.relay.port, { servername: HOST })).toBe(second.sha256);

    // CA down: the next renewal fails, is rescheduled with backoff, and the current certificate stays.
    const { acmePort, mgmtPort, tls } = r.state.pebble;
    const failing = waitEvent(a.source, (e) => e.type === 'failed');
    await r.state.pebble.stop();
    const failed = await failing;
    expect(failed.type === 'failed' && failed.reason).toMatch(/cannot reach the CA: .*ECONNREFUSED/);
    expect(failed.type === 'failed' && failed.nextAttempt.getTime()).toBeGreaterThan(Date.now() - 1000);
    expect(a.logger.entries.some((l) => l.level === 'warn' && l.msg.includes('renewal failed'))).toBe(true);
    expect(a.source.current().sha256).toBe(second.sha256);
    expect(await servedSha256(a.relay.port, { servername: HOST })).toBe(second.sha256);

    // The CA comes back (a new pebble on the same URL, with a new root and no memory of the account).
    r.state.pebble = await startPebble({ httpPort: r.httpPort, tlsPort: r.tlsPort, dnsPort: dns.port, validitySeconds: 12, acmePort, mgmtPort, tls });
    await waitEvent(a.source, (e) => e.type === 'renewed' && e.sha256 !== second.sha256);
    const third = a.source.current();
    expect(third.sha256).not.toBe(second.sha256);
    expect(await servedSha256(a.relay.port, { servername: HOST, ca: [await r.state.pebble.root()] })).toBe(third.sha256);
  }, 90_000);
});
