export * from './client.js';
export * from './backoff.js';
export * from './target.js';
export { checkPinnedCert } from './dial.js';
export type { Transport, TransportKind } from './transport.js';
export { BoundedQueue } from './packet-queue.js';
export * from "./udp-bridge.js";
export { noProxyMatches, parseProxyUrl, proxyFromEnv } from './proxy.js';
