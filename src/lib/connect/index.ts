/** Connect through a DERP map: one node key on its best regions, above client/ and select/. */
export * from './constants.js';
export * from './multi-region.js';
