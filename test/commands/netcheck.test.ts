/** `derp netcheck` end to end against loopback regions (tests assume dist/ is built; no network). */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetcheckReport, TailscaleNetcheckReport } from '../../src/lib/netcheck/index.js';
import { flatCliText, NODE, ROOT, RUN, runCli } from '../helpers/cli.js';
import { mapOf, startRegion, stopRegions, writeMap, type TestRegion } from '../netcheck/regions.js';

const FIX = join(ROOT, 'test/fixtures/derpmap');

const run = (args: string[]) => runCli(['netcheck', ...args]);

let dir: string;
const regions: TestRegion[] = [];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-netcheck-'));
  regions.push(...(await Promise.all([startRegion({ id: 901, code: 'zro', delayMs: 0 }), startRegion({ id: 902, code: 'twe', delayMs: 10 })])));
  await writeMap(join(dir, 'ok.json'), mapOf(regions));
  // STUN dropped and no relay behind the node: nothing can answer.
  const dead = await startRegion({ id: 905, code: 'ded', delayMs: 0, dropUdp: true, noRelay: true });
  regions.push(dead);
  await writeMap(join(dir, 'dead.json'), mapOf([dead]));
});
afterAll(async () => {
  await stopRegions(regions);
  await rm(dir, { recursive: true, force: true });
});

describe('derp netcheck', () => {
  it('prints the summary and a table sorted by latency', async () => {
    const r = await run(['--map', join(dir, 'ok.json')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('* UDP: true');
    expect(r.stdout).toMatch(/\* IPv4: yes, 127\.0\.0\.1:\d+/);
    expect(r.stdout).toContain('* Nearest DERP: Region zro');
    expect(r.stdout.indexOf('zro')).toBeLessThan(r.stdout.indexOf('twe'));
  });

  it('--json prints one report object; --region narrows the map', async () => {
    const r = await run(['--map', join(dir, 'ok.json'), '--json', '--region', 'twe']);
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.stdout) as NetcheckReport;
    expect(rep.regions.map((g) => [g.regionId, g.method])).toEqual([[902, 'stun']]);
    expect(rep.preferredDERP).toBe(902);
    expect(rep.regionLatency[902]).toBeGreaterThanOrEqual(20);
  });

  it('--every repeats reports until SIGINT, then exits 0', async () => {
    const child = spawn(NODE, [RUN, 'netcheck', '--map', join(dir, 'ok.json'), '--json', '--every', '50ms'], { cwd: ROOT });
    let stdout = '';
    const exited = new Promise<number | null>((res) => child.on('close', (code: number | null) => res(code)));
    await new Promise<void>((res) => {
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout.split('\n').filter(Boolean).length >= 2) res();
      });
    });
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    const reports = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as NetcheckReport);
    expect(reports.length).toBeGreaterThanOrEqual(2);
    expect(reports.every((r) => r.preferredDERP === 901)).toBe(true);
  });

  it('exits 7 when no region is reachable', async () => {
    const r = await run(['--map', join(dir, 'dead.json'), '--timeout', '1s', '--json']);
    expect(r.code).toBe(7);
    const rep = JSON.parse(r.stdout) as NetcheckReport;
    expect(rep.udp).toBe(false);
    expect(rep.regions[0]!.latencyMs).toBeNull();
  });

  it('--format tailscale prints Tailscale\'s netcheck.Report JSON (tab-indented, nanoseconds, string region keys)', async () => {
    const r = await run(['--map', join(dir, 'ok.json'), '--format', 'tailscale']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[1]).toMatch(/^\t"Now": "\d{4}-\d\d-\d\dT[\d:.]+Z",$/);
    const t = JSON.parse(r.stdout) as TailscaleNetcheckReport;
    expect(Object.keys(t)).toEqual(['Now', 'UDP', 'IPv6', 'IPv4', 'IPv6CanSend', 'IPv4CanSend', 'OSHasIPv6', 'ICMPv4', 'MappingVariesByDestIP', 'UPnP', 'PMP', 'PCP',
      'PreferredDERP', 'RegionLatency', 'RegionV4Latency', 'RegionV6Latency', 'GlobalV4Counters', 'GlobalV6Counters', 'GlobalV4', 'GlobalV6', 'CaptivePortal']);
    expect(t).toMatchObject({ UDP: true, IPv4: true, IPv4CanSend: true, ICMPv4: false, UPnP: false, PMP: false, PCP: false, PreferredDERP: 901, GlobalV6Counters: null, GlobalV6: '' });
    expect(Object.keys(t.RegionLatency).sort()).toEqual(['901', '902']);
    expect(Object.values(t.RegionLatency).every((ns) => Number.isInteger(ns) && ns > 0)).toBe(true);
    // The delay proxy adds 10 ms each way: 20 ms = 20,000,000 ns at least.
    expect(t.RegionLatency['902']).toBeGreaterThanOrEqual(20_000_000);
    expect(t.RegionV4Latency).toEqual(t.RegionLatency);
    expect(t.GlobalV4).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(t.GlobalV4Counters?.[t.GlobalV4]).toBeGreaterThanOrEqual(1);
    expect(r.stdout).not.toContain('"schema"');
  });

  it('--format tailscale when nothing answers: UDP false, empty latency maps, nil counters; exit 7', async () => {
    const r = await run(['--map', join(dir, 'dead.json'), '--timeout', '1s', '--format', 'tailscale']);
    expect(r.code).toBe(7);
    const t = JSON.parse(r.stdout) as TailscaleNetcheckReport;
    expect(t).toMatchObject({ UDP: false, PreferredDERP: 0, RegionLatency: {}, RegionV4Latency: {}, RegionV6Latency: {}, GlobalV4Counters: null, GlobalV4: '', MappingVariesByDestIP: null });
  });

  it('--format json is --json (with the version marker); --json with another --format is bad usage', async () => {
    const r = await run(['--map', join(dir, 'ok.json'), '--format', 'json', '--region', 'zro']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ schema: 'derp.netcheck/v1', preferredDERP: 901 });
    const both = await run(['--map', join(dir, 'ok.json'), '--json', '--format', 'tailscale']);
    expect(both.code).toBe(2);
    expect(flatCliText(both.stderr)).toContain('--json conflicts with --format tailscale');
    expect((await run(['--map', join(dir, 'ok.json'), '--format', 'yaml'])).code).toBe(2);
  });

  it('exits 5 on a bad map, 6 on a missing one, 2 on bad usage', async () => {
    expect((await run(['--map', join(FIX, 'broken-semantic.json')])).code).toBe(5);
    expect((await run(['--map', join(dir, 'missing.json')])).code).toBe(6);
    expect((await run(['--map', join(dir, 'ok.json'), '--every', 'soon'])).code).toBe(2);
    expect((await run(['--map', join(dir, 'ok.json'), '--region', 'nowhere'])).code).toBe(2);
  });
});
