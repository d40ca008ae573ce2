/** Exit codes of the `derp map` commands. */
import { DerpError } from '../errors.js';

export const EXIT_MAP_OK = 0;
export const EXIT_MAP_USAGE = 2;
/** The map parsed badly or failed validation. */
export const EXIT_MAP_INVALID = 5;
/** The map could not be fetched or read. */
export const EXIT_MAP_UNREADABLE = 6;

export const MAP_EXIT_CODES_HELP = `Exit codes:
  0  ok
  2  bad usage
  5  bad map (syntax or validation; every problem is listed with its path and line)
  6  cannot fetch or read the map (network, HTTP status, timeout, size limit, missing file)`;

export function mapExitCode(err: unknown): number {
  if (err instanceof DerpError && err.code === 'DERP_ERR_MAP_INVALID') return EXIT_MAP_INVALID;
  if (err instanceof DerpError && err.code === 'DERP_ERR_MAP_FETCH') return EXIT_MAP_UNREADABLE;
  return EXIT_MAP_UNREADABLE;
}
