/** Packet accounting: sent = delivered + Σ dropped(reason) + what died in transit, per node and in total. */
export { ACCOUNTING_MIN_PAYLOAD, readPayload, writePayload, type PayloadFields } from './payload.js';
export {
  account,
  addCounts,
  parseMetricsCounts,
  parseStopLine,
  renderAccounts,
  totalDropped,
  zeroCounts,
  type ClientCounts,
  type NodeAccount,
  type RelayCounts,
} from './counts.js';
export { runAccounting, type AccountingNode, type AccountingOptions, type AccountingReport } from './harness.js';
export { ServeNode, type ServeOptions } from './serve.js';
