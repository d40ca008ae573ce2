/**
 * Reading a DERP map in either JSON schema (Tailscale's or the seed's): the same structure under
 * different key names, so one reader serves both, given a schema's spellings, shapes and quirks.
 * Also the pieces the YAML deployment reader shares (stand-in nodes, HomeParams).
 */
import { z } from 'zod';
import { DEFAULT_DERP_PORT, DEFAULT_STUN_PORT, MAX_NODES_PER_REGION, MAX_REGION_ID, MAX_REGIONS } from './constants.js';
import { checkShape, isPlainObject, pickFields, safeKeys } from './fields.js';
import { describeValue, type Issues, type PathSeg } from './issues.js';
import type { DERPMap, DERPRegion, DERPServer } from './types.js';

/** What a reader produced: the model plus the stand-ins that semantic checks must skip. */
export interface ReadResult {
  map: DERPMap;
  broken: Set<DERPServer>;
}

/** A type-checked region's fields under the model's names, whatever the schema calls them. */
export interface RegionFields {
  regionId?: number | undefined;
  regionCode: string;
  regionName: string;
  latitude?: number | undefined;
  longitude?: number | undefined;
  avoid?: boolean | undefined;
  noMeasureNoHome?: boolean | undefined;
}

/** How one JSON schema spells and types a map (`R`, `N`: its checked region and node). */
export interface JsonMapSchema<R, N> {
  keys: { regions: string; homeParams: string; regionScore: string; nodes: string; regionId: string };
  regionShape: z.ZodType<R>;
  /** Every region key, `keys.nodes` included. */
  regionFields: readonly string[];
  regionOf: (r: R) => RegionFields;
  nodeShape: z.ZodType<N>;
  nodeFields: readonly string[];
  /** Field → "expected …" text for type errors. */
  expect: Readonly<Record<string, string>>;
  /** The model node; may record the schema's own node checks at `path`. */
  node: (n: N, region: DERPRegion, path: readonly PathSeg[], issues: Issues) => DERPServer;
  /** A missing regions object is reported as missing (Tailscale) rather than as "found nothing" (seed). */
  regionsRequired: boolean;
  /** Null regions are skipped: Tailscale clients delete them (control/controlclient/map.go). */
  nullRegionsDeleted: boolean;
  /** The shape leaves the region ID optional; its absence is reported after the shape's issues (Tailscale). */
  regionIdCheckedAfterShape: boolean;
}

const MAP_SHAPE = z.object({ omitDefaultRegions: z.boolean().optional() });

/** Decimal region key: "1", "900" (no sign, no leading zero, JS-safe). */
export const REGION_KEY = /^[1-9]\d{0,15}$/;

export function isRegionKey(k: string): boolean {
  return REGION_KEY.test(k) && Number(k) <= MAX_REGION_ID;
}

/** A stand-in for a node that failed its type checks, so later nodes keep their index in paths. */
export function brokenNode(region: DERPRegion): DERPServer {
  return { id: '', hostname: '', stunPort: DEFAULT_STUN_PORT, derpPort: DEFAULT_DERP_PORT, region: region.regionCode, regionCode: region.regionId, canStun: true, canRelay: true };
}

/**
 * Reads a decoded map in `schema` into the model, recording structural problems in `issues` (and
 * skipping what cannot be read) so that every problem is reported at once.
 */
export function readJsonMap<R, N>(value: unknown, issues: Issues, schema: JsonMapSchema<R, N>): ReadResult {
  const { keys } = schema;
  const map: DERPMap = { regions: {} };
  const broken = new Set<DERPServer>();
  const result = { map, broken };
  if (!isPlainObject(value)) {
    issues.add([], `expected a JSON object (a DERP map), found ${describeValue(value)}`);
    return result;
  }
  const top = pickFields(value, [keys.regions, keys.homeParams, 'omitDefaultRegions'], [], issues);
  if (checkShape(MAP_SHAPE, top, [], issues, schema.expect)?.omitDefaultRegions) map.omitDefaultRegions = true;
  readHomeParams(top[keys.homeParams], [keys.homeParams], issues, map, keys.regionScore);

  const regions = top[keys.regions];
  if (regions === undefined && schema.regionsRequired) {
    issues.add([keys.regions], 'required field missing (expected an object of regions keyed by region ID)');
    return result;
  }
  if (!isPlainObject(regions)) {
    issues.add([keys.regions], `expected an object of regions keyed by region ID, found ${describeValue(regions)}`);
    return result;
  }
  const regionKeys = safeKeys(regions, [keys.regions], issues);
  if (regionKeys.length > MAX_REGIONS) {
    issues.add([keys.regions], `too many regions: ${regionKeys.length} (at most ${MAX_REGIONS})`);
    return result;
  }
  let present = 0;
  for (const key of regionKeys) {
    const rv = regions[key];
    if (rv === null && schema.nullRegionsDeleted) continue;
    present++;
    const region = readRegion(key, rv, issues, schema, broken);
    if (region) map.regions[Number(key)] = region;
  }
  if (present === 0) issues.add([keys.regions], 'the map has no regions');
  return result;
}

/** One region (undefined when its key or value is unusable); its nodes as far as they can be read. */
function readRegion<R, N>(key: string, rv: unknown, issues: Issues, schema: JsonMapSchema<R, N>, broken: Set<DERPServer>): DERPRegion | undefined {
  const { keys } = schema;
  const rp: PathSeg[] = [keys.regions, key];
  if (!isRegionKey(key)) {
    issues.add(rp, `expected a decimal region ID from 1 to 2^53-1 as the key, found ${JSON.stringify(key)}`);
    return undefined;
  }
  if (!isPlainObject(rv)) {
    issues.add(rp, `expected a region object, found ${describeValue(rv)}`);
    return undefined;
  }
  const rf = pickFields(rv, schema.regionFields, rp, issues);
  const checked = checkShape(schema.regionShape, rf, rp, issues, schema.expect);
  const r = checked === undefined ? undefined : schema.regionOf(checked);
  // A missing/bad region ID is already reported; the key stands in.
  const region: DERPRegion = { regionId: r?.regionId ?? Number(key), regionCode: r?.regionCode ?? '', regionName: r?.regionName ?? '', nodes: [] };
  if (schema.regionIdCheckedAfterShape && r?.regionId === undefined && rf[keys.regionId] === undefined) {
    issues.add([...rp, keys.regionId], `required field missing (expected ${schema.expect[keys.regionId]})`);
  }
  if (r?.latitude) region.latitude = r.latitude;
  if (r?.longitude) region.longitude = r.longitude;
  if (r?.avoid) region.avoid = true;
  if (r?.noMeasureNoHome) region.noMeasureNoHome = true;

  const nodes = rf[keys.nodes];
  const nsp: PathSeg[] = [...rp, keys.nodes];
  if (!Array.isArray(nodes)) {
    issues.add(nsp, `expected an array of nodes, found ${describeValue(nodes)}`);
    return region;
  }
  if (nodes.length === 0) issues.add(nsp, 'region has no nodes');
  if (nodes.length > MAX_NODES_PER_REGION) {
    issues.add(nsp, `too many nodes: ${nodes.length} (at most ${MAX_NODES_PER_REGION} per region)`);
    return region;
  }
  nodes.forEach((nv: unknown, i) => {
    const np: PathSeg[] = [...nsp, i];
    let n: N | undefined;
    if (isPlainObject(nv)) n = checkShape(schema.nodeShape, pickFields(nv, schema.nodeFields, np, issues), np, issues, schema.expect);
    // A non-object node still gets a stand-in below, so later nodes keep their index in messages.
    else issues.add(np, `expected a node object, found ${describeValue(nv)}`);
    if (n) region.nodes.push(schema.node(n, region, np, issues));
    else {
      // Its problems are already recorded; semantic checks skip the stand-in.
      const b = brokenNode(region);
      broken.add(b);
      region.nodes.push(b);
    }
  });
  return region;
}

/** HomeParams / homeParams (same shape in all schemas, different key casing). */
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
