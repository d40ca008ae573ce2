export * from './types.js';
export * from './constants.js';
export { UnknownRegionError } from './errors.js';
export { probeRegionsFromMap, probeRegionsFromServers } from './targets.js';
export { runProbe, type ProbeOptions } from './runner.js';
