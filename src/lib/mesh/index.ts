export * from './types.js';
export * from './constants.js';
export { MeshLink, type MeshLinkInit, type MeshLinkState, type MeshLinkStatus, type MeshRelay } from './link.js';
export { MeshLinks, type MeshLinksInit } from './links.js';
export { readMeshKeyFile, parseMeshKey } from './key.js';
export { parseMeshWith, formatMeshTarget } from './targets.js';
export { MeshDiscovery, MeshDiscoveryError, defaultMeshLookup, endpointId, type MeshDiscoveryOptions, type MeshTargetStats } from './discovery.js';
