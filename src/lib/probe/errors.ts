/** Errors of the probe's target selection. */
import { ConfigError } from '../errors.js';

/** `--region` named a region the map does not have: which one, and what exists. */
export class UnknownRegionError extends ConfigError {
  constructor(readonly region: string, readonly available: string[]) {
    super(`region ${JSON.stringify(region)} is not in the map (regions: ${available.length ? available.join(', ') : 'none'})`, {
      context: { region, available: available.join(',') },
    });
  }
}
