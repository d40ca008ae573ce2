/**
 * The seed's own JSON (DERPMap/DERPRegion/DERPServer with camelCase tags, shared/seed) ⇄ the model.
 * Extra Tailscale fields travel as optional camelCase keys (certName, canPort80, avoid, homeParams…).
 * Defaults: stunPort 0/absent ⇒ 3478, derpPort 0/absent ⇒ 443, canStun absent ⇒ stunPort != -1,
 * canRelay absent ⇒ true, a node's region/regionCode absent ⇒ its region's.
 */
import { z } from 'zod';
import { DEFAULT_DERP_PORT, DEFAULT_STUN_PORT, MAX_NODES_PER_REGION, MAX_PORT, MAX_REGION_ID, MAX_REGIONS, NO_STUN_PORT } from './constants.js';
import { checkShape, isPlainObject, pickFields, safeKeys } from './fields.js';
import { describeValue, Issues, type PathSeg } from './issues.js';
import { brokenNode, isRegionKey, readHomeParams, type ReadResult } from './tailscale.js';
import type { DERPMap, DERPRegion, DERPServer } from './types.js';
import { checkMap, seedPath, validateDerpMap } from './validate.js';

export interface SeedDERPServer {
  id: string;
  hostname: string;
  ipv4: string;
  ipv6?: string;
  stunPort: number;
  derpPort: number;
  region: string;
  regionCode: number;
  canStun: boolean;
  canRelay: boolean;
  certName?: string;
  insecureForTests?: boolean;
  plainHttp?: boolean;
  canPort80?: boolean;
  stunTestIP?: string;
}

export interface SeedDERPRegion {
  regionId: number;
  regionCode: string;
  regionName: string;
  nodes: SeedDERPServer[];
  avoid?: boolean;
  noMeasureNoHome?: boolean;
  latitude?: number;
  longitude?: number;
}

export interface SeedDERPMap {
  regions: Record<string, SeedDERPRegion>;
  homeParams?: { regionScore?: Record<string, number> };
  omitDefaultRegions?: boolean;
}

const port = (min: number) => z.number().int().min(min).max(MAX_PORT);

export const SEED_NODE_SHAPE = z.object({
  id: z.string().default(''),
  hostname: z.string().default(''),
  ipv4: z.string().optional(),
  ipv6: z.string().optional(),
  stunPort: port(NO_STUN_PORT).optional(),
  derpPort: port(0).optional(),
  region: z.string().optional(),
  regionCode: z.number().int().optional(),
  canStun: z.boolean().optional(),
  canRelay: z.boolean().optional(),
  certName: z.string().optional(),
  insecureForTests: z.boolean().optional(),
  plainHttp: z.boolean().optional(),
  canPort80: z.boolean().optional(),
  stunTestIP: z.string().optional(),
});
const NODE_FIELDS = Object.keys(SEED_NODE_SHAPE.shape);

const REGION_SHAPE = z.object({
  regionId: z.number().int().min(1).max(MAX_REGION_ID),
  regionCode: z.string().default(''),
  regionName: z.string().default(''),
  latitude: z.number().optional(),
  longitude: z.number().optional(),
  avoid: z.boolean().optional(),
  noMeasureNoHome: z.boolean().optional(),
});
const REGION_FIELDS = [...Object.keys(REGION_SHAPE.shape), 'nodes'];
const MAP_SHAPE = z.object({ omitDefaultRegions: z.boolean().optional() });

export const SEED_EXPECT: Record<string, string> = {
  id: 'a string', hostname: 'a string', ipv4: 'a string (IPv4 address, "" or "none")', ipv6: 'a string (IPv6 address, "" or "none")',
  stunPort: `an integer from ${NO_STUN_PORT} to ${MAX_PORT}`, derpPort: `an integer from 0 to ${MAX_PORT}`, region: 'a string',
  regionCode: 'an integer region ID', canStun: 'true or false', canRelay: 'true or false', certName: 'a string',
  insecureForTests: 'true or false', plainHttp: 'true or false', canPort80: 'true or false', stunTestIP: 'a string',
  regionId: 'an integer from 1 to 2^53-1', regionName: 'a string', latitude: 'a number', longitude: 'a number',
  avoid: 'true or false', noMeasureNoHome: 'true or false', omitDefaultRegions: 'true or false',
};

export type SeedNodeFields = z.infer<typeof SEED_NODE_SHAPE>;

/** Seed node fields (also the YAML server fields) → model node, applying the documented defaults. */
export function nodeFromSeed(n: SeedNodeFields, region: { regionId: number; regionCode: string }): DERPServer {
  const stunPort = n.stunPort === undefined || n.stunPort === 0 ? DEFAULT_STUN_PORT : n.stunPort;
  const s: DERPServer = {
    id: n.id,
    hostname: n.hostname,
    ipv4: n.ipv4 ?? '',
    stunPort,
    derpPort: n.derpPort ? n.derpPort : DEFAULT_DERP_PORT,
    region: region.regionCode,
    regionCode: n.regionCode ?? region.regionId,
    canStun: n.canStun ?? stunPort !== NO_STUN_PORT,
    canRelay: n.canRelay ?? true,
  };
  if (n.ipv6) s.ipv6 = n.ipv6;
  if (n.certName) s.certName = n.certName;
  if (n.insecureForTests) s.insecureForTests = true;
  if (n.plainHttp) s.plainHttp = true;
  if (n.canPort80) s.canPort80 = true;
  if (n.stunTestIP) s.stunTestIP = n.stunTestIP;
  return s;
}

export function readSeed(value: unknown, issues: Issues): ReadResult {
  const map: DERPMap = { regions: {} };
  const broken = new Set<DERPServer>();
  const result = { map, broken };
  if (!isPlainObject(value)) {
    issues.add([], `expected a JSON object (a DERP map), found ${describeValue(value)}`);
    return result;
  }
  const top = pickFields(value, ['regions', 'homeParams', 'omitDefaultRegions'], [], issues);
  if (checkShape(MAP_SHAPE, top, [], issues, SEED_EXPECT)?.omitDefaultRegions) map.omitDefaultRegions = true;
  readHomeParams(top.homeParams, ['homeParams'], issues, map, 'regionScore');
  const regions = top.regions;
  if (!isPlainObject(regions)) {
    issues.add(['regions'], `expected an object of regions keyed by region ID, found ${describeValue(regions)}`);
    return result;
  }
  const keys = safeKeys(regions, ['regions'], issues);
  if (keys.length > MAX_REGIONS) {
    issues.add(['regions'], `too many regions: ${keys.length} (at most ${MAX_REGIONS})`);
    return result;
  }
  if (keys.length === 0) issues.add(['regions'], 'the map has no regions');
  for (const key of keys) {
    const rv = regions[key];
    const rp: PathSeg[] = ['regions', key];
    if (!isRegionKey(key)) {
      issues.add(rp, `expected a decimal region ID from 1 to 2^53-1 as the key, found ${JSON.stringify(key)}`);
      continue;
    }
    if (!isPlainObject(rv)) {
      issues.add(rp, `expected a region object, found ${describeValue(rv)}`);
      continue;
    }
    const rf = pickFields(rv, REGION_FIELDS, rp, issues);
    const r = checkShape(REGION_SHAPE, rf, rp, issues, SEED_EXPECT);
    const region: DERPRegion = { regionId: r?.regionId ?? Number(key), regionCode: r?.regionCode ?? '', regionName: r?.regionName ?? '', nodes: [] };
    if (r?.latitude) region.latitude = r.latitude;
    if (r?.longitude) region.longitude = r.longitude;
    if (r?.avoid) region.avoid = true;
    if (r?.noMeasureNoHome) region.noMeasureNoHome = true;
    map.regions[Number(key)] = region;
    const nodes = rf.nodes;
    if (!Array.isArray(nodes)) {
      issues.add([...rp, 'nodes'], `expected an array of nodes, found ${describeValue(nodes)}`);
      continue;
    }
    if (nodes.length === 0) issues.add([...rp, 'nodes'], 'region has no nodes');
    if (nodes.length > MAX_NODES_PER_REGION) {
      issues.add([...rp, 'nodes'], `too many nodes: ${nodes.length} (at most ${MAX_NODES_PER_REGION} per region)`);
      continue;
    }
    nodes.forEach((nv: unknown, i) => {
      const np: PathSeg[] = [...rp, 'nodes', i];
      const n = isPlainObject(nv) ? checkShape(SEED_NODE_SHAPE, pickFields(nv, NODE_FIELDS, np, issues), np, issues, SEED_EXPECT) : undefined;
      if (!isPlainObject(nv)) issues.add(np, `expected a node object, found ${describeValue(nv)}`);
      if (n?.region && n.region !== region.regionCode) {
        issues.add([...np, 'region'], `node region ${JSON.stringify(n.region)} does not match the enclosing region code ${JSON.stringify(region.regionCode)}`);
      }
      if (n) region.nodes.push(nodeFromSeed(n, region));
      else {
        const b = brokenNode(region);
        broken.add(b);
        region.nodes.push(b);
      }
    });
  }
  return result;
}

/** Parses and validates a decoded seed-schema map object. */
export function fromSeedJson(obj: unknown, source = 'object'): DERPMap {
  const issues = new Issues(source);
  const { map, broken } = readSeed(obj, issues);
  checkMap(map, issues, seedPath, broken);
  issues.throwIfAny();
  return map;
}

/** The model as the seed's JSON (camelCase; ipv4 always present like the seed's Go tag). */
export function toSeedJson(map: DERPMap): SeedDERPMap {
  validateDerpMap(map);
  const out: SeedDERPMap = { regions: {} };
  for (const r of Object.values(map.regions)) {
    const region: SeedDERPRegion = { regionId: r.regionId, regionCode: r.regionCode, regionName: r.regionName, nodes: r.nodes.map(nodeToSeed) };
    if (r.avoid) region.avoid = true;
    if (r.noMeasureNoHome) region.noMeasureNoHome = true;
    if (r.latitude) region.latitude = r.latitude;
    if (r.longitude) region.longitude = r.longitude;
    out.regions[String(r.regionId)] = region;
  }
  if (map.homeParams) {
    out.homeParams = {};
    const rs = map.homeParams.regionScore;
    if (rs && Object.keys(rs).length > 0) out.homeParams.regionScore = Object.fromEntries(Object.entries(rs));
  }
  if (map.omitDefaultRegions) out.omitDefaultRegions = true;
  return out;
}

function nodeToSeed(s: DERPServer): SeedDERPServer {
  const n: SeedDERPServer = {
    id: s.id,
    hostname: s.hostname,
    ipv4: s.ipv4 ?? '',
    stunPort: s.stunPort,
    derpPort: s.derpPort || DEFAULT_DERP_PORT,
    region: s.region,
    regionCode: s.regionCode,
    canStun: s.canStun,
    canRelay: s.canRelay,
  };
  if (s.ipv6) n.ipv6 = s.ipv6;
  if (s.certName) n.certName = s.certName;
  if (s.insecureForTests) n.insecureForTests = true;
  if (s.plainHttp) n.plainHttp = true;
  if (s.canPort80) n.canPort80 = true;
  if (s.stunTestIP) n.stunTestIP = s.stunTestIP;
  return n;
}
