export * from './constants.js';
export * from './types.js';
export { runNetcheck, probePlan, hostHasGlobalIPv6, type NetcheckOptions } from './netcheck.js';
export { choosePreferred, excludedHomeRegions, NetcheckHistory, type PreferredInput, type HistoryEntry } from './preferred.js';
export {
  measureHttpsLatency,
  detectCaptivePortal,
  captivePortalEndpoints,
  endpointLooksCaptive,
  LATENCY_CHECK_PATH,
  GENERATE_204_PATH,
  type HttpsLatency,
} from './https.js';
export { toTailscaleReport, formatTailscaleReport, msToGoDuration, goTimeText, type TailscaleNetcheckReport, type GoDurationNs, type GoOptBool } from './tailscale.js';
