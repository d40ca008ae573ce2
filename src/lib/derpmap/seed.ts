/**
 * The seed's own JSON (DERPMap/DERPRegion/DERPServer with camelCase tags, shared/seed) ⇄ the model.
 * Extra Tailscale fields travel as optional camelCase keys (certName, canPort80, avoid, homeParams…).
 * Defaults: stunPort 0/absent ⇒ 3478, derpPort 0/absent ⇒ 443, canStun absent ⇒ stunPort != -1,
 * canRelay absent ⇒ true, a node's region/regionCode absent ⇒ its region's.
 */
import { z } from 'zod';
import { DEFAULT_DERP_PORT, DEFAULT_STUN_PORT, MAX_PORT, MAX_REGION_ID, NO_STUN_PORT } from './constants.js';
import { Issues } from './issues.js';
import { readJsonMap, type JsonMapSchema, type ReadResult } from './jsonmap.js';
import type { DERPMap, DERPServer } from './types.js';
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

const SEED_SCHEMA: JsonMapSchema<z.infer<typeof REGION_SHAPE>, SeedNodeFields> = {
  keys: { regions: 'regions', homeParams: 'homeParams', regionScore: 'regionScore', nodes: 'nodes', regionId: 'regionId' },
  regionShape: REGION_SHAPE,
  regionFields: REGION_FIELDS,
  regionOf: (r) => r,
  nodeShape: SEED_NODE_SHAPE,
  nodeFields: NODE_FIELDS,
  expect: SEED_EXPECT,
  node: (n, region, np, issues) => {
    if (n.region && n.region !== region.regionCode) {
      issues.add([...np, 'region'], `node region ${JSON.stringify(n.region)} does not match the enclosing region code ${JSON.stringify(region.regionCode)}`);
    }
    return nodeFromSeed(n, region);
  },
  regionsRequired: false,
  nullRegionsDeleted: false,
  regionIdCheckedAfterShape: false,
};

export function readSeed(value: unknown, issues: Issues): ReadResult {
  return readJsonMap(value, issues, SEED_SCHEMA);
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
