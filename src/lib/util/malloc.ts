/** Which malloc this process runs on, for the listening line and derp_build_info (node/allocator.ts preloads jemalloc). */
import { readFileSync } from 'node:fs';

const SELF_MAPS = '/proc/self/maps';
/** This process's answer: its allocator is chosen before it starts, so the map is read once. */
let own: ReturnType<typeof runningAllocator> | undefined;

/** The allocator this process runs on, from its own memory map: `jemalloc`, or `system` (glibc's, or any other). */
export function runningAllocator(mapsPath = SELF_MAPS): 'jemalloc' | 'system' | 'unknown' {
  if (mapsPath === SELF_MAPS && own !== undefined) return own;
  let maps: string;
  try {
    maps = readFileSync(mapsPath, 'utf8');
  } catch {
    return 'unknown';
  }
  const found = /libjemalloc[^/\n]*\.so/.test(maps) ? 'jemalloc' : 'system';
  if (mapsPath === SELF_MAPS) own = found;
  return found;
}
