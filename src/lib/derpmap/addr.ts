/** What a consumer (netcheck, the client) needs from a map node (spec derp-map.md §5.1, §7). */
import { isIP } from 'node:net';
import { derpUrl } from '../protocol/http.js';
import { DEFAULT_STUN_PORT, MAX_PORT, NO_STUN_PORT } from './constants.js';
import type { DERPMap, DERPRegion, DERPServer } from './types.js';

/** Regions sorted by region ID. */
export function regionsOf(map: DERPMap): DERPRegion[] {
  return Object.values(map.regions).sort((a, b) => a.regionId - b.regionId);
}

/** Every node, regions by ID, nodes in preference order. */
export function nodesOf(map: DERPMap): DERPServer[] {
  return regionsOf(map).flatMap((r) => r.nodes);
}

/** The node with this DERPNode.Name, if any. */
export function findNode(map: DERPMap, name: string): DERPServer | undefined {
  return nodesOf(map).find((n) => n.id === name);
}

export interface StunTarget {
  family: 4 | 6;
  /** An IP literal (resolve false) or the host name to look up (A for 4, AAAA for 6). */
  host: string;
  port: number;
  resolve: boolean;
}

/**
 * Where to send STUN, per family, exactly as netcheck's nodeAddrPort: no STUN (-1, or a port out of
 * range) ⇒ none; STUNTestIP overrides (only its own family); else a valid literal of the family is
 * used as is, "" means DNS of the host name, anything else ("none") disables the family.
 */
export function stunTargets(node: DERPServer): StunTarget[] {
  const port = node.stunPort === 0 ? DEFAULT_STUN_PORT : node.stunPort;
  if (!node.canStun || port === NO_STUN_PORT || port < 0 || port > MAX_PORT) return [];
  if (node.stunTestIP) {
    const fam = isIP(node.stunTestIP);
    return fam === 4 || fam === 6 ? [{ family: fam, host: node.stunTestIP, port, resolve: false }] : [];
  }
  const out: StunTarget[] = [];
  for (const family of [4, 6] as const) {
    const v = (family === 4 ? node.ipv4 : node.ipv6) ?? '';
    if (v === '') {
      if (node.hostname) out.push({ family, host: node.hostname, port, resolve: true });
    } else if (isIP(v) === family) out.push({ family, host: v, port, resolve: false });
  }
  return out;
}

/** `https://HostName/derp` with `:port` only when not 443 (http for plainHttp dev nodes). */
export function derpUrlOf(node: DERPServer): string {
  return derpUrl(node.hostname, node.derpPort, node.plainHttp ? 'http' : 'https');
}
