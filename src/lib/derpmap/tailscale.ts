/**
 * Tailscale's DERP map JSON (tailcfg/derpmap.go) ⇄ the model (spec derp-map.md §2–§5, §9.2, §9.3).
 */
import { z } from 'zod';
import { ADDR_DISABLED, DEFAULT_DERP_PORT, DEFAULT_STUN_PORT, MAX_PORT, MAX_REGION_ID, NO_STUN_PORT } from './constants.js';
import { Issues } from './issues.js';
import { readJsonMap, type JsonMapSchema, type ReadResult } from './jsonmap.js';
import type { DERPMap, DERPServer } from './types.js';
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

const EXPECT: Record<string, string> = {
  Name: 'a string', RegionID: 'an integer from 1 to 2^53-1', HostName: 'a string', CertName: 'a string',
  IPv4: 'a string (IPv4 address, "" or "none")', IPv6: 'a string (IPv6 address, "" or "none")',
  STUNPort: `an integer from ${NO_STUN_PORT} to ${MAX_PORT}`, DERPPort: `an integer from 0 to ${MAX_PORT}`,
  STUNOnly: 'true or false', InsecureForTests: 'true or false', STUNTestIP: 'a string', CanPort80: 'true or false',
  RegionCode: 'a string', RegionName: 'a string', Latitude: 'a number', Longitude: 'a number', Avoid: 'true or false',
  NoMeasureNoHome: 'true or false', omitDefaultRegions: 'true or false',
};

function disabled(ip: string | undefined): boolean {
  return ip !== undefined && ip !== '' && ip === ADDR_DISABLED;
}

/** §9.2, one node. */
function nodeFromTailscale(n: TailscaleDERPNode, regionCode: string): DERPServer {
  const s: DERPServer = {
    id: n.Name,
    hostname: n.HostName,
    ipv4: n.IPv4 ?? '',
    stunPort: n.STUNPort === 0 || n.STUNPort === undefined ? DEFAULT_STUN_PORT : n.STUNPort,
    derpPort: n.DERPPort ? n.DERPPort : DEFAULT_DERP_PORT,
    region: regionCode,
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

const TAILSCALE_SCHEMA: JsonMapSchema<z.infer<typeof REGION_SHAPE>, TailscaleDERPNode> = {
  keys: { regions: 'Regions', homeParams: 'HomeParams', regionScore: 'RegionScore', nodes: 'Nodes', regionId: 'RegionID' },
  regionShape: REGION_SHAPE,
  regionFields: REGION_FIELDS,
  regionOf: (r) => ({
    regionId: r.RegionID,
    regionCode: r.RegionCode,
    regionName: r.RegionName,
    latitude: r.Latitude,
    longitude: r.Longitude,
    avoid: r.Avoid,
    noMeasureNoHome: r.NoMeasureNoHome,
  }),
  nodeShape: NODE_SHAPE,
  nodeFields: NODE_FIELDS,
  expect: EXPECT,
  node: (n, region) => nodeFromTailscale(n, region.regionCode),
  regionsRequired: true,
  nullRegionsDeleted: true,
  regionIdCheckedAfterShape: true,
};

/**
 * Reads a decoded Tailscale map into the model, recording structural problems in `issues` (and
 * skipping what cannot be read) so that every problem is reported at once.
 */
export function readTailscale(value: unknown, issues: Issues): ReadResult {
  return readJsonMap(value, issues, TAILSCALE_SCHEMA);
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
