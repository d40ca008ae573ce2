// `derp select --map` (built dist/) over a map file of loopback relays.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { toSeedJson } from '../../src/lib/derpmap/index.js';
import { startRegions } from '../select/helpers.js';
import { flatCliText, runCli } from '../helpers/cli.js';


const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const run = (args: string[]) => runCli(['select', ...args]);

async function mapFile(n: number) {
  const regions = await startRegions(n);
  cleanups.push(() => regions.stop());
  const dir = await mkdtemp(join(tmpdir(), 'derp-select-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'map.json');
  await writeFile(file, JSON.stringify(toSeedJson(regions.map)));
  return { regions, file, dir };
}

interface SelectJson {
  home: { regionId: number; node: string; url: string; reason: string } | null;
  latencySource: string;
  candidates: { regionId: number; node: string; healthy: boolean; chosen: boolean; reason: string; latencyMs: number | null }[];
}

describe('derp select', () => {
  it('prints the candidates and the chosen home; --json parses; --region/--exclude filter', async () => {
    const { regions, file } = await mapFile(2);
    const text = await run(['--map', file]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/home: region [12] \(r[12]\) node [12]a http:\/\/127\.0\.0\.1:\d+\/derp/);
    expect(text.stdout).toContain('*');

    const j = await run(['--map', file, '--json', '--region', 'r2']);
    expect(j.code).toBe(0);
    const out = JSON.parse(j.stdout) as SelectJson;
    expect(out.home).toMatchObject({ regionId: 2, node: '2a', url: `http://127.0.0.1:${regions.servers[1]!.port}/derp` });
    expect(out.candidates.find((c) => c.node === '2a')).toMatchObject({ healthy: true, chosen: true });
    expect(out.candidates.find((c) => c.node === '1a')).toMatchObject({ chosen: false, reason: 'not in --region' });

    const ex = JSON.parse((await run(['--map', file, '--json', '--exclude', '2a'])).stdout) as SelectJson;
    expect(ex.home?.node).toBe('1a');
  });

  it('exits 8 when no region is reachable, 5 on a bad map, 2 on an unknown region', async () => {
    const { regions, file, dir } = await mapFile(2);
    await regions.stop();
    const j = await run(['--map', file, '--json']);
    expect(j.code).toBe(8);
    const out = JSON.parse(j.stdout) as SelectJson;
    expect(out.home).toBeNull();
    expect(out.candidates.every((c) => !c.healthy)).toBe(true);
    const t = await run(['--map', file]);
    expect(t.code).toBe(8);
    expect(flatCliText(t.stderr)).toMatch(/no healthy server/);

    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"regions": 7}');
    expect((await run(['--map', bad])).code).toBe(5);
    expect((await run(['--map', join(dir, 'missing.json')])).code).toBe(6);
    expect((await run(['--map', file, '--region', 'nowhere'])).code).toBe(2);
  });
});
