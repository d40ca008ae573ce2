export * from './relay.js';
export { generateSelfSigned, type SelfSignedCert } from './selfsigned.js';
export { DROP_REASONS } from './stats.js';
