export * from './constants.js';
export * from './selector.js';
export * from './measure.js';
