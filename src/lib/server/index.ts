export * from './relay.js';
export { generateSelfSigned, type SelfSignedCert } from '../certs/selfsigned-cert.js';
export { DROP_REASONS } from './stats.js';
export { DEFAULT_ADDR } from './constants.js';
export { DEFAULT_HTTP_PORT, Port80Server, resolveHttpPort, type Port80Options } from './port80.js';
