/** Semantic checks shared by every input schema (spec derp-map.md §4, §5, §9.3). */
import { isIP } from 'node:net';
import { ADDR_DISABLED, MAX_PORT, MAX_REGION_ID, NO_STUN_PORT, SHA256_RAW_PREFIX } from './constants.js';
import { Issues, formatPath, type PathSeg } from './issues.js';
import type { DERPMap, DERPServer } from './types.js';

/** Logical field names of the model; each schema maps them to its own key names. */
export type NodeField =
  | 'id' | 'hostname' | 'ipv4' | 'ipv6' | 'stunPort' | 'derpPort' | 'regionCode' | 'canStun' | 'canRelay' | 'certName' | 'stunTestIP';
export type RegionField = 'regionId' | 'nodes';

/** Where a problem is: a region (by its key in `regions`), optionally a node by index, optionally a field. */
export interface Ref {
  region?: number;
  node?: number;
  field?: NodeField | RegionField | 'regionScore';
}

export type PathOf = (ref: Ref) => PathSeg[];

const TS_NODE: Record<NodeField, string> = {
  id: 'Name', hostname: 'HostName', ipv4: 'IPv4', ipv6: 'IPv6', stunPort: 'STUNPort', derpPort: 'DERPPort',
  regionCode: 'RegionID', canStun: 'STUNPort', canRelay: 'STUNOnly', certName: 'CertName', stunTestIP: 'STUNTestIP',
};

/** Paths in Tailscale's naming: `Regions["900"].Nodes[1].STUNPort`. */
export const tailscalePath: PathOf = (ref) => {
  const p: PathSeg[] = [];
  if (ref.field === 'regionScore') return ['HomeParams', 'RegionScore', ...(ref.region === undefined ? [] : [String(ref.region)])];
  if (ref.region === undefined) return ['Regions'];
  p.push('Regions', String(ref.region));
  if (ref.node !== undefined) {
    p.push('Nodes', ref.node);
    if (ref.field) p.push(TS_NODE[ref.field as NodeField]);
  } else if (ref.field) p.push(ref.field === 'regionId' ? 'RegionID' : 'Nodes');
  return p;
};

/** Paths in the seed's camelCase naming: `regions["900"].nodes[1].stunPort`. */
export const seedPath: PathOf = (ref) => {
  if (ref.field === 'regionScore') return ['homeParams', 'regionScore', ...(ref.region === undefined ? [] : [String(ref.region)])];
  if (ref.region === undefined) return ['regions'];
  const p: PathSeg[] = ['regions', String(ref.region)];
  if (ref.node !== undefined) p.push('nodes', ref.node);
  if (ref.field) p.push(ref.field);
  return p;
};

export function isIPv4(s: string): boolean {
  return isIP(s) === 4;
}
export function isIPv6(s: string): boolean {
  return isIP(s) === 6;
}

/** "" (DNS), "none" (disabled) or a literal of the right family. */
function addrProblem(v: string | undefined, family: 4 | 6): string | undefined {
  if (v === undefined || v === '' || v === ADDR_DISABLED) return undefined;
  if (isIP(v) === family) return undefined;
  return `expected an IPv${family} address, "" (resolve the host name) or "${ADDR_DISABLED}", found ${JSON.stringify(v)}`;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Checks a model map; every problem goes to `issues` at `pathOf(ref)`. */
export function checkMap(map: DERPMap, issues: Issues, pathOf: PathOf, skip: ReadonlySet<DERPServer> = new Set()): void {
  const at = (ref: Ref, msg: string) => issues.add(pathOf(ref), msg);
  const names = new Map<string, Ref>();
  for (const [key, r] of Object.entries(map.regions)) {
    const rk = Number(key);
    if (!Number.isSafeInteger(r.regionId) || r.regionId < 1 || r.regionId > MAX_REGION_ID) {
      at({ region: rk, field: 'regionId' }, `expected a region ID from 1 to 2^53-1, found ${r.regionId}`);
    } else if (r.regionId !== rk) {
      at({ region: rk, field: 'regionId' }, `region ID ${r.regionId} does not match its key "${key}"`);
    }
    r.nodes.forEach((n, i) => {
      if (skip.has(n)) return;
      const ref = (field?: NodeField): Ref => ({ region: rk, node: i, ...(field ? { field } : {}) });
      if (n.id === '') at(ref('id'), 'node name is empty (names must be unique across the map)');
      else {
        const first = names.get(n.id);
        if (first) at(ref('id'), `node name ${JSON.stringify(n.id)} is already used by ${formatPath(pathOf(first))}`);
        else names.set(n.id, ref());
      }
      if (n.regionCode !== r.regionId) at(ref('regionCode'), `node region ID ${n.regionCode} does not match the enclosing region ${r.regionId}`);
      const v4 = addrProblem(n.ipv4, 4);
      const v6 = addrProblem(n.ipv6, 6);
      if (v4) at(ref('ipv4'), v4);
      if (v6) at(ref('ipv6'), v6);
      if (n.hostname === '' && !(n.ipv4 && isIPv4(n.ipv4)) && !(n.ipv6 && isIPv6(n.ipv6))) {
        at(ref('hostname'), 'host name is empty and no IPv4/IPv6 address is given');
      }
      if (n.ipv4 === ADDR_DISABLED && n.ipv6 === ADDR_DISABLED) {
        at(ref('ipv4'), `IPv4 and IPv6 are both "${ADDR_DISABLED}": the node cannot be reached`);
      }
      if (!Number.isInteger(n.stunPort) || n.stunPort < NO_STUN_PORT || n.stunPort > MAX_PORT) {
        at(ref('stunPort'), `expected an integer from ${NO_STUN_PORT} to ${MAX_PORT}, found ${n.stunPort}`);
      }
      if (!Number.isInteger(n.derpPort) || n.derpPort < 0 || n.derpPort > MAX_PORT) {
        at(ref('derpPort'), `expected an integer from 0 to ${MAX_PORT}, found ${n.derpPort}`);
      }
      if (n.canStun && n.stunPort === NO_STUN_PORT) at(ref('canStun'), 'STUN is enabled but the STUN port is -1 (no STUN)');
      if (!n.canStun && !n.canRelay) at(ref('canRelay'), 'node offers neither STUN nor DERP relaying (no STUN port and STUN-only): useless');
      if (n.certName?.startsWith(SHA256_RAW_PREFIX) && !SHA256_HEX.test(n.certName.slice(SHA256_RAW_PREFIX.length))) {
        at(ref('certName'), `expected "${SHA256_RAW_PREFIX}" followed by 64 lowercase hex digits, found ${JSON.stringify(n.certName)}`);
      }
      if (n.stunTestIP !== undefined && n.stunTestIP !== '' && isIP(n.stunTestIP) === 0) {
        at(ref('stunTestIP'), `expected an IP address, found ${JSON.stringify(n.stunTestIP)}`);
      }
    });
  }
  for (const [key, score] of Object.entries(map.homeParams?.regionScore ?? {})) {
    if (!/^[1-9]\d*$/.test(key)) at({ field: 'regionScore' }, `expected region IDs as keys, found ${JSON.stringify(key)}`);
    else if (!Number.isFinite(score)) at({ field: 'regionScore', region: Number(key) }, `expected a number, found ${String(score)}`);
  }
}

/** Validates a map built in code (paths in Tailscale naming); throws MapValidationError. */
export function validateDerpMap(map: DERPMap, source = 'map'): void {
  const issues = new Issues(source);
  if (Object.keys(map.regions).length === 0) issues.add(['Regions'], 'the map has no regions');
  for (const [key, r] of Object.entries(map.regions)) {
    if (r.nodes.length === 0) issues.add(tailscalePath({ region: Number(key), field: 'nodes' }), 'region has no nodes');
  }
  checkMap(map, issues, tailscalePath);
  issues.throwIfAny();
}
