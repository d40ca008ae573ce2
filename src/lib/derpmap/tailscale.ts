/**
 * Tailscale's DERP map JSON (tailcfg/derpmap.go) ⇄ the model (spec derp-map.md §2–§5, §9.2, §9.3).
 */
import { z } from 'zod';
import {
  ADDR_DISABLED, DEFAULT_DERP_PORT, DEFAULT_STUN_PORT, MAX_NODES_PER_REGION, MAX_PORT, MAX_REGION_ID, MAX_REGIONS, NO_STUN_PORT,
} from './constants.js';
import { checkShape, isPlainObject, pickFields, safeKeys } from './fields.js';
import { describeValue, Issues, type PathSeg } from './issues.js';
import type { DERPMap, DERPRegion, DERPServer } from './types.js';
import { checkMap, tailscalePath, validateDerpMap } from './validate.js';

/** tailcfg.DERPNode as JSON; optional fields are Go `omitempty`. Keys in Go's field order. */
export interface TailscaleDERPNode {
  Name: string;
  RegionID: number;
  HostName: string;
  CertName?: string;
  IPv4?: string;
  IPv6?: string;
  STUNPort?: number;
  STUNOnly?: boolean;
  DERPPort?: number;
  InsecureForTests?: boolean;
  STUNTestIP?: string;
  CanPort80?: boolean;
}

export interface TailscaleDERPRegion {
  RegionID: number;
  RegionCode: string;
  RegionName: string;
  Latitude?: number;
  Longitude?: number;
  Avoid?: boolean;
  NoMeasureNoHome?: boolean;
  Nodes: TailscaleDERPNode[];
}

export interface TailscaleDERPMap {
  HomeParams?: { RegionScore?: Record<string, number> };
  Regions: Record<string, TailscaleDERPRegion>;
  omitDefaultRegions?: boolean;
}

const port = (min: number) => z.number().int().min(min).max(MAX_PORT);

const NODE_SHAPE = z.object({
  Name: z.string().default(''),
  RegionID: z.number().int().default(0),
  HostName: z.string().default(''),
  CertName: z.string().optional(),
  IPv4: z.string().optional(),
  IPv6: z.string().optional(),
  STUNPort: port(NO_STUN_PORT).optional(),
  STUNOnly: z.boolean().optional(),
  DERPPort: port(0).optional(),
  InsecureForTests: z.boolean().optional(),
  STUNTestIP: z.string().optional(),
  CanPort80: z.boolean().optional(),
});
const NODE_FIELDS = Object.keys(NODE_SHAPE.shape);

const REGION_SHAPE = z.object({
  RegionID: z.number().int().min(1).max(MAX_REGION_ID).optional(),
  RegionCode: z.string().default(''),
  RegionName: z.string().default(''),
  Latitude: z.number().optional(),
  Longitude: z.number().optional(),
  Avoid: z.boolean().optional(),
  NoMeasureNoHome: z.boolean().optional(),
});
const REGION_FIELDS = [...Object.keys(REGION_SHAPE.shape), 'Nodes'];

const MAP_SHAPE = z.object({ omitDefaultRegions: z.boolean().optional() });
const MAP_FIELDS = ['HomeParams', 'Regions', 'omitDefaultRegions'];

const EXPECT: Record<string, string> = {
  Name: 'a string', RegionID: 'an integer from 1 to 2^53-1', HostName: 'a string', CertName: 'a string',
  IPv4: 'a string (IPv4 address, "" or "none")', IPv6: 'a string (IPv6 address, "" or "none")',
  STUNPort: `an integer from ${NO_STUN_PORT} to ${MAX_PORT}`, DERPPort: `an integer from 0 to ${MAX_PORT}`,
  STUNOnly: 'true or false', InsecureForTests: 'true or false', STUNTestIP: 'a string', CanPort80: 'true or false',
  RegionCode: 'a string', RegionName: 'a string', Latitude: 'a number', Longitude: 'a number', Avoid: 'true or false',
  NoMeasureNoHome: 'true or false', omitDefaultRegions: 'true or false',
};

/** Decimal region key: "1", "900" (no sign, no leading zero, JS-safe). */
export const REGION_KEY = /^[1-9]\d{0,15}$/;

export function isRegionKey(k: string): boolean {
  return REGION_KEY.test(k) && Number(k) <= MAX_REGION_ID;
}

function disabled(ip: string | undefined): boolean {
  return ip !== undefined && ip !== '' && ip === ADDR_DISABLED;
}

/** §9.2, one node. */
function nodeFromTailscale(n: TailscaleDERPNode, r: { RegionCode: string }): DERPServer {
  const s: DERPServer = {
    id: n.Name,
    hostname: n.HostName,
    ipv4: n.IPv4 ?? '',
    stunPort: n.STUNPort === 0 || n.STUNPort === undefined ? DEFAULT_STUN_PORT : n.STUNPort,
    derpPort: n.DERPPort ? n.DERPPort : DEFAULT_DERP_PORT,
    region: r.RegionCode,
    regionCode: n.RegionID,
    canStun: n.STUNPort !== NO_STUN_PORT && !(disabled(n.IPv4) && disabled(n.IPv6)),
    canRelay: !n.STUNOnly,
  };
  if (n.IPv6) s.ipv6 = n.IPv6;
  if (n.CertName) s.certName = n.CertName;
  if (n.InsecureForTests) s.insecureForTests = true;
  if (n.STUNTestIP) s.stunTestIP = n.STUNTestIP;
  if (n.CanPort80) s.canPort80 = true;
  return s;
}

/**
 * Reads a decoded Tailscale map into the model, recording structural problems in `issues` (and
 * skipping what cannot be read) so that every problem is reported at once.
 */
export function readTailscale(value: unknown, issues: Issues): ReadResult {
  const map: DERPMap = { regions: {} };
  const broken = new Set<DERPServer>();
  const result = { map, broken };
  if (!isPlainObject(value)) {
    issues.add([], `expected a JSON object (a DERP map), found ${describeValue(value)}`);
    return result;
  }
  const top = pickFields(value, MAP_FIELDS, [], issues);
  const scalars = checkShape(MAP_SHAPE, top, [], issues, EXPECT);
  if (scalars?.omitDefaultRegions) map.omitDefaultRegions = true;
  readHomeParams(top.HomeParams, ['HomeParams'], issues, map);

  const regions = top.Regions;
  if (regions === undefined) {
    issues.add(['Regions'], 'required field missing (expected an object of regions keyed by region ID)');
    return result;
  }
  if (!isPlainObject(regions)) {
    issues.add(['Regions'], `expected an object of regions keyed by region ID, found ${describeValue(regions)}`);
    return result;
  }
  const keys = safeKeys(regions, ['Regions'], issues);
  if (keys.length > MAX_REGIONS) {
    issues.add(['Regions'], `too many regions: ${keys.length} (at most ${MAX_REGIONS})`);
    return result;
  }
  let present = 0;
  for (const key of keys) {
    const rv = regions[key];
    if (rv === null) continue; // Clients delete null regions (control/controlclient/map.go).
    present++;
    const rp: PathSeg[] = ['Regions', key];
    if (!isRegionKey(key)) {
      issues.add(rp, `expected a decimal region ID from 1 to 2^53-1 as the key, found ${JSON.stringify(key)}`);
      continue;
    }
    if (!isPlainObject(rv)) {
      issues.add(rp, `expected a region object, found ${describeValue(rv)}`);
      continue;
    }
    const rf = pickFields(rv, REGION_FIELDS, rp, issues);
    const r = checkShape(REGION_SHAPE, rf, rp, issues, EXPECT);
    const region: DERPRegion = {
      regionId: r?.RegionID ?? Number(key), // a missing/bad RegionID is already reported
      regionCode: r?.RegionCode ?? '',
      regionName: r?.RegionName ?? '',
      nodes: [],
    };
    if (r?.RegionID === undefined && rf.RegionID === undefined) issues.add([...rp, 'RegionID'], `required field missing (expected ${EXPECT.RegionID})`);
    if (r?.Latitude) region.latitude = r.Latitude;
    if (r?.Longitude) region.longitude = r.Longitude;
    if (r?.Avoid) region.avoid = true;
    if (r?.NoMeasureNoHome) region.noMeasureNoHome = true;
    map.regions[Number(key)] = region;

    const nodes = rf.Nodes;
    if (!Array.isArray(nodes)) {
      issues.add([...rp, 'Nodes'], `expected an array of nodes, found ${describeValue(nodes)}`);
      continue;
    }
    if (nodes.length === 0) issues.add([...rp, 'Nodes'], 'region has no nodes');
    if (nodes.length > MAX_NODES_PER_REGION) {
      issues.add([...rp, 'Nodes'], `too many nodes: ${nodes.length} (at most ${MAX_NODES_PER_REGION} per region)`);
      continue;
    }
    nodes.forEach((nv: unknown, i) => {
      const np: PathSeg[] = [...rp, 'Nodes', i];
      if (!isPlainObject(nv)) {
        issues.add(np, `expected a node object, found ${describeValue(nv)}`);
        return;
      }
      const n = checkShape(NODE_SHAPE, pickFields(nv, NODE_FIELDS, np, issues), np, issues, EXPECT);
      if (n) region.nodes.push(nodeFromTailscale(n, { RegionCode: region.regionCode }));
      else {
        // Its problems are already recorded; semantic checks skip the stand-in.
        const b = brokenNode(region);
        broken.add(b);
        region.nodes.push(b);
      }
    });
  }
  if (present === 0) issues.add(['Regions'], 'the map has no regions');
  return result;
}

/** A stand-in for a node that failed its type checks, so later nodes keep their index in paths. */
export function brokenNode(region: DERPRegion): DERPServer {
  return { id: '', hostname: '', stunPort: DEFAULT_STUN_PORT, derpPort: DEFAULT_DERP_PORT, region: region.regionCode, regionCode: region.regionId, canStun: true, canRelay: true };
}

/** What a reader produced: the model plus the stand-ins that semantic checks must skip. */
export interface ReadResult {
  map: DERPMap;
  broken: Set<DERPServer>;
}

/** HomeParams / homeParams (same shape in both JSON schemas, different key casing). */
export function readHomeParams(hp: unknown, path: PathSeg[], issues: Issues, map: DERPMap, scoreKey = 'RegionScore'): void {
  if (hp === undefined) return;
  if (!isPlainObject(hp)) {
    issues.add(path, `expected an object, found ${describeValue(hp)}`);
    return;
  }
  map.homeParams = {};
  const rs = pickFields(hp, [scoreKey], path, issues)[scoreKey];
  if (rs === undefined) return;
  const sp = [...path, scoreKey];
  if (!isPlainObject(rs)) {
    issues.add(sp, `expected an object of region ID → number, found ${describeValue(rs)}`);
    return;
  }
  const score: Record<number, number> = {};
  const keys = safeKeys(rs, sp, issues);
  if (keys.length > MAX_REGIONS) {
    issues.add(sp, `too many entries: ${keys.length} (at most ${MAX_REGIONS})`);
    return;
  }
  for (const k of keys) {
    const v = rs[k];
    if (!isRegionKey(k)) issues.add([...sp, k], `expected a decimal region ID as the key, found ${JSON.stringify(k)}`);
    else if (typeof v !== 'number' || !Number.isFinite(v)) issues.add([...sp, k], `expected a number, found ${describeValue(v)}`);
    else score[Number(k)] = v;
  }
  if (Object.keys(score).length > 0) map.homeParams.regionScore = score;
}

/** Parses and validates a decoded Tailscale DERP map object (e.g. `JSON.parse` output). */
export function fromTailscaleJson(obj: unknown, source = 'object'): DERPMap {
  const issues = new Issues(source);
  const { map, broken } = readTailscale(obj, issues);
  checkMap(map, issues, tailscalePath, broken);
  issues.throwIfAny();
  return map;
}

/** §9.3: the model as Tailscale JSON with Go's key casing and omitempty; validates first. */
export function toTailscaleJson(map: DERPMap): TailscaleDERPMap {
  validateDerpMap(map);
  // Go field order: HomeParams, Regions, omitDefaultRegions.
  const out = {} as TailscaleDERPMap;
  if (map.homeParams) {
    out.HomeParams = {};
    const rs = map.homeParams.regionScore;
    if (rs && Object.keys(rs).length > 0) out.HomeParams.RegionScore = Object.fromEntries(Object.entries(rs));
  }
  out.Regions = {};
  for (const r of Object.values(map.regions)) {
    const region = { RegionID: r.regionId, RegionCode: r.regionCode, RegionName: r.regionName } as TailscaleDERPRegion;
    if (r.latitude) region.Latitude = r.latitude;
    if (r.longitude) region.Longitude = r.longitude;
    if (r.avoid) region.Avoid = true;
    if (r.noMeasureNoHome) region.NoMeasureNoHome = true;
    region.Nodes = r.nodes.map(nodeToTailscale);
    out.Regions[String(r.regionId)] = region;
  }
  if (map.omitDefaultRegions) out.omitDefaultRegions = true;
  return out;
}

function nodeToTailscale(s: DERPServer): TailscaleDERPNode {
  const n: TailscaleDERPNode = { Name: s.id, RegionID: s.regionCode, HostName: s.hostname };
  if (s.certName) n.CertName = s.certName;
  if (s.ipv4) n.IPv4 = s.ipv4;
  if (s.ipv6) n.IPv6 = s.ipv6;
  const bothDisabled = s.ipv4 === ADDR_DISABLED && s.ipv6 === ADDR_DISABLED;
  if (s.stunPort === NO_STUN_PORT || (!s.canStun && !bothDisabled)) n.STUNPort = NO_STUN_PORT;
  else if (s.stunPort !== DEFAULT_STUN_PORT && s.stunPort !== 0) n.STUNPort = s.stunPort;
  if (!s.canRelay) n.STUNOnly = true;
  if (s.derpPort && s.derpPort !== DEFAULT_DERP_PORT) n.DERPPort = s.derpPort;
  if (s.insecureForTests) n.InsecureForTests = true;
  if (s.stunTestIP) n.STUNTestIP = s.stunTestIP;
  if (s.canPort80) n.CanPort80 = true;
  return n;
}
