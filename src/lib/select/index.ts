export * from './constants.js';
export * from './selector.js';
