/**
 * glibc's malloc keeps what a flood freed: its free chunks sit in the middle of the heap, where only an
 * explicit malloc_trim() returns them, so an attack left ~17 MiB of RSS behind that never came back
 * (README, Flood). jemalloc, with its decay set to one second and a background thread to purge, gives
 * freed pages back by itself. `derp serve` therefore preloads the system's jemalloc (Debian's
 * libjemalloc2) in the same re-execution that caps V8's young generation (heap.ts), unless the operator
 * preloads something already or asks for the system allocator.
 *
 * DERP_MALLOC: `auto` (the default: jemalloc if installed, else the system's), `system`, or the
 * absolute path of a malloc library to preload.
 */
import { ConfigError } from '../errors.js';

/** Where Debian, Ubuntu, Fedora/RHEL and source builds put jemalloc's shared library. */
export const JEMALLOC_PATHS: readonly string[] = [
  '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2',
  '/usr/lib/aarch64-linux-gnu/libjemalloc.so.2',
  '/usr/lib64/libjemalloc.so.2',
  '/usr/lib/libjemalloc.so.2',
  '/usr/local/lib/libjemalloc.so.2',
];

/**
 * Return freed dirty pages after ~1 s (jemalloc's default is 10 s, then 10 s more as "muzzy" pages), from
 * a background thread rather than in whichever allocation happens to come next.
 */
export const JEMALLOC_CONF = 'background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0';

/**
 * The environment `derp serve` adds to preload an allocator, or null to keep the running one: another
 * command, not Linux, DERP_MALLOC=system, LD_PRELOAD already set (by the operator, or by this very
 * re-execution), or no jemalloc installed. Throws ConfigError for a DERP_MALLOC that is
 * neither `auto`, `system` nor the absolute path of an existing file.
 */
export function allocatorEnv(argv: readonly string[], env: NodeJS.ProcessEnv, platform: NodeJS.Platform, exists: (path: string) => boolean): NodeJS.ProcessEnv | null {
  if (argv[2] !== 'serve' || platform !== 'linux') return null;
  const choice = (env.DERP_MALLOC ?? 'auto').trim() || 'auto';
  if (choice === 'system') return null;
  let lib: string | undefined;
  if (choice === 'auto') {
    lib = JEMALLOC_PATHS.find(exists);
  } else if (choice.startsWith('/')) {
    if (!exists(choice)) throw new ConfigError(`DERP_MALLOC names ${choice}, which does not exist`, { context: { env: 'DERP_MALLOC' } });
    lib = choice;
  } else {
    throw new ConfigError(`DERP_MALLOC must be "auto", "system" or the absolute path of a malloc library, not ${JSON.stringify(choice)}`, { context: { env: 'DERP_MALLOC' } });
  }
  if (lib === undefined || (env.LD_PRELOAD ?? '').trim() !== '') return null;
  return { LD_PRELOAD: lib, MALLOC_CONF: env.MALLOC_CONF?.trim() ? env.MALLOC_CONF : JEMALLOC_CONF };
}

export { runningAllocator } from '../util/malloc.js';
