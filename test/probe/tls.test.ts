/** The tls and http checks against TLS relays with generated certificates (pin, CA file, expiry, name). */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runProbe, type CheckResult, type ProbeReport } from '../../src/lib/probe/index.js';
import { days, makePair } from '../certs/fixtures.js';
import { regionsOf, startNode, type TestNode } from './nodes.js';

const stops: (() => Promise<void>)[] = [];
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-probe-tls-'));
});
afterAll(async () => {
  for (const s of stops.splice(0)) await s();
  await rm(dir, { recursive: true, force: true });
});

async function tlsNode(id: string, pair: { cert: string; key: string }, node: Parameters<typeof startNode>[0]['node'] = {}): Promise<TestNode> {
  const n = await startNode({ id, tls: pair, stun: false, node });
  stops.push(n.stop);
  return n;
}

function result(rep: ProbeReport, name: string): CheckResult {
  return rep.nodes[0]!.checks.find((c) => c.check === name)!;
}

describe('tls and http checks', () => {
  it('a healthy TLS node pinned by sha256-raw: tls good with days to expiry, http and derp good over TLS', async () => {
    const pair = await makePair({ notAfter: new Date(Date.now() + days(30)) });
    const n = await tlsNode('900a', pair, { certName: `sha256-raw:${pair.sha256}` });
    const rep = await runProbe(regionsOf([n.node]), { checks: ['tls', 'http', 'derp', 'packet'] });
    const tls = result(rep, 'tls');
    expect(tls).toMatchObject({ status: 'good', unit: 'days', message: expect.stringMatching(/pinned leaf matches/) });
    expect(tls.value).toBeGreaterThan(29);
    expect(tls.value).toBeLessThanOrEqual(30);
    expect(tls.details).toMatchObject({ notAfter: expect.any(String), issuer: 'CN=127.0.0.1', subject: 'CN=127.0.0.1' });
    expect(result(rep, 'http')).toMatchObject({ status: 'good', unit: 'ms' });
    expect(result(rep, 'derp').status).toBe('good');
    expect(result(rep, 'packet').status).toBe('good');
  });

  it('CanPort80: /generate_204 must answer the challenge on the plain-HTTP port too', async () => {
    const pair = await makePair();
    const plain = await startNode({ id: 'p80', stun: false });
    stops.push(plain.stop);
    const n = await tlsNode('900a', pair, { certName: `sha256-raw:${pair.sha256}`, canPort80: true });
    const ok = await runProbe(regionsOf([n.node]), { checks: ['http'], port80: plain.node.derpPort });
    expect(result(ok, 'http')).toMatchObject({ status: 'good', message: expect.stringMatching(/also on port 80/), details: { port80: 'ok' } });
    // Nothing listens there: bad, naming the URL.
    await plain.stop();
    const down = await runProbe(regionsOf([n.node]), { checks: ['http'], port80: plain.node.derpPort });
    expect(result(down, 'http').status).toBe('bad');
    expect(result(down, 'http').message).toContain(`port 80 (CanPort80): http://127.0.0.1:${plain.node.derpPort}`);
  });

  it('a wrong pin is bad and names both hashes', async () => {
    const pair = await makePair();
    const n = await tlsNode('900a', pair, { certName: `sha256-raw:${'ab'.repeat(32)}` });
    const rep = await runProbe(regionsOf([n.node]), { checks: ['tls'] });
    expect(result(rep, 'tls').status).toBe('bad');
    expect(result(rep, 'tls').message).toContain(`sha256-raw:${pair.sha256}`);
    expect(result(rep, 'tls').message).toContain('ab'.repeat(32));
  });

  it('trusted through --ca-file; untrusted without it', async () => {
    const pair = await makePair();
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, pair.cert);
    const n = await tlsNode('900a', pair);
    const ok = await runProbe(regionsOf([n.node]), { checks: ['tls', 'http'], tls: { caFile } });
    expect(result(ok, 'tls')).toMatchObject({ status: 'good', message: expect.stringMatching(/chain and name 127\.0\.0\.1 ok/) });
    expect(result(ok, 'http').status).toBe('good');
    const no = await runProbe(regionsOf([n.node]), { checks: ['tls'] });
    expect(result(no, 'tls')).toMatchObject({ status: 'bad', message: expect.stringMatching(/not trusted.*--ca-file/) });
    const insecure = await runProbe(regionsOf([n.node]), { checks: ['tls'], tls: { insecure: true } });
    expect(result(insecure, 'tls')).toMatchObject({ status: 'good', message: expect.stringMatching(/not verified/) });
  });

  it('expiring within --warn-days warns; within --fail-days is bad', async () => {
    const soon = await makePair({ notAfter: new Date(Date.now() + days(7)) });
    const n = await tlsNode('900a', soon, { certName: `sha256-raw:${soon.sha256}` });
    const warn = await runProbe(regionsOf([n.node]), { checks: ['tls'] });
    expect(result(warn, 'tls')).toMatchObject({ status: 'warn', message: expect.stringMatching(/within --warn-days 14/) });
    expect(warn.status).toBe('warn');
    const failing = await runProbe(regionsOf([n.node]), { checks: ['tls'], failDays: 10 });
    expect(result(failing, 'tls')).toMatchObject({ status: 'bad', message: expect.stringMatching(/within --fail-days 10/) });
  });

  it('a certificate for another name is bad, naming the expected and the presented names', async () => {
    const pair = await makePair({ name: 'other.example' });
    const caFile = join(dir, 'other.pem');
    await writeFile(caFile, pair.cert);
    const n = await tlsNode('900a', pair, { certName: 'derp.example.com' });
    const rep = await runProbe(regionsOf([n.node]), { checks: ['tls'], tls: { caFile } });
    const r = result(rep, 'tls');
    expect(r.status).toBe('bad');
    expect(r.message).toMatch(/not valid for the expected name derp\.example\.com \(it is for .*DNS:other\.example/);
  });
});
