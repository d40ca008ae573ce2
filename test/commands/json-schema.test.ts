/**
 * Every command's --json output, produced for real by the built CLI (against loopback relays where it
 * needs one), validated against its published schema in schemas/; and per schema one mutated document
 * that must be rejected, so a schema that accepts anything fails here.
 */
import { readdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DERPClient } from '../../src/lib/client/client.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { NODE, ROOT, RUN, runCli } from '../helpers/cli.js';
import { assertMatchesSchema, SCHEMA_DIR } from '../helpers/schema.js';
import { mapOf, startRegion, stopRegions, writeMap, type TestRegion } from '../netcheck/regions.js';

type Doc = Record<string, unknown>;

const FIX = join(ROOT, 'test/fixtures/derpmap');

let dir: string;
let mapFile: string;
const regions: TestRegion[] = [];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-json-schema-'));
  regions.push(...(await Promise.all([startRegion({ id: 1, code: 'one' }), startRegion({ id: 2, code: 'two' })])));
  mapFile = join(dir, 'map.json');
  await writeMap(mapFile, mapOf(regions));
});
afterAll(async () => {
  await stopRegions(regions);
  await rm(dir, { recursive: true, force: true });
});

/** Runs `derp <args>` and parses its whole stdout as one JSON document. */
async function jsonOf(args: string[], code = 0): Promise<Doc> {
  const r = await runCli(args);
  expect(r.code, r.stderr).toBe(code);
  return JSON.parse(r.stdout) as Doc;
}

/** Runs `derp <args>` and parses every stdout line (NDJSON). */
async function linesOf(args: string[], code = 0): Promise<Doc[]> {
  const r = await runCli(args);
  expect(r.code, r.stderr).toBe(code);
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Doc);
}

/** A copy of `doc` changed by `f`: what a schema must reject. */
function mutated(doc: Doc, f: (d: Doc) => void): Doc {
  const copy = structuredClone(doc);
  f(copy);
  return copy;
}

/** Every published schema (probe and bench outputs are validated in their own command tests). */
const SCHEMAS = readdirSync(SCHEMA_DIR)
  .filter((n) => n.endsWith('.schema.json'))
  .map((n) => n.slice(0, -'.schema.json'.length));

/** Every `properties` entry anywhere in `node`, with its JSON pointer. */
function propertiesOf(node: unknown, at = ''): [string, Doc][] {
  if (typeof node !== 'object' || node === null) return [];
  const out: [string, Doc][] = [];
  for (const [k, v] of Object.entries(node)) {
    if (k === 'properties' && typeof v === 'object' && v !== null) {
      for (const [name, sub] of Object.entries(v as Doc)) if (typeof sub === 'object' && sub !== null) out.push([`${at}/properties/${name}`, sub as Doc]);
    }
    out.push(...propertiesOf(v, `${at}/${k}`));
  }
  return out;
}

describe('the schema files', () => {
  it.each(SCHEMAS)('%s.schema.json: draft 2020-12, $id, title, and a description on every property', async (name) => {
    const schema = JSON.parse(await readFile(join(SCHEMA_DIR, `${name}.schema.json`), 'utf8')) as Doc;
    expect(schema).toMatchObject({ $schema: 'https://json-schema.org/draft/2020-12/schema', $id: `urn:derp:schema:${name}:v1`, title: expect.any(String) as string });
    const props = propertiesOf(schema);
    expect(props.length).toBeGreaterThan(0);
    expect(props.filter(([, p]) => typeof p.description !== 'string' || p.description === '').map(([at]) => at)).toEqual([]);
  });
});

describe('netcheck', () => {
  it('--json matches netcheck.schema.json; a retyped field does not', async () => {
    const doc = await jsonOf(['netcheck', '--map', mapFile, '--json']);
    expect(doc.schema).toBe('derp.netcheck/v1');
    assertMatchesSchema('netcheck.schema.json', doc);
    expect(() => assertMatchesSchema('netcheck.schema.json', mutated(doc, (d) => void (d.udp = 'yes')))).toThrow(/udp/);
    expect(() => assertMatchesSchema('netcheck.schema.json', mutated(doc, (d) => void (d.extra = 1)))).toThrow(/additional/);
  });

  it('--format tailscale matches netcheck-tailscale.schema.json; a millisecond float latency does not', async () => {
    const doc = await jsonOf(['netcheck', '--map', mapFile, '--format', 'tailscale']);
    assertMatchesSchema('netcheck-tailscale.schema.json', doc);
    expect(() => assertMatchesSchema('netcheck-tailscale.schema.json', mutated(doc, (d) => void ((d.RegionLatency as Doc)['1'] = 1.5)))).toThrow(/RegionLatency/);
    expect(() => assertMatchesSchema('netcheck-tailscale.schema.json', mutated(doc, (d) => void delete d.PreferredDERP))).toThrow(/PreferredDERP/);
  });
});

describe('select', () => {
  it('--json matches select.schema.json; a missing field does not', async () => {
    const doc = await jsonOf(['select', '--map', mapFile, '--json']);
    expect(doc.schema).toBe('derp.select/v1');
    assertMatchesSchema('select.schema.json', doc);
    expect(() => assertMatchesSchema('select.schema.json', mutated(doc, (d) => void delete (d.candidates as Doc[])[0]!.healthy))).toThrow(/healthy/);
  });

  it('--json with no healthy server (home null, exit 8) matches select.schema.json', async () => {
    const dead = await startRegion({ id: 9, code: 'ded', delayMs: 0, dropUdp: true, noRelay: true });
    regions.push(dead);
    const file = join(dir, 'dead.json');
    await writeMap(file, mapOf([dead]));
    const doc = await jsonOf(['select', '--map', file, '--probe-timeout', '1000', '--json'], 8);
    expect(doc.home).toBeNull();
    assertMatchesSchema('select.schema.json', doc);
    expect(() => assertMatchesSchema('select.schema.json', { ...doc, home: 'none' })).toThrow(/home/);
  });
});

describe('connect', () => {
  it('every --json line (key, connected, packet, peerGone) matches connect.schema.json', async () => {
    const relay = regions[0]!.relay!;
    const url = `http://127.0.0.1:${relay.port}/derp`;
    const peerKey = NodePrivateKey.generate();
    const peer = new DERPClient({ privateKey: peerKey });
    await peer.connect(url);
    const child = spawn(NODE, [RUN, 'connect', peerKey.publicText(), '--server', url, '--json'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((res) => child.on('close', (code: number | null) => res(code)));
    const lines: Doc[] = [];
    const waiters: { event: string; resolve: (d: Doc) => void }[] = [];
    createInterface({ input: child.stdout }).on('line', (l) => {
      const d = JSON.parse(l) as Doc;
      lines.push(d);
      for (const w of waiters.filter((x) => x.event === d.event)) w.resolve(d);
    });
    const next = (event: string) => lines.find((d) => d.event === event) ?? new Promise<Doc>((resolve) => waiters.push({ event, resolve }));
    try {
      const me = (await next('key')).publicKey as string;
      await next('connected');
      // The CLI sends to the peer first, so the relay tells it when the peer leaves.
      const got = peer.receive()[Symbol.asyncIterator]().next();
      child.stdin.write('ping\n');
      await got;
      await peer.send(me, Buffer.from('pong'));
      await next('packet');
      await peer.disconnect();
      await next('peerGone');
    } finally {
      child.stdin.end();
      await peer.disconnect();
    }
    expect(await exited).toBe(0);
    expect(lines.map((d) => d.event)).toEqual(expect.arrayContaining(['key', 'connected', 'packet', 'peerGone']));
    for (const d of lines) assertMatchesSchema('connect.schema.json', d);

    const packet = lines.find((d) => d.event === 'packet')!;
    expect(() => assertMatchesSchema('connect.schema.json', mutated(packet, (d) => void (d.event = 'parcel')))).toThrow();
    expect(() => assertMatchesSchema('connect.schema.json', mutated(packet, (d) => void delete d.len))).toThrow();
    expect(() => assertMatchesSchema('connect.schema.json', mutated(packet, (d) => void delete d.schema))).toThrow(/schema/);
  });

  it('--map mode lines (regionUp, homeChanged, …) match connect.schema.json', async () => {
    const lines = await linesOf(['connect', NodePrivateKey.generate().publicText(), '--map', mapFile, '--json']);
    expect(lines.map((d) => d.event)).toEqual(expect.arrayContaining(['key', 'homeChanged', 'regionUp']));
    for (const d of lines) assertMatchesSchema('connect.schema.json', d);
    const up = lines.find((d) => d.event === 'regionUp')!;
    expect(() => assertMatchesSchema('connect.schema.json', mutated(up, (d) => void (d.home = 'yes')))).toThrow();
  });
});

describe('keygen', () => {
  it('--json (printed key, and --out file) matches keygen.schema.json; both forms at once do not', async () => {
    const printed = await jsonOf(['keygen', '--json']);
    expect(printed.schema).toBe('derp.keygen/v1');
    assertMatchesSchema('keygen.schema.json', printed);
    const written = await jsonOf(['keygen', '--json', '--out', join(dir, 'k.key')]);
    assertMatchesSchema('keygen.schema.json', written);
    expect(() => assertMatchesSchema('keygen.schema.json', { ...printed, file: 'x.key' })).toThrow();
    expect(() => assertMatchesSchema('keygen.schema.json', mutated(printed, (d) => void (d.publicKey = 'abc')))).toThrow(/publicKey/);
  });

  it('a failure with --json prints oclif\'s error envelope, matching cli-error.schema.json', async () => {
    const file = join(dir, 'taken.key');
    await writeFile(file, '');
    const doc = await jsonOf(['keygen', '--json', '--out', file], 2);
    expect(doc).toMatchObject({ error: { message: expect.stringContaining('already exists') as string, oclif: { exit: 2 } } });
    assertMatchesSchema('cli-error.schema.json', doc);
    expect(() => assertMatchesSchema('cli-error.schema.json', { error: { oclif: { exit: 2 } } })).toThrow(/message/);
  });
});

describe('demo', () => {
  it('--json (plain, and TLS over WebSocket) matches demo.schema.json; a missing count does not', async () => {
    const doc = await jsonOf(['demo', '--packets', '20', '--json']);
    expect(doc.schema).toBe('derp.demo/v1');
    assertMatchesSchema('demo.schema.json', doc);
    expect(() => assertMatchesSchema('demo.schema.json', mutated(doc, (d) => void delete (d.delivered as Doc).aToB))).toThrow(/aToB/);
    const tls = await jsonOf(['demo', '--packets', '5', '--tls', '--transport', 'websocket', '--json']);
    expect(tls.certName).toMatch(/^sha256-raw:/);
    assertMatchesSchema('demo.schema.json', tls);
  });
});

describe('map show', () => {
  it('--json matches map-show.schema.json for each input form; a node without a name does not', async () => {
    for (const f of ['tailscale.json', 'seed.json', 'seed.yaml']) {
      const doc = await jsonOf(['map', 'show', join(FIX, f), '--json']);
      expect(doc.schema).toBe('derp.map.show/v1');
      assertMatchesSchema('map-show.schema.json', doc);
    }
    const doc = await jsonOf(['map', 'show', join(FIX, 'tailscale.json'), '--json']);
    const bad = mutated(doc, (d) => {
      const r = Object.values((d.map as { Regions: Record<string, { Nodes: Doc[] }> }).Regions)[0]!;
      delete r.Nodes[0]!.Name;
    });
    expect(() => assertMatchesSchema('map-show.schema.json', bad)).toThrow(/Name/);
  });
});

describe('config check', () => {
  it('--json valid and invalid forms match config-check.schema.json; a mix of both does not', async () => {
    const good = join(dir, 'good.yaml');
    await writeFile(good, 'dev: true\naddr: 127.0.0.1:0\n');
    const ok = await jsonOf(['config', 'check', good, '--json']);
    expect(ok).toMatchObject({ schema: 'derp.config.check/v1', valid: true });
    assertMatchesSchema('config-check.schema.json', ok);

    // The complete example sets every group (TLS, admission, abuse, limits, derp.servers).
    const example = await runCli(['config', 'example']);
    expect(example.code).toBe(0);
    const full = join(dir, 'example.yaml');
    await writeFile(full, example.stdout);
    assertMatchesSchema('config-check.schema.json', await jsonOf(['config', 'check', full, '--json']));

    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'dev: true\nstun:\n  port: fast\n');
    const no = await jsonOf(['config', 'check', bad, '--json'], 2);
    expect(no).toMatchObject({ schema: 'derp.config.check/v1', valid: false });
    assertMatchesSchema('config-check.schema.json', no);

    expect(() => assertMatchesSchema('config-check.schema.json', { ...no, valid: true })).toThrow();
    expect(() => assertMatchesSchema('config-check.schema.json', mutated(ok, (d) => void ((d.config as Doc).port = 1)))).toThrow();
  });
});
