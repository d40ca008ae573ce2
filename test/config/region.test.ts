/** derp.servers → the DERP map served at /derpmap, in Tailscale JSON that the map loader reads back. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText, regionMapJson, regionMapOf, resolveServeConfig } from '../../src/lib/config/index.js';
import { loadDerpMap } from '../../src/lib/derpmap/index.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-region-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SEED_FORM = `dev: true
derp:
  servers:
    - region: us-east
      hostname: derp-use.tachikoma.dev
      stunPort: 3478
      derpPort: 443
    - region: eu-west
      hostname: derp-euw.tachikoma.dev
      stunPort: 3479
      derpPort: 8443
`;

describe('regionMapOf / regionMapJson', () => {
  it('is null without derp.servers', () => {
    const c = resolveServeConfig(parseConfigText('dev: true\n', 'a.yaml'));
    expect(regionMapOf(c)).toBeNull();
    expect(regionMapJson(c)).toBeNull();
  });

  it("the seed's deployment form round-trips through Tailscale JSON and the derpmap loader", async () => {
    const c = resolveServeConfig(parseConfigText(SEED_FORM, 'derp.yaml'));
    const map = regionMapOf(c);
    expect(map).not.toBeNull();
    const json = regionMapJson(c)!;
    const parsed = JSON.parse(json) as { Regions: Record<string, { RegionCode: string; Nodes: { HostName: string; STUNPort?: number; DERPPort?: number }[] }> };
    expect(parsed.Regions['900']).toMatchObject({ RegionCode: 'us-east', Nodes: [{ HostName: 'derp-use.tachikoma.dev' }] });
    expect(parsed.Regions['901']).toMatchObject({ RegionCode: 'eu-west', Nodes: [{ HostName: 'derp-euw.tachikoma.dev', STUNPort: 3479, DERPPort: 8443 }] });
    const file = join(dir, 'derpmap.json');
    await writeFile(file, json);
    const loaded = await loadDerpMap(file);
    expect(loaded.format).toBe('tailscale');
    expect(loaded.map).toEqual(map);
  });
});
