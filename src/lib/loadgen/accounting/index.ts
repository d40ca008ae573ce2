/** Packet accounting: sent = delivered + Σ dropped(reason) + what died in transit, per node and in total. */
export { ACCOUNTING_MIN_PAYLOAD, readPayload, writePayload, type PayloadFields } from './payload.js';
export {
  account,
  addCounts,
  parseMeshPeers,
  parseMetricsCounts,
  parseStopLine,
  regionAccount,
  renderAccounts,
  totalDropped,
  zeroClientCounts,
  zeroCounts,
  type ClientCounts,
  type MeshCounts,
  type MeshPeerCounts,
  type RegionAccount,
  type NodeAccount,
  type RelayCounts,
} from './counts.js';
export { runAccounting, type AccountingNode, type AccountingOptions, type AccountingReport } from './harness.js';
export { ServeNode, type ServeOptions, type ServeRegion } from './serve.js';
