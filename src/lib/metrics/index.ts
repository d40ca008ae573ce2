export { DEFAULT_METRICS_ADDR, METRICS_ADDR_OFF, METRIC_PREFIX } from './constants.js';
export { RelayMetrics, type MetricsSnapshot, type RelayMetricsInit, type ReloadResult, type CertificateSource } from './registry.js';
export { MetricsServer, metricsEnabled, type MetricsServerInit } from './server.js';
export { allowDebugAccess, debugRoutes, renderVars, renderVarz } from './varz.js';
