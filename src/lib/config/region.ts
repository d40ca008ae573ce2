/** The region this node serves (`derp.servers`) as a DERP map, for `GET /derpmap`. */
import { toTailscaleJson } from '../derpmap/tailscale.js';
import type { DERPMap } from '../derpmap/types.js';
import type { ServeConfig } from './resolve.js';

export function regionMapOf(config: Pick<ServeConfig, 'derpMap'>): DERPMap | null {
  return config.derpMap;
}

/** Tailscale's JSON of the region map (what `derp netcheck --map` and Tailscale clients read), or null. */
export function regionMapJson(config: Pick<ServeConfig, 'derpMap'>): string | null {
  const map = regionMapOf(config);
  return map === null ? null : `${JSON.stringify(toTailscaleJson(map), null, 2)}\n`;
}
