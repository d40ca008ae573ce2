/** The `abuse.*` settings as the monitor takes them (resolve.ts builds them from the config file). */
import { ConfigError } from '../errors.js';
import {
  DEFAULT_ABSENT_PEER_THRESHOLD,
  DEFAULT_ADMISSION_REFUSED_THRESHOLD,
  DEFAULT_BAN,
  DEFAULT_BAN_MAX_SECONDS,
  DEFAULT_BAN_SECONDS,
  DEFAULT_FANOUT_THRESHOLD,
  DEFAULT_HANDSHAKE_FAILURE_THRESHOLD,
  DEFAULT_PROTOCOL_VIOLATION_THRESHOLD,
  DEFAULT_WINDOW_SECONDS,
  MAX_THRESHOLD,
  type AbuseKind,
} from './constants.js';
import { ExemptList, parseLiftEntry } from './identity.js';

/** Events per window that make a crossing; 0 turns that kind off. */
export interface AbuseThresholds {
  fanout: number;
  absentPeer: number;
  admissionRefused: number;
  handshakeFailure: number;
  protocolViolation: number;
}

export interface AbuseSettings {
  windowSeconds: number;
  thresholds: AbuseThresholds;
  /** Ban on a crossing (else warn and count only). */
  ban: boolean;
  /** First ban; doubles on each repeat offence up to banMaxSeconds. */
  banSeconds: number;
  banMaxSeconds: number;
  /** `nodekey:…` or IP addresses whose bans are lifted when the settings are (re)applied. */
  lift: string[];
  /** `nodekey:…`, IP addresses or CIDRs that are never banned. */
  exempt: string[];
}

/** Which threshold each hook event kind is measured against. */
export const THRESHOLD_OF: Readonly<Record<AbuseKind, keyof AbuseThresholds>> = {
  fanout: 'fanout',
  absent_peer: 'absentPeer',
  admission_refused: 'admissionRefused',
  handshake_failure: 'handshakeFailure',
  protocol_violation: 'protocolViolation',
};

export function defaultAbuseSettings(): AbuseSettings {
  return {
    windowSeconds: DEFAULT_WINDOW_SECONDS,
    thresholds: {
      fanout: DEFAULT_FANOUT_THRESHOLD,
      absentPeer: DEFAULT_ABSENT_PEER_THRESHOLD,
      admissionRefused: DEFAULT_ADMISSION_REFUSED_THRESHOLD,
      handshakeFailure: DEFAULT_HANDSHAKE_FAILURE_THRESHOLD,
      protocolViolation: DEFAULT_PROTOCOL_VIOLATION_THRESHOLD,
    },
    ban: DEFAULT_BAN,
    banSeconds: DEFAULT_BAN_SECONDS,
    banMaxSeconds: DEFAULT_BAN_MAX_SECONDS,
    lift: [],
    exempt: [],
  };
}

/** Throws ConfigError naming the first bad setting (the config schema checks the same, with positions). */
export function checkAbuseSettings(s: AbuseSettings): void {
  const bad = (field: string, message: string): never => {
    throw new ConfigError(`abuse.${field}: ${message}`, { context: { field: `abuse.${field}` } });
  };
  const int = (field: string, v: number, min: number, max: number): void => {
    if (!Number.isInteger(v) || v < min || v > max) bad(field, `expected an integer from ${min} to ${max}, found ${v}`);
  };
  int('windowSeconds', s.windowSeconds, 1, 86_400);
  for (const [name, v] of Object.entries(s.thresholds)) int(`thresholds.${name}`, v, 0, MAX_THRESHOLD);
  int('banSeconds', s.banSeconds, 1, 365 * 86_400);
  int('banMaxSeconds', s.banMaxSeconds, 1, 365 * 86_400);
  if (s.banMaxSeconds < s.banSeconds) bad('banMaxSeconds', `must be at least abuse.banSeconds (${s.banSeconds})`);
  for (const e of s.lift) parseLiftEntry(e);
  new ExemptList(s.exempt);
}
