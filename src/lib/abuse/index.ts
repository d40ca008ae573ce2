export * from './constants.js';
export { AbuseMonitor, type AbuseMonitorInit, type AbuseStats, type AbuseWho } from './monitor.js';
export { BanList, banReason, type Ban, type LiftCause } from './bans.js';
export { defaultAbuseSettings, checkAbuseSettings, THRESHOLD_OF, type AbuseSettings, type AbuseThresholds } from './settings.js';
export { ExemptList, ipIdentity, ipv6Prefix64, keyIdentity, parseLiftEntry, isLiftEntry, isExemptEntry, type IdentityType } from './identity.js';
export { BANS_PATH, abuseDebugRoutes, bansRoute, banView, type BanView } from './debug.js';
export { registerAbuseMetrics } from './metrics.js';
