/** A relay node as `derp serve` builds it: /healthz, /derpmap, drain, reloads that keep connections. */
import * as http from 'node:http';
import * as https from 'node:https';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DERPClient } from '../../src/lib/client/index.js';
import { loadConfigFile, parseConfigText, reloadServeConfig, resolveServeConfig, type ServeConfig } from '../../src/lib/config/index.js';
import { parseDerpMap } from '../../src/lib/derpmap/index.js';
import { RelayNode } from '../../src/lib/node/index.js';
import { MemoryLogger, type LogLevel } from '../../src/lib/util/logger.js';
import { days, makePair } from '../certs/fixtures.js';

interface Got {
  status: number;
  body: string;
  type: string | undefined;
}

function get(url: string): Promise<Got> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    mod
      .get(url, { rejectUnauthorized: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: res.headers['content-type'] }));
      })
      .on('error', reject);
  });
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tmp(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'derp-node-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startNode(config: ServeConfig, extra: { loadConfig?: () => Promise<ServeConfig>; levels?: LogLevel[] } = {}): Promise<{ node: RelayNode; logger: MemoryLogger; base: string }> {
  const logger = new MemoryLogger();
  const node = await RelayNode.start({ config, logger, loadConfig: extra.loadConfig, setLogLevel: (l) => extra.levels?.push(l) });
  cleanups.push(() => node.stop());
  const u = new URL(node.relay.url);
  return { node, logger, base: `${u.protocol}//${u.host}` };
}

const DEV_YAML = 'dev: true\naddr: "127.0.0.1:0"\n';

describe('RelayNode /healthz', () => {
  it('is 200 on the relay and metrics ports while serving, and names a listener that is down', async () => {
    const { node, base } = await startNode(resolveServeConfig(parseConfigText(DEV_YAML, 'derp.yaml')));
    expect(await get(`${base}/healthz`)).toMatchObject({ status: 200, body: 'ok\n' });
    const metricsBase = node.metricsServer!.url.replace(/\/metrics$/, '');
    expect(await get(`${metricsBase}/healthz`)).toMatchObject({ status: 200, body: 'ok\n' });

    await node.stun!.stop();
    const down = await get(`${base}/healthz`);
    expect(down.status).toBe(503);
    expect(down.body).toBe('unhealthy\nSTUN listener down\n');
  });

  it('reports draining during the drain period after a stop, while still serving', async () => {
    const config = resolveServeConfig(parseConfigText(`${DEV_YAML}drainSeconds: 60\n`, 'derp.yaml'));
    const { node, base } = await startNode(config);
    const client = new DERPClient();
    await client.connect(node.relay.url);
    const hurry = new AbortController();
    const stopped = node.stop(hurry.signal);
    const h = await get(`${base}/healthz`);
    expect(h.status).toBe(503);
    expect(h.body).toContain('draining');
    // Still relaying during the drain.
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
    const restarting = new Promise<void>((resolve) => client.once('restarting', () => resolve()));
    hurry.abort();
    await stopped;
    await restarting;
    await client.disconnect();
  });

  it('is 503 inside the certificate margin and 200 outside it', async () => {
    const dir = await tmp();
    const pair = await makePair({ notAfter: new Date(Date.now() + days(2)) });
    await writeFile(join(dir, 'cert.pem'), pair.cert);
    await writeFile(join(dir, 'key.pem'), pair.key);
    const yaml = (margin: number) =>
      `addr: "127.0.0.1:0"\nkeyFile: ${join(dir, 'node.key')}\nhttpPort: -1\nmetrics:\n  addr: none\nstun:\n  enabled: false\ntls:\n  certFile: ${join(dir, 'cert.pem')}\n  keyFile: ${join(dir, 'key.pem')}\n  marginDays: ${margin}\n`;
    const inside = await startNode(resolveServeConfig(parseConfigText(yaml(7), 'derp.yaml')));
    const h = await get(`${inside.base}/healthz`);
    expect(h.status).toBe(503);
    expect(h.body).toMatch(/^unhealthy\ncertificate expires in [12]\.\d days \(margin 7 days\), at /);
    const outside = await startNode(resolveServeConfig(parseConfigText(yaml(1), 'derp.yaml')));
    expect(await get(`${outside.base}/healthz`)).toMatchObject({ status: 200, body: 'ok\n' });
  });
});

describe('RelayNode /derpmap', () => {
  it('publishes the region of derp.servers as Tailscale JSON, and 404 without one', async () => {
    const yaml = `${DEV_YAML}derp:\n  servers:\n    - region: us-east\n      hostname: derp1.example.com\n      stunPort: 3478\n      derpPort: 443\n    - region: us-east\n      hostname: derp2.example.com\n      stunPort: 3478\n      derpPort: 443\n`;
    const { base } = await startNode(resolveServeConfig(parseConfigText(yaml, 'derp.yaml')));
    const r = await get(`${base}/derpmap`);
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/json');
    const { map } = parseDerpMap(r.body, 'derpmap');
    const region = Object.values(map.regions)[0]!;
    expect(region.regionCode).toBe('us-east');
    expect(region.nodes.map((n) => n.hostname)).toEqual(['derp1.example.com', 'derp2.example.com']);

    const plain = await startNode(resolveServeConfig(parseConfigText(DEV_YAML, 'derp.yaml')));
    expect((await get(`${plain.base}/derpmap`)).status).toBe(404);
  });
});

describe('RelayNode reload', () => {
  it('applies a valid file without dropping a connection, and keeps the running config on an invalid one', async () => {
    const dir = await tmp();
    const file = join(dir, 'derp.yaml');
    await writeFile(file, `${DEV_YAML}log:\n  level: info\n`);
    const levels: LogLevel[] = [];
    const { node, logger, base } = await startNode(resolveServeConfig(await loadConfigFile(file)), { loadConfig: async () => (await reloadServeConfig(file, {})).config, levels });
    const a = new DERPClient();
    const b = new DERPClient();
    await a.connect(node.relay.url);
    await b.connect(node.relay.url);
    cleanups.push(async () => (await a.disconnect(), await b.disconnect()));

    // Valid: live fields apply, a restart-only field is named.
    await writeFile(file, `${DEV_YAML}log:\n  level: debug\ntrustedProxies: ["127.0.0.1/32"]\nstun:\n  rateLimit: 5\n`);
    const ok = await node.reload();
    expect(ok).toEqual({ ok: true, problems: [], restartNeeded: ['stun.rateLimit'] });
    expect(levels).toEqual(['info', 'debug']);
    expect(node.config.trustedProxies).toEqual(['127.0.0.1/32']);
    expect(node.config.stun.rateLimit).toBe(100);
    expect(logger.entries.some((e) => e.msg === 'changed field takes effect on restart' && e.fields.field === 'stun.rateLimit')).toBe(true);

    // Invalid: every problem logged with its position, nothing changes.
    await writeFile(file, `${DEV_YAML}log:\n  level: loud\nstun:\n  prot: 1\n`);
    const bad = await node.reload();
    expect(bad.ok).toBe(false);
    expect(bad.problems).toEqual([expect.stringMatching(/derp\.yaml:4:10 log\.level: expected/), expect.stringMatching(/derp\.yaml:6:3 stun\.prot: unknown field \(did you mean "port"\?\)/)]);
    expect(levels).toEqual(['info', 'debug']);
    expect(logger.entries.filter((e) => e.msg.startsWith('reload refused'))).toHaveLength(2);

    const metrics = await (await fetch(node.metricsServer!.url)).text();
    expect(metrics).toMatch(/^derp_config_reloads_total\{result="ok"\} 1$/m);
    expect(metrics).toMatch(/^derp_config_reloads_total\{result="failed"\} 1$/m);

    // Both clients are still connected and relaying.
    const got = new Promise<string>((resolve) => {
      void (async () => {
        for await (const p of b.receive()) {
          resolve(Buffer.from(p.data).toString());
          break;
        }
      })();
    });
    await a.send(b.publicKey, Buffer.from('after two reloads'));
    expect(await got).toBe('after two reloads');
    expect(node.relay.stats().currentConnections).toBe(2);
    expect((await get(`${base}/healthz`)).status).toBe(200);
  });
});
