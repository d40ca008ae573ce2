export { RelayNode, type RelayNodeInit, type ReloadOutcome } from './node.js';
export { assessHealth, healthHandler, type HealthInputs, type HealthStatus } from './health.js';
