/** `derp serve`'s exit codes (documented in src/commands/serve.ts), shared by the supervisor and its workers. */
import { DerpError } from '../errors.js';

/** Stopped by SIGINT/SIGTERM. */
export const EXIT_OK = 0;
/** Unexpected error (also: workers kept crashing and the supervisor gave up). */
export const EXIT_RUNTIME = 1;
/** Bad usage or configuration (flags, config file, key file, certificate). */
export const EXIT_USAGE = 2;
/** A listen address could not be bound (in use, no permission, no such address). */
export const EXIT_LISTEN = 3;

/** Bad input → 2; cannot listen → 3; anything else → 1. */
export function exitCodeOf(err: unknown): number {
  if (!(err instanceof DerpError)) return EXIT_RUNTIME;
  switch (err.code) {
    case 'DERP_ERR_CONFIG':
    case 'DERP_ERR_KEY_FILE':
    case 'DERP_ERR_CERT':
      return EXIT_USAGE;
    case 'DERP_ERR_SERVER':
      return EXIT_LISTEN;
    default:
      return EXIT_RUNTIME;
  }
}
