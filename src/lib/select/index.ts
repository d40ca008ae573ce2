export * from './constants.js';
export * from './selector.js';
export * from './measure.js';
export * from './netcheck.js';
export * from './setup.js';
