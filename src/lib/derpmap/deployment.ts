/**
 * The seed's YAML deployment form (`derp: servers: [...]`) ⇄ the model.
 *
 * Reading, deterministically:
 * - Servers are grouped into regions by `regionId` when given, else by their `region` string; regions
 *   (and the nodes inside them) keep the order of first appearance in the file.
 * - A region without an explicit `regionId` gets the lowest free ID from 900 (IDs 900–999 are reserved
 *   for user-run DERP), in order of first appearance; explicit IDs are never reused. More than the
 *   100 IDs of that range is an error (give `regionId` explicitly).
 * - RegionCode = `region`; RegionName = `regionName` if given, else `region`.
 * - A server without `id` is named `<regionId><letter>` by its position in the region: 900a, 900b, …,
 *   900z, 900aa, … (Tailscale's naming).
 * - stunPort absent/0 ⇒ 3478, -1 ⇒ no STUN; derpPort absent/0 ⇒ 443; canRelay absent ⇒ true.
 * - Region-level fields (regionName, latitude, longitude, avoid, noMeasureNoHome) may appear on any of
 *   the region's servers; conflicting values are an error. `derp.homeParams` / `derp.omitDefaultRegions`
 *   carry the map-level fields.
 */
import { stringify } from 'yaml';
import { z } from 'zod';
import { DEFAULT_DERP_PORT, MAX_NODES_PER_REGION, MAX_REGION_ID, MAX_REGIONS, SELF_HOSTED_REGION_FIRST, SELF_HOSTED_REGION_LAST } from './constants.js';
import { checkShape, isPlainObject, pickFields } from './fields.js';
import { describeValue, Issues, type PathSeg } from './issues.js';
import { nodeFromSeed, SEED_EXPECT, SEED_NODE_SHAPE } from './seed.js';
import { brokenNode, readHomeParams, type ReadResult } from './jsonmap.js';
import type { DERPMap, DERPRegion, DERPServer } from './types.js';
import { checkMap, validateDerpMap, type PathOf } from './validate.js';

const SERVER_SHAPE = SEED_NODE_SHAPE.extend({
  region: z.string().min(1).optional(),
  regionId: z.number().int().min(1).max(MAX_REGION_ID).optional(),
  regionName: z.string().optional(),
  latitude: z.number().optional(),
  longitude: z.number().optional(),
  avoid: z.boolean().optional(),
  noMeasureNoHome: z.boolean().optional(),
});
/** Field names of one `derp.servers[]` entry (config files reject others). */
export const SERVER_FIELDS: readonly string[] = Object.keys(SERVER_SHAPE.shape);
const EXPECT: Record<string, string> = { ...SEED_EXPECT, region: 'a non-empty string (the region code)' };
const MAX_SERVERS = MAX_REGIONS * MAX_NODES_PER_REGION;

export interface DeploymentServer {
  region: string;
  regionId?: number;
  regionName?: string;
  latitude?: number;
  longitude?: number;
  avoid?: boolean;
  noMeasureNoHome?: boolean;
  id?: string;
  hostname: string;
  ipv4?: string;
  ipv6?: string;
  stunPort: number;
  derpPort: number;
  canRelay?: boolean;
  canStun?: boolean;
  certName?: string;
  insecureForTests?: boolean;
  plainHttp?: boolean;
  canPort80?: boolean;
  stunTestIP?: string;
}

export interface DeploymentConfig {
  derp: {
    servers: DeploymentServer[];
    homeParams?: { regionScore?: Record<string, number> };
    omitDefaultRegions?: boolean;
  };
}

/** Tailscale-style node suffix: 0 → a, 25 → z, 26 → aa. */
export function nodeLetters(index: number): string {
  let s = '';
  for (let n = index + 1; n > 0; n = Math.floor((n - 1) / 26)) s = String.fromCharCode(97 + ((n - 1) % 26)) + s;
  return s;
}

type Server = z.infer<typeof SERVER_SHAPE>;

/** Reads a decoded deployment document; `pathOf` maps model refs back to `derp.servers[i]`. */
export function readDeployment(value: unknown, issues: Issues): ReadResult & { pathOf: PathOf } {
  const map: DERPMap = { regions: {} };
  const broken = new Set<DERPServer>();
  const serverIndex = new Map<string, number>(); // "<regionKey>/<nodeIndex>" → servers index
  const pathOf: PathOf = (ref) => {
    if (ref.field === 'regionScore') return ['derp', 'homeParams', 'regionScore'];
    if (ref.region === undefined) return ['derp', 'servers'];
    const i = serverIndex.get(`${ref.region}/${ref.node ?? 0}`);
    const p: PathSeg[] = ['derp', 'servers', ...(i === undefined ? [] : [i])];
    if (ref.field) p.push(ref.field === 'regionCode' ? 'regionId' : ref.field === 'nodes' ? 'region' : ref.field);
    return p;
  };
  const result = { map, broken, pathOf };
  const top = isPlainObject(value) ? pickFields(value, ['derp'], [], issues).derp : undefined;
  if (!isPlainObject(top)) {
    issues.add(['derp'], `expected a "derp:" mapping with a "servers:" list, found ${describeValue(top)}`);
    return result;
  }
  const d = pickFields(top, ['servers', 'homeParams', 'omitDefaultRegions'], ['derp'], issues);
  readHomeParams(d.homeParams, ['derp', 'homeParams'], issues, map, 'regionScore');
  if (d.omitDefaultRegions !== undefined) {
    if (typeof d.omitDefaultRegions !== 'boolean') issues.add(['derp', 'omitDefaultRegions'], `expected true or false, found ${describeValue(d.omitDefaultRegions)}`);
    else if (d.omitDefaultRegions) map.omitDefaultRegions = true;
  }
  const servers = d.servers;
  if (!Array.isArray(servers) || servers.length === 0) {
    issues.add(['derp', 'servers'], `expected a non-empty list of servers, found ${describeValue(servers)}`);
    return result;
  }
  if (servers.length > MAX_SERVERS) {
    issues.add(['derp', 'servers'], `too many servers: ${servers.length} (at most ${MAX_SERVERS})`);
    return result;
  }

  // Pass 1: type checks and grouping.
  interface Group { key: string; explicitId?: number; members: { s: Server | undefined; index: number }[]; code: string }
  const groups = new Map<string, Group>();
  servers.forEach((sv: unknown, i) => {
    const sp: PathSeg[] = ['derp', 'servers', i];
    if (!isPlainObject(sv)) {
      issues.add(sp, `expected a server mapping, found ${describeValue(sv)}`);
      return;
    }
    const f = pickFields(sv, SERVER_FIELDS, sp, issues);
    const s = checkShape(SERVER_SHAPE, f, sp, issues, EXPECT);
    if (f.region === undefined && f.regionId === undefined) issues.add([...sp, 'region'], `required field missing (expected ${EXPECT.region})`);
    if (!s) return;
    const key = s.regionId !== undefined ? `id:${s.regionId}` : `code:${s.region}`;
    let g = groups.get(key);
    if (!g) {
      g = { key, members: [], code: s.region ?? '', ...(s.regionId !== undefined ? { explicitId: s.regionId } : {}) };
      groups.set(key, g);
    }
    g.members.push({ s, index: i });
  });
  if (groups.size > MAX_REGIONS) {
    issues.add(['derp', 'servers'], `too many regions: ${groups.size} (at most ${MAX_REGIONS})`);
    return result;
  }

  // Pass 2: region IDs, lowest free from 900 in order of first appearance.
  const used = new Set([...groups.values()].flatMap((g) => (g.explicitId === undefined ? [] : [g.explicitId])));
  let next = SELF_HOSTED_REGION_FIRST;
  for (const g of groups.values()) {
    let id = g.explicitId;
    if (id === undefined) {
      while (used.has(next)) next++;
      if (next > SELF_HOSTED_REGION_LAST) {
        issues.add(['derp', 'servers', g.members[0]?.index ?? 0, 'region'], `no free region ID left in ${SELF_HOSTED_REGION_FIRST}–${SELF_HOSTED_REGION_LAST} for region ${JSON.stringify(g.code)}: set regionId`);
        continue;
      }
      id = next;
      used.add(id);
    }
    const region: DERPRegion = { regionId: id, regionCode: g.code, regionName: '', nodes: [] };
    // Region-level fields: the first server that sets each one wins; a different value is an error.
    const setOnce = <K extends 'regionCode' | 'regionName' | 'latitude' | 'longitude' | 'avoid' | 'noMeasureNoHome'>(
      k: K, v: DERPRegion[K] | undefined, path: PathSeg[], seen: Map<string, unknown>,
    ) => {
      if (v === undefined || v === '') return;
      if (seen.has(k) && seen.get(k) !== v) issues.add(path, `conflicts with ${describeValue(seen.get(k))} given by another server of region ${id}`);
      else {
        seen.set(k, v);
        region[k] = v as DERPRegion[K];
      }
    };
    const seen = new Map<string, unknown>();
    if (g.members.length > MAX_NODES_PER_REGION) {
      issues.add(['derp', 'servers'], `too many servers in region ${id}: ${g.members.length} (at most ${MAX_NODES_PER_REGION})`);
      continue;
    }
    g.members.forEach(({ s, index }) => {
      const sp: PathSeg[] = ['derp', 'servers', index];
      if (!s) return;
      setOnce('regionCode', s.region, [...sp, 'region'], seen);
      setOnce('regionName', s.regionName, [...sp, 'regionName'], seen);
      setOnce('latitude', s.latitude || undefined, [...sp, 'latitude'], seen);
      setOnce('longitude', s.longitude || undefined, [...sp, 'longitude'], seen);
      setOnce('avoid', s.avoid || undefined, [...sp, 'avoid'], seen);
      setOnce('noMeasureNoHome', s.noMeasureNoHome || undefined, [...sp, 'noMeasureNoHome'], seen);
    });
    if (!region.regionName) region.regionName = region.regionCode;
    g.members.forEach(({ s, index }, n) => {
      serverIndex.set(`${id}/${n}`, index);
      if (!s) {
        const b = brokenNode(region);
        broken.add(b);
        region.nodes.push(b);
        return;
      }
      const node = nodeFromSeed({ ...s, id: s.id || `${id}${nodeLetters(n)}`, region: region.regionCode, regionCode: id }, region);
      region.nodes.push(node);
    });
    map.regions[id] = region;
  }
  return result;
}

/** Parses and validates a decoded YAML deployment document (`{ derp: { servers: [...] } }`). */
export function fromYamlDeployment(obj: unknown, source = 'object'): DERPMap {
  const issues = new Issues(source);
  const { map, broken, pathOf } = readDeployment(obj, issues);
  checkMap(map, issues, pathOf, broken);
  issues.throwIfAny();
  return map;
}

/** The model as a deployment document; regionId/id are written so reading it back is exact. */
export function toDeploymentConfig(map: DERPMap): DeploymentConfig {
  validateDerpMap(map);
  const servers: DeploymentServer[] = [];
  for (const r of Object.values(map.regions)) {
    r.nodes.forEach((n, i) => {
      const s: DeploymentServer = { region: r.regionCode, regionId: r.regionId } as DeploymentServer;
      if (i === 0) {
        if (r.regionName && r.regionName !== r.regionCode) s.regionName = r.regionName;
        if (r.latitude) s.latitude = r.latitude;
        if (r.longitude) s.longitude = r.longitude;
        if (r.avoid) s.avoid = true;
        if (r.noMeasureNoHome) s.noMeasureNoHome = true;
      }
      s.id = n.id;
      s.hostname = n.hostname;
      if (n.ipv4) s.ipv4 = n.ipv4;
      if (n.ipv6) s.ipv6 = n.ipv6;
      s.stunPort = n.canStun ? n.stunPort : -1;
      s.derpPort = n.derpPort || DEFAULT_DERP_PORT;
      if (!n.canRelay) s.canRelay = false;
      if (n.certName) s.certName = n.certName;
      if (n.insecureForTests) s.insecureForTests = true;
      if (n.plainHttp) s.plainHttp = true;
      if (n.canPort80) s.canPort80 = true;
      if (n.stunTestIP) s.stunTestIP = n.stunTestIP;
      servers.push(s);
    });
  }
  const out: DeploymentConfig = { derp: { servers } };
  if (map.homeParams) {
    out.derp.homeParams = {};
    const rs = map.homeParams.regionScore;
    if (rs && Object.keys(rs).length > 0) out.derp.homeParams.regionScore = Object.fromEntries(Object.entries(rs));
  }
  if (map.omitDefaultRegions) out.derp.omitDefaultRegions = true;
  return out;
}

/** `toDeploymentConfig` as YAML text. */
export function toYamlDeployment(map: DERPMap): string {
  return stringify(toDeploymentConfig(map));
}
