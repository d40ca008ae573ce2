/**
 * The probe's data model: what is probed (targets), what one check found (CheckResult), and the whole
 * run (ProbeReport, which is also the `derp probe --json` document, schema `derp.probe/v1`).
 */
import type { DERPServer } from '../derpmap/types.js';

/** Every check, in the order they run on a node and appear in the output. */
export const CHECK_NAMES = ['stun4', 'stun6', 'tls', 'http', 'derp', 'packet', 'mesh', 'bandwidth'] as const;
export type CheckName = (typeof CHECK_NAMES)[number];

/** Checks run unless `checks` says otherwise (`bandwidth` is opt-in: it moves real data). */
export const DEFAULT_CHECKS: readonly CheckName[] = ['stun4', 'stun6', 'tls', 'http', 'derp', 'packet', 'mesh'];

/** good: works; warn: works but needs attention (e.g. certificate expiring); bad: broken; skipped: not applicable, with the reason. */
export type CheckStatus = 'good' | 'warn' | 'bad' | 'skipped';
export const CHECK_STATUSES: readonly CheckStatus[] = ['good', 'warn', 'bad', 'skipped'];

/** Units of CheckResult.value. */
export type CheckUnit = 'ms' | 'days' | 'Mbit/s';
// A record, so adding a unit to the type without listing it here fails to compile.
const UNITS: Record<CheckUnit, true> = { ms: true, days: true, 'Mbit/s': true };
export const CHECK_UNITS = Object.keys(UNITS) as readonly CheckUnit[];

/** The DERP transports a `derp` check can use. */
export type ProbeTransport = 'upgrade' | 'websocket';
const TRANSPORTS: Record<ProbeTransport, true> = { upgrade: true, websocket: true };
export const PROBE_TRANSPORTS = Object.keys(TRANSPORTS) as readonly ProbeTransport[];

/** One node to probe, with where it sits. `--server` targets get region 0 unless the URL's node says otherwise. */
export interface ProbeTarget {
  regionId: number;
  regionCode: string;
  regionName: string;
  node: DERPServer;
  /** The DERP URL clients dial (https://host:port/derp, or http:// for plainHttp nodes). */
  url: string;
}

/** A region and its nodes, in map order (mesh checks pair up the nodes of one region). */
export interface ProbeRegion {
  regionId: number;
  regionCode: string;
  regionName: string;
  targets: ProbeTarget[];
}

export interface CheckResult {
  check: CheckName;
  status: CheckStatus;
  /** The headline measurement in `unit` (latency, days to expiry, throughput); absent when none was made. */
  value?: number;
  unit?: CheckUnit;
  /** What was measured, what was wrong (specific: address, expected vs got), or why it was skipped. */
  message: string;
  /** Wall time the check took. */
  durationMs: number;
  /** mesh only: the node the packet went to (the check runs from this node's client to the peer's). */
  peer?: string;
  /** Secondary measurements: mapped address, p50/max, loss, per-transport times, expiry date, … */
  details?: Record<string, string | number | boolean>;
}

export interface NodeReport {
  regionId: number;
  regionCode: string;
  /** DERPNode.Name. */
  node: string;
  hostname: string;
  url: string;
  /** In CHECK_NAMES order; mesh has one entry per peer node of the region. */
  checks: CheckResult[];
  /** Worst status over `checks` (skipped counts as good). */
  status: Exclude<CheckStatus, 'skipped'>;
}

export interface ProbeSummary {
  nodes: number;
  checks: number;
  good: number;
  warn: number;
  bad: number;
  skipped: number;
}

export const PROBE_SCHEMA = 'derp.probe/v1';

export interface ProbeReport {
  schema: typeof PROBE_SCHEMA;
  /** derp's version (package.json). */
  version: string;
  /** ISO 8601. */
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  /** What was probed: the map's source (URL, file, "-") or the --server URLs. */
  source: { map?: string; servers?: string[] };
  checks: CheckName[];
  transports: ProbeTransport[];
  nodes: NodeReport[];
  summary: ProbeSummary;
  /** Worst node status. */
  status: Exclude<CheckStatus, 'skipped'>;
}
