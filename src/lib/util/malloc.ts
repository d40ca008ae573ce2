/** Which malloc this process runs on, for the listening line and derp_build_info (node/allocator.ts preloads jemalloc). */
import { readFileSync } from 'node:fs';

/** The allocator this process runs on, from its own memory map: `jemalloc`, or `system` (glibc's, or any other). */
export function runningAllocator(mapsPath = '/proc/self/maps'): 'jemalloc' | 'system' | 'unknown' {
  let maps: string;
  try {
    maps = readFileSync(mapsPath, 'utf8');
  } catch {
    return 'unknown';
  }
  return /libjemalloc[^/\n]*\.so/.test(maps) ? 'jemalloc' : 'system';
}
