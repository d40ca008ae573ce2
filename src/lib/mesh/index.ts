export * from './types.js';
export * from './constants.js';
export { MeshLink, type MeshLinkInit, type MeshLinkState, type MeshLinkStatus, type MeshRelay } from './link.js';
export { MeshLinks, type MeshLinksInit } from './links.js';
export { readMeshKeyFile, parseMeshKey } from './key.js';
