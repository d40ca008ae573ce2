/** What `derp probe` probes: every node of a DERP map (optionally some regions), or `--server` URLs. */
import { isIP } from 'node:net';
import { parseServerUrl } from '../client/target.js';
import { derpUrlOf, regionsOf } from '../derpmap/addr.js';
import { NO_STUN_PORT } from '../derpmap/constants.js';
import type { DERPMap, DERPServer } from '../derpmap/types.js';
import { ConfigError } from '../errors.js';
import { SERVER_DEFAULT_STUN_PORT, SERVER_REGION_CODE, SERVER_REGION_ID } from './constants.js';
import { UnknownRegionError } from './errors.js';
import type { ProbeRegion, ProbeTarget } from './types.js';

/**
 * Every region and node of the map, in map order (regions by ID, nodes in preference order).
 * `regions` keeps only those named by ID or code (case-insensitive); an unknown one is an UnknownRegionError.
 * STUN-only nodes are targets too: their DERP checks are skipped.
 */
export function probeRegionsFromMap(map: DERPMap, opts: { regions?: string[] } = {}): ProbeRegion[] {
  let regions = regionsOf(map);
  if (opts.regions?.length) {
    const wanted = new Set<number>();
    for (const w of opts.regions) {
      const r = regions.find((x) => String(x.regionId) === w.trim() || x.regionCode.toLowerCase() === w.trim().toLowerCase());
      if (!r) throw new UnknownRegionError(w, regions.map((x) => `${x.regionId} (${x.regionCode})`));
      wanted.add(r.regionId);
    }
    regions = regions.filter((r) => wanted.has(r.regionId));
  }
  return regions.map((r) => ({
    regionId: r.regionId,
    regionCode: r.regionCode,
    regionName: r.regionName,
    targets: r.nodes.map((node): ProbeTarget => ({ regionId: r.regionId, regionCode: r.regionCode, regionName: r.regionName, node, url: derpUrlOf(node) })),
  }));
}

/**
 * One node per URL, all in region 0 (so several URLs are probed as one region, mesh included).
 * http:// = a plain-HTTP node. STUN is assumed on the URL's host at `stunPort` (default 3478,
 * derper's); -1 = no STUN (stun checks skipped).
 */
export function probeRegionsFromServers(urls: string[], opts: { stunPort?: number } = {}): ProbeRegion[] {
  const stunPort = opts.stunPort ?? SERVER_DEFAULT_STUN_PORT;
  if (!Number.isInteger(stunPort) || stunPort < NO_STUN_PORT || stunPort > 65_535 || stunPort === 0) {
    throw new ConfigError(`STUN port ${stunPort} must be 1–65535, or -1 for none`);
  }
  const seen = new Set<string>();
  const targets = urls.map((text): ProbeTarget => {
    const url = parseServerUrl(text);
    if (seen.has(url.host)) throw new ConfigError(`server ${url.host} is given twice`);
    seen.add(url.host);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const fam = isIP(host);
    const plainHttp = url.protocol === 'http:';
    const node: DERPServer = {
      id: url.host,
      hostname: host,
      ...(fam === 4 ? { ipv4: host, ipv6: 'none' } : fam === 6 ? { ipv4: 'none', ipv6: host } : {}),
      stunPort,
      derpPort: url.port ? Number(url.port) : plainHttp ? 80 : 443,
      region: SERVER_REGION_CODE,
      regionCode: SERVER_REGION_ID,
      canStun: stunPort !== NO_STUN_PORT,
      canRelay: true,
      ...(plainHttp ? { plainHttp: true } : {}),
    };
    return { regionId: SERVER_REGION_ID, regionCode: SERVER_REGION_CODE, regionName: '--server', node, url: url.href };
  });
  if (targets.length === 0) return [];
  return [{ regionId: SERVER_REGION_ID, regionCode: SERVER_REGION_CODE, regionName: '--server', targets }];
}
