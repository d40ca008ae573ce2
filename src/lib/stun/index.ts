export * from './message.js';
export * from './limits.js';
export * from './server.js';
export * from './client.js';
