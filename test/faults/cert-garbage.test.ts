/**
 * Fault: the certificate files are replaced with garbage, then the node reloads (SIGHUP). The old
 * certificate keeps serving (its fingerprint over real TLS), the error names the bad file, the failed
 * reload and the refused certificate are counted, a canary pair over TLS relays throughout, and a later
 * good pair is picked up. test/certs/manual.test.ts covers the source's refusals on their own; this is
 * the running node: reload outcome, /metrics, the TLS canary, recovery.
 */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText, resolveServeConfig } from '../../src/lib/config/index.js';
import { RelayNode } from '../../src/lib/node/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { makePair, servedSha256 } from '../certs/fixtures.js';
import { RawClient } from '../helpers/rawclient.js';
import { canaryWorks } from '../server/helpers.js';

/** Replaces a file the way editors and certbot do: write elsewhere, rename over. */
async function replace(file: string, data: string): Promise<void> {
  await writeFile(`${file}.new`, data);
  await rename(`${file}.new`, file);
}

async function counters(node: RelayNode): Promise<{ reloadFailed: number; reloadOk: number; refused: number; loaded: number }> {
  const text = await (await fetch(node.metricsServer!.url)).text();
  const read = (re: string): number => Number(new RegExp(`^${re} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  return {
    reloadFailed: read('derp_config_reloads_total\\{result="failed"\\}'),
    reloadOk: read('derp_config_reloads_total\\{result="ok"\\}'),
    refused: read('derp_certificate_events_total\\{event="refused"\\}'),
    loaded: read('derp_certificate_events_total\\{event="loaded"\\}'),
  };
}

describe('fault: certificate files replaced with garbage', () => {
  it('the old certificate keeps serving, the error names the file, it is counted; the TLS canary relays; a good pair is picked up', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'derp-certfault-'));
    const certFile = join(dir, 'cert.pem');
    const keyFile = join(dir, 'key.pem');
    const first = await makePair();
    await writeFile(certFile, first.cert);
    await writeFile(keyFile, first.key);
    const yaml = `dev: true\naddr: "127.0.0.1:0"\nstun:\n  enabled: false\nmetrics:\n  addr: "127.0.0.1:0"\ntls:\n  certFile: "${certFile}"\n  keyFile: "${keyFile}"\n`;
    const logger = new MemoryLogger();
    const node = await RelayNode.start({ config: resolveServeConfig(parseConfigText(yaml, 'derp.yaml')), logger });
    const clients: RawClient[] = [];
    try {
      const port = node.relay.port;
      expect(node.relay.url).toMatch(/^https:/);
      expect(await servedSha256(port)).toBe(first.sha256);
      const a = await RawClient.connect({ port, ca: first.cert });
      const b = await RawClient.connect({ port, ca: first.cert });
      clients.push(a, b);
      await canaryWorks(a, b, 'first');
      const before = await counters(node);

      // Both files garbage: the certificate file is read and refused first.
      await replace(keyFile, 'not a key\n');
      await replace(certFile, '\x00\x01 garbage \xff\n');
      const r1 = await node.reload();
      expect(r1.ok).toBe(false);
      expect(r1.problems).toEqual([expect.stringContaining(`certificate: ${certFile}: `)]);
      expect(await servedSha256(port)).toBe(first.sha256);
      expect(node.certs!.current().sha256).toBe(first.sha256);
      await canaryWorks(a, b, 'garbage');

      // A good certificate beside a garbage key: the key file is named.
      await replace(certFile, first.cert);
      const r2 = await node.reload();
      expect(r2.ok).toBe(false);
      expect(r2.problems).toEqual([expect.stringContaining(`certificate: ${keyFile}: `)]);
      expect(await servedSha256(port)).toBe(first.sha256);
      await canaryWorks(b, a, 'garbage key');

      const during = await counters(node);
      expect(during.reloadFailed - before.reloadFailed).toBe(2);
      expect(during.refused - before.refused).toBeGreaterThanOrEqual(2); // the directory watcher may refuse too
      expect(logger.entries.filter((e) => e.msg === 'reload failed, keeping the running settings' && String(e.fields.problem).includes(dir))).toHaveLength(2);

      // A good new pair: picked up, served to new connections; the old connections still relay.
      const second = await makePair();
      await replace(keyFile, second.key);
      await replace(certFile, second.cert);
      expect(await node.reload()).toMatchObject({ ok: true, problems: [] });
      expect(await servedSha256(port)).toBe(second.sha256);
      const after = await counters(node);
      expect(after.reloadOk - during.reloadOk).toBe(1);
      expect(after.loaded - during.loaded).toBe(1);
      const c = await RawClient.connect({ port, ca: second.cert });
      clients.push(c);
      await canaryWorks(c, a, 'second');
      await canaryWorks(a, b, 'old connections');
      expect([a.closed, b.closed]).toEqual([false, false]);
      expect(node.relay.stats().currentConnections).toBe(3);
    } finally {
      for (const c of clients) c.destroy();
      await node.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
