export * from './constants.js';
export * from './keys.js';
export * from './box.js';
export * from './frames.js';
export * from './handshake.js';
export * from './http.js';
export * from './disco.js';
