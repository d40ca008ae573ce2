/** `derp probe` end to end against loopback relays (tests assume dist/ is built; no network). */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toSeedJson } from '../../src/lib/derpmap/index.js';
import type { ProbeReport } from '../../src/lib/probe/index.js';
import { XMLParser } from 'fast-xml-parser';
import { NODE, ROOT, RUN, flatCliText, runCli } from '../helpers/cli.js';
import { assertMatchesSchema } from '../helpers/schema.js';
import { days, makePair } from '../certs/fixtures.js';
import { mapOf, startNode, type TestNode } from '../probe/nodes.js';

const run = (args: string[]) => runCli(['probe', ...args]);

let dir: string;
const nodes: TestNode[] = [];
let single: string;
let pair: string;
let tlsUrl: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-probe-cli-'));
  const a = await startNode({ id: '900a' });
  const b = await startNode({ id: '901a', regionId: 901, regionCode: 'two' });
  const c = await startNode({ id: '901b', regionId: 901, regionCode: 'two' });
  const cert = await makePair({ notAfter: new Date(Date.now() + days(30)) });
  const t = await startNode({ id: 't', tls: cert, stun: false });
  nodes.push(a, b, c, t);
  tlsUrl = `https://127.0.0.1:${t.node.derpPort}`;
  single = join(dir, 'single.json');
  pair = join(dir, 'pair.json');
  // Seed JSON: the Tailscale schema has no plainHttp.
  await writeFile(single, JSON.stringify(toSeedJson(mapOf([a.node]))));
  await writeFile(pair, JSON.stringify(toSeedJson(mapOf([a.node, b.node, c.node]))));
});
afterAll(async () => {
  for (const n of nodes) await n.stop();
  await rm(dir, { recursive: true, force: true });
});

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('derp probe', () => {
  it('prints a table and a summary line on non-TTY output and exits 0 when all is good', async () => {
    const r = await run(['--map', single]);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.some((l) => /region\s+│\s+node\s+│\s+check\s+│\s+status\s+│\s+value\s+│\s+message/.test(l))).toBe(true);
    expect(lines.some((l) => /900 tst\s+│\s+900a\s+│\s+derp\s+│\s+good\s+│\s+[\d.]+ ms/.test(l))).toBe(true);
    expect(lines.some((l) => /stun6\s+│\s+skipped/.test(l))).toBe(true);
    expect(r.stdout).toMatch(/1 node, 7 checks: 4 good, 0 warn, 0 bad, 3 skipped; status good/);
    // No spinner or colour codes when not on a TTY.
    expect(r.stdout + r.stderr).not.toContain('\u001b[');
  });

  it('--json prints one report with every node × check; an unmeshed region fails with exit 1', async () => {
    const r = await run(['--map', pair, '--json', '--packets', '3']);
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout) as ProbeReport;
    expect(rep).toMatchObject({ schema: 'derp.probe/v1', source: { map: pair }, status: 'bad', transports: ['upgrade', 'websocket'] });
    expect(rep.checks).toEqual(['stun4', 'stun6', 'tls', 'http', 'derp', 'packet', 'mesh']);
    const rows = rep.nodes.flatMap((n) => n.checks.map((c) => `${n.node}/${c.check}${c.peer ? `>${c.peer}` : ''}:${c.status}`));
    for (const n of ['900a', '901a', '901b']) for (const c of ['stun4', 'stun6', 'tls', 'http', 'derp', 'packet']) expect(rows.some((x) => x.startsWith(`${n}/${c}:`))).toBe(true);
    expect(rows).toContain('900a/mesh:skipped');
    expect(rows).toContain('901a/mesh>901b:bad');
    expect(rows).toContain('901b/mesh>901a:bad');
    expect(rep.summary).toMatchObject({ nodes: 3, checks: 21, bad: 2 });
  });

  it('--region narrows the map; an unknown region is a usage error naming what exists', async () => {
    const ok = await run(['--map', pair, '--region', 'tst', '--json', '--checks', 'derp']);
    expect(ok.code).toBe(0);
    expect((JSON.parse(ok.stdout) as ProbeReport).nodes.map((n) => n.node)).toEqual(['900a']);
    const bad = await run(['--map', pair, '--region', 'lon']);
    expect(bad.code).toBe(2);
    expect(flatCliText(bad.stderr)).toContain('region "lon" is not in the map (regions: 900 (tst), 901 (two))');
  });

  it('usage errors exit 2', async () => {
    expect((await run([])).code).toBe(2);
    const checks = await run(['--map', single, '--checks', 'tls,bogus']);
    expect(checks.code).toBe(2);
    expect(flatCliText(checks.stderr)).toContain('--checks: unknown check "bogus"');
    expect((await run(['--map', single, '--server', 'http://127.0.0.1:1'])).code).toBe(2);
    expect((await run(['--map', single, '--timeout', 'soon'])).code).toBe(2);
    expect((await run(['--map', single, '--checks', 'bandwidth'])).code).toBe(2);
    const key = await run(['--map', single, '--key-file', join(dir, 'missing.key')]);
    expect(key.code).toBe(2);
    expect(flatCliText(key.stderr)).toContain('missing.key');
  });

  it('a bad map file exits 5; an unreadable map (closed port, missing file) exits 6', async () => {
    const badFile = join(dir, 'bad.json');
    await writeFile(badFile, '{"Regions": {"1": {"RegionID": "x"}}');
    expect((await run(['--map', badFile])).code).toBe(5);
    const port = await closedPort();
    const closed = await run(['--map', `http://127.0.0.1:${port}/derpmap.json`]);
    expect(closed.code).toBe(6);
    expect(flatCliText(closed.stderr)).toContain(`127.0.0.1:${port}`);
    expect((await run(['--map', join(dir, 'nope.json')])).code).toBe(6);
  });

  it('a warning exits 0, or 1 with --strict', async () => {
    const args = ['--server', tlsUrl, '--stun-port', '-1', '--insecure', '--checks', 'tls,derp', '--warn-days', '60', '--json'];
    const lax = await run(args);
    expect(lax.code).toBe(0);
    const rep = JSON.parse(lax.stdout) as ProbeReport;
    expect(rep.nodes[0]!.checks[0]).toMatchObject({ check: 'tls', status: 'warn', unit: 'days' });
    expect(rep.status).toBe('warn');
    expect((await run([...args, '--strict'])).code).toBe(1);
  });

  it('--json validates against schemas/probe.schema.json; --junit writes the same results as JUnit XML', async () => {
    const xml = join(dir, 'out', 'probe.xml');
    const r = await run(['--map', pair, '--json', '--packets', '2', '--junit', xml]);
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout) as ProbeReport;
    assertMatchesSchema('probe.schema.json', rep);
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(await readFile(xml, 'utf8')) as {
      testsuites: { testsuite: Array<{ name: string; testcase: Array<{ name: string; failure?: { message: string } }> }> };
    };
    const suites = doc.testsuites.testsuite;
    expect(suites.map((x) => x.name)).toEqual(['region 900 tst', 'region 901 two']);
    const cases = suites.flatMap((x) => x.testcase);
    expect(cases).toHaveLength(rep.summary.checks);
    const failed = cases.filter((c) => c.failure !== undefined);
    expect(failed.map((c) => c.name).sort()).toEqual(['mesh → 901a', 'mesh → 901b']);
    const meshMsg = rep.nodes.find((n) => n.node === '901a')!.checks.find((c) => c.check === 'mesh')!.message;
    expect(failed.map((c) => c.failure!.message)).toContain(meshMsg);
  });

  it('--junit to a path that cannot be written exits 3 naming the file, after printing the results', async () => {
    const blocker = join(dir, 'a-file');
    await writeFile(blocker, 'x');
    const r = await run(['--map', single, '--checks', 'derp', '--junit', join(blocker, 'probe.xml')]);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/status good/);
    expect(flatCliText(r.stderr)).toContain(join(blocker, 'probe.xml'));
  });

  it('--every keeps probing and serves /metrics and /json until SIGTERM (exit 0); a busy --listen exits 3', async () => {
    const child = spawn(NODE, [RUN, 'probe', '--map', single, '--checks', 'derp,packet', '--packets', '2', '--every', '1s', '--listen', '127.0.0.1:0', '--json'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const waitFor = async (cond: () => boolean, what: string): Promise<void> => {
      for (let i = 0; i < 600 && !cond(); i++) await Promise.race([once(child.stdout, 'data'), once(child.stderr, 'data'), once(child, 'exit')]);
      if (!cond()) throw new Error(`gave up waiting for ${what}; stderr: ${stderr}`);
    };
    try {
      // Two reports: it probed again by itself.
      await waitFor(() => stdout.split('\n').filter(Boolean).length >= 2, 'two runs');
      const reports = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as ProbeReport);
      for (const rep of reports) assertMatchesSchema('probe.schema.json', rep);
      const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(stderr)?.[1];
      expect(url, stderr).toBeDefined();
      const metrics = await (await fetch(`${url}/metrics`)).text();
      expect(metrics).toMatch(/derp_probe_check_status\{[^}]*node="900a"[^}]*check="derp"[^}]*status="good"[^}]*\} 1/);
      const last = (await (await fetch(`${url}/json`)).json()) as ProbeReport;
      expect(last.nodes[0]!.node).toBe('900a');

      const busy = await run(['--map', single, '--every', '1s', '--listen', new URL(url!).host]);
      expect(busy.code).toBe(3);
      expect(flatCliText(busy.stderr)).toContain(new URL(url!).host);
    } finally {
      child.kill('SIGTERM');
    }
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
  });
});
