/** The `--format tailscale` conversion against a Report written from Tailscale's struct (spec §6.1, §7). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatTailscaleReport, goTimeText, msToGoDuration, toTailscaleReport, type NetcheckReport } from '../../src/lib/netcheck/index.js';
import { ROOT } from '../helpers/cli.js';

const FIXTURE = readFileSync(join(ROOT, 'test/fixtures/netcheck/tailscale-report.json'), 'utf8');

/** net/netcheck/netcheck.go `type Report struct`, in declaration order (what encoding/json emits). */
const REPORT_FIELDS = [
  'Now', 'UDP', 'IPv6', 'IPv4', 'IPv6CanSend', 'IPv4CanSend', 'OSHasIPv6', 'ICMPv4',
  'MappingVariesByDestIP', 'UPnP', 'PMP', 'PCP',
  'PreferredDERP', 'RegionLatency', 'RegionV4Latency', 'RegionV6Latency',
  'GlobalV4Counters', 'GlobalV6Counters', 'GlobalV4', 'GlobalV6', 'CaptivePortal',
];

/** Our report of the same network as the fixture. */
const ours: NetcheckReport = {
  now: '2025-06-01T12:34:56.780Z',
  durationMs: 212.5,
  udp: true,
  ipv4: true,
  ipv6: false,
  ipv4CanSend: true,
  ipv6CanSend: false,
  osHasIPv6: true,
  mappingVariesByDestIP: false,
  preferredDERP: 1,
  regionLatency: { 1: 11.234567, 27: 19.8 },
  regionV4Latency: { 1: 11.234567, 27: 19.8 },
  regionV6Latency: {},
  globalV4Counters: { '203.0.113.7:41641': 2 },
  globalV6Counters: {},
  globalV4: '203.0.113.7:41641',
  globalV6: '',
  captivePortal: null,
  regions: [
    { regionId: 1, regionCode: 'nyc', regionName: 'New York City', latencyMs: 11.234567, v4LatencyMs: 11.234567, v6LatencyMs: null, method: 'stun', node: '1a', probes: 3, errors: [] },
    { regionId: 27, regionCode: 'tor', regionName: 'Toronto', latencyMs: 19.8, v4LatencyMs: 19.8, v6LatencyMs: null, method: 'stun', node: '27a', probes: 3, errors: [] },
  ],
};

describe('toTailscaleReport', () => {
  it('has exactly the fields of netcheck.Report, in struct order', () => {
    expect(Object.keys(toTailscaleReport(ours))).toEqual(REPORT_FIELDS);
    expect(Object.keys(JSON.parse(FIXTURE) as object)).toEqual(REPORT_FIELDS);
  });

  it('matches the fixture field by field (names, types, units)', () => {
    const got = toTailscaleReport(ours) as unknown as Record<string, unknown>;
    const want = JSON.parse(FIXTURE) as Record<string, unknown>;
    for (const f of REPORT_FIELDS) expect({ field: f, value: got[f] }).toEqual({ field: f, value: want[f] });
  });

  it('prints byte for byte what json.MarshalIndent(report, "", "\\t") prints', () => {
    expect(formatTailscaleReport(ours)).toBe(FIXTURE.trimEnd());
  });

  it('map keys come in Go\'s order (sorted as strings), everything else as JSON.stringify would print it', () => {
    const r = { ...ours, regionLatency: { 2: 1, 10: 2, 100: 3 }, globalV4Counters: { '203.0.113.9:1': 1, '203.0.113.10:1': 2 } };
    const text = formatTailscaleReport(r);
    expect(text).toContain('"RegionLatency": {\n\t\t"10": 2000000,\n\t\t"100": 3000000,\n\t\t"2": 1000000\n\t},');
    expect(text).toContain('"GlobalV4Counters": {\n\t\t"203.0.113.10:1": 2,\n\t\t"203.0.113.9:1": 1\n\t},');
    expect(JSON.parse(text)).toEqual(toTailscaleReport(r));
    expect(formatTailscaleReport({ ...r, globalV4Counters: {} })).toContain('"GlobalV4Counters": null,');
  });

  it('durations are integer nanoseconds; map keys are region IDs as strings', () => {
    const t = toTailscaleReport({ ...ours, regionLatency: { 3: 0.0004, 10: 1500.25 } });
    expect(t.RegionLatency).toEqual({ '3': 400, '10': 1_500_250_000 });
    expect(Object.values(t.RegionLatency).every(Number.isInteger)).toBe(true);
  });

  it('nothing observed: counters null (nil map), addresses "" (zero AddrPort), opt bools null', () => {
    const t = toTailscaleReport({ ...ours, globalV4Counters: {}, globalV4: '', mappingVariesByDestIP: null, captivePortal: true, udp: false });
    expect(t.GlobalV4Counters).toBeNull();
    expect(t.GlobalV4).toBe('');
    expect(t.MappingVariesByDestIP).toBeNull();
    expect(t.CaptivePortal).toBe(true);
    expect(t.UDP).toBe(false);
  });

  it('IPv6 endpoints keep the [ip]:port form', () => {
    const t = toTailscaleReport({ ...ours, ipv6: true, globalV6: '[2001:db8::7]:41641', globalV6Counters: { '[2001:db8::7]:41641': 1 } });
    expect(t.GlobalV6).toBe('[2001:db8::7]:41641');
    expect(t.GlobalV6Counters).toEqual({ '[2001:db8::7]:41641': 1 });
    expect(t.IPv6).toBe(true);
  });
});

describe('Go value formatting', () => {
  it('time.Time drops trailing zeros of the fraction', () => {
    expect(goTimeText('2025-06-01T12:34:56.789Z')).toBe('2025-06-01T12:34:56.789Z');
    expect(goTimeText('2025-06-01T12:34:56.700Z')).toBe('2025-06-01T12:34:56.7Z');
    expect(goTimeText('2025-06-01T12:34:56.000Z')).toBe('2025-06-01T12:34:56Z');
  });

  it('time.Duration rounds to the nanosecond', () => {
    expect(msToGoDuration(11.2345678)).toBe(11_234_568);
    expect(msToGoDuration(0)).toBe(0);
  });
});
