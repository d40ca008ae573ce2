/** `derp map show` / `derp map convert` end to end on fixtures and stdin (npm test builds dist/ first; no network). */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDerpMap } from '../../src/lib/derpmap/index.js';
import { ROOT, runCli } from '../helpers/cli.js';

const FIX = join(ROOT, 'test/fixtures/derpmap');
const run = (args: string[]) => runCli(['map', ...args]);
const runStdin = (args: string[], input: string) => runCli(['map', ...args], input);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-map-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('derp map show', () => {
  it('prints regions and nodes with their flags', async () => {
    const r = await run(['show', join(FIX, 'tailscale.json')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('(tailscale): 3 regions, 6 nodes');
    for (const s of ['New York City', '900s', 'STUN-only', 'avoid', 'no STUN', 'pinned cert', '8443', 'none']) expect(r.stdout).toContain(s);
  });

  it('--json prints the map in Tailscale form', async () => {
    const r = await run(['show', join(FIX, 'seed.yaml'), '--json']);
    expect(r.code).toBe(0);
    const o = JSON.parse(r.stdout) as { format: string; map: { Regions: Record<string, { Nodes: { Name: string }[] }> } };
    expect(o.format).toBe('yaml');
    expect(o.map.Regions['900']!.Nodes.map((n) => n.Name)).toEqual(['900a', '900b']);
  });

  it('reads stdin', async () => {
    const r = await runStdin(['show', '-'], await readFile(join(FIX, 'seed.json'), 'utf8'));
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('stdin (seed): 2 regions, 3 nodes');
  });

  it('exits 5 on a bad map, listing every problem with path and line', async () => {
    const r = await run(['show', join(FIX, 'broken-semantic.json')]);
    expect(r.code).toBe(5);
    const err = r.stderr.replace(/\s*›\s*/g, ' ');
    expect(err).toContain('Regions["900"].Nodes[4].STUNPort (line 12,');
    expect(err).toContain('region ID 901 does not match its key "900"');
  });

  it('exits 6 when the map cannot be read, 2 on bad usage', async () => {
    expect((await run(['show', join(FIX, 'missing.json')])).code).toBe(6);
    expect((await run(['show', join(FIX, 'tailscale.json'), '--from', 'xml'])).code).toBe(2);
  });
});

describe('derp map convert', () => {
  it('YAML deployment → Tailscale JSON on stdout', async () => {
    const r = await run(['convert', join(FIX, 'seed.yaml'), '--to', 'tailscale']);
    expect(r.code).toBe(0);
    const o = JSON.parse(r.stdout) as { Regions: Record<string, { RegionCode: string; Nodes: Record<string, unknown>[] }> };
    expect(o.Regions['900']!.RegionCode).toBe('us-east');
    expect(o.Regions['900']!.Nodes[1]).toEqual({ Name: '900b', RegionID: 900, HostName: 'derp-use2.tachikoma.dev', IPv6: 'none', STUNPort: -1, DERPPort: 8443 });
  });

  it('Tailscale (stdin) → seed → yaml → tailscale keeps the map', async () => {
    const original = await readFile(join(FIX, 'tailscale.json'), 'utf8');
    const seed = await runStdin(['convert', '-', '--to', 'seed'], original);
    expect(seed.code).toBe(0);
    const seedFile = join(dir, 'seed.json');
    const yamlFile = join(dir, 'map.yaml');
    expect((await runStdin(['convert', '-', '--to', 'yaml', '--out', yamlFile], seed.stdout)).code).toBe(0);
    expect(parseDerpMap(await readFile(yamlFile, 'utf8'), 'map.yaml').format).toBe('yaml');
    const back = await run(['convert', yamlFile, '--to', 'tailscale', '--out', seedFile]);
    expect(back.code).toBe(0);
    expect(JSON.parse(await readFile(seedFile, 'utf8'))).toEqual(JSON.parse(original));
  });

  it('exits 2 without --to, 5 on a bad map', async () => {
    expect((await run(['convert', join(FIX, 'seed.yaml')])).code).toBe(2);
    expect((await run(['convert', join(FIX, 'not-object.json'), '--to', 'yaml'])).code).toBe(5);
  });
});
