/**
 * File values + the flags the user gave → one fully defaulted ServeConfig. Flags win over the file;
 * defaults apply only to what neither gave; cross-field rules are checked on the merged result and
 * reported (with the file position or the flag) all at once.
 */
import {
  DEFAULT_CACHE_ALLOW_SECONDS, DEFAULT_CACHE_DENY_SECONDS, DEFAULT_MAX_STALE_SECONDS, DEFAULT_REFRESH_SECONDS, DEFAULT_TAILSCALED_SOCKET, DEFAULT_VERIFY_URL_TIMEOUT_MS,
} from '../admission/constants.js';
import type { AdmissionSettings } from '../admission/types.js';
import { defaultAbuseSettings, type AbuseSettings } from '../abuse/settings.js';
import { DEFAULT_ADDR } from '../server/constants.js';
import { parseListenAddr } from '../server/relay.js';
import { DEFAULT_RATE_LIMIT_PER_SECOND, DEFAULT_STUN_PORT } from '../stun/index.js';
import { availableParallelism } from 'node:os';
import { Issues } from '../derpmap/issues.js';
import type { DERPMap } from '../derpmap/types.js';
import { ConfigFileError, type ConfigIssue } from '../errors.js';
import {
  DEFAULT_HANDSHAKE_TIMEOUT_SECONDS, DEFAULT_MAX_CONNS_PER_IP, DEFAULT_MAX_PENDING_HANDSHAKES, DEFAULT_WARM_UP_HANDSHAKES, DEFAULT_WRITE_TIMEOUT_SECONDS,
  DEFAULT_CERT_MARGIN_DAYS, DEFAULT_HTTP_PORT, DEFAULT_MESH_RESOLVE_SECONDS, DEFAULT_METRICS_ADDR, EPHEMERAL_METRICS_ADDR, HTTP_PORT_DISABLED, LE_PRODUCTION_DIRECTORY, LE_STAGING_DIRECTORY, METRICS_OFF, PROD_ADDR,
} from './constants.js';
import { FIELD_OF_FLAG, fieldSpec, type CertMode, type FieldPath, type FieldValues, type LogLevel } from './fields.js';
import { configIssuesOf, loadConfigFile, type LoadedConfig } from './load.js';

/** Flags as oclif parsed them, by flag name; only the ones the user gave (undefined = not given). */
export type GivenFlags = Readonly<Record<string, unknown>>;

/** Where issues about flags say they are. */
export const COMMAND_LINE = 'command line';

export interface ServeConfig {
  /** The file this came from, if any (for reloads and logs). */
  configFile: string | null;
  addr: string;
  /** null = an ephemeral key (dev only). */
  keyFile: string | null;
  dev: boolean;
  insecureHttp: boolean;
  /** Seconds /healthz reports draining before a graceful stop. */
  drainSeconds: number;
  log: { json: boolean; level: LogLevel };
  tls: {
    /** "none" = plain HTTP (dev, insecureHttp). */
    certMode: CertMode | 'none';
    certFile?: string;
    keyFile?: string;
    selfSigned?: string;
    hostname?: string;
    certDir?: string;
    /** The directory is resolved (staging → Let's Encrypt staging). */
    acme: { email?: string; directory: string; staging: boolean; caFile?: string };
    marginDays: number;
  };
  /** -1 = no port-80 listener. */
  httpPort: number;
  stun: { enabled: boolean; port: number; rateLimit: number };
  /** addr null = no metrics listener. */
  metrics: { addr: string | null };
  trustedProxies: string[];
  /** The region(s) this node serves (`derp.servers`), published at /derpmap; null = none. */
  derpMap: DERPMap | null;
  /** Who may connect (`admission.*`): createAdmission(config.admission, …). */
  admission: AdmissionSettings;
  /** Abuse detection and bans (`abuse.*`), for AbuseMonitor; applied live on reload. */
  abuse: AbuseSettings;
  /** The relay's defences (limits.*): 0 = off for every rate and cap. */
  limits: ServeLimits;
  /** The region mesh (spec §10): peers to dial, the key file, extra trust for their TLS. */
  mesh: { with: string[]; pskFile: string | null; caFile: string | null; resolveSeconds: number };
  /** Relay processes on this host (1 = this process serves). */
  workers: number;
  /** ClientInfo frames opened on a worker thread (RelayServerInit.cryptoThread). */
  handshakeThread: boolean;
  /** Self-handshakes before listening (RelayServerInit.warmUpHandshakes); 0 = none. */
  warmUpHandshakes: number;
}

export interface ServeLimits {
  /** Bytes/s per client (0 = unlimited) and its burst (0 = one second of the rate). */
  clientRate: number;
  clientBurst: number;
  /** "nodekey:<hex>" → its own rate (0 = exempt) and burst. */
  perKey: Record<string, { rate: number; burst?: number }>;
  /** Accepted TCP connections per second (0 = unlimited) and the burst (0 = one second of it). */
  acceptRate: number;
  acceptBurst: number;
  maxConnsPerIp: number;
  maxConns: number;
  maxPendingHandshakes: number;
  /** Share (0–1) of the event loop ClientInfo work may take while clients relay; 0 = off. */
  handshakeShare: number;
  handshakeTimeoutSeconds: number;
  writeTimeoutSeconds: number;
}

/** `tls.hostname (--hostname)`: how messages name a field. */
function named(path: FieldPath): string {
  const flag = fieldSpec(path).flag;
  return flag === undefined ? path : `${path} (--${flag.name})`;
}

/** The flags' values, each checked by its field's schema. */
function flagValues(flags: GivenFlags, problems: ConfigIssue[]): { values: FieldValues; flagOf: Map<FieldPath, string> } {
  const out: Record<string, unknown> = {};
  const flagOf = new Map<FieldPath, string>();
  for (const [name, v] of Object.entries(flags)) {
    if (v === undefined || (Array.isArray(v) && v.length === 0)) continue;
    const path = FIELD_OF_FLAG.get(name);
    if (path === undefined) {
      problems.push({ source: COMMAND_LINE, flag: `--${name}`, path: '', message: 'not a serve setting' });
      continue;
    }
    const spec = fieldSpec(path);
    const r = spec.schema.safeParse(v);
    if (!r.success) problems.push({ source: COMMAND_LINE, flag: `--${name}`, path, message: `expected ${spec.expect}, found ${JSON.stringify(v)}` });
    else {
      out[path] = r.data;
      flagOf.set(path, `--${name}`);
    }
  }
  // Each value passed its field's schema.
  return { values: out as FieldValues, flagOf };
}

/** Merges, defaults and checks; throws ConfigFileError listing every problem. */
export function resolveServeConfig(file: LoadedConfig | undefined, flags: GivenFlags = {}): ServeConfig {
  const problems: ConfigIssue[] = [];
  const { values: fromFlags, flagOf } = flagValues(flags, problems);
  const v: FieldValues = { ...file?.values, ...fromFlags };
  const fileIssues = new Issues(file?.source ?? COMMAND_LINE, file?.text);
  // A rule's problem is reported where the offending value came from: its flag, or its place in the file.
  const problem = (path: FieldPath, message: string): void => {
    const flag = flagOf.get(path);
    if (flag !== undefined) problems.push({ source: COMMAND_LINE, flag, path, message });
    else if (file !== undefined) fileIssues.add(path.split('.'), message);
    else problems.push({ source: COMMAND_LINE, path, message });
  };

  const dev = v.dev ?? false;
  const insecureHttp = v.insecureHttp ?? false;
  if (v.keyFile === undefined && !dev) problem('keyFile', `required unless dev: set ${named('keyFile')}, or use --dev for an ephemeral key`);

  const hasManual = v['tls.certFile'] !== undefined || v['tls.keyFile'] !== undefined;
  const hasSelfSigned = v['tls.selfSigned'] !== undefined;
  let certMode: CertMode | 'none' = v['tls.certMode'] ?? (hasManual ? 'manual' : hasSelfSigned ? 'self-signed' : 'none');
  if (v['tls.certMode'] === undefined && hasManual && hasSelfSigned) {
    problem('tls.selfSigned', `conflicts with ${named('tls.certFile')}: choose one, or set ${named('tls.certMode')}`);
    certMode = 'manual';
  }
  const requireFor = (path: FieldPath) => problem(path, `required with tls.certMode ${certMode}`);
  const conflictFor = (path: FieldPath) => problem(path, `not used with tls.certMode ${certMode}: remove it or change the mode`);
  if (certMode === 'manual') {
    if (v['tls.certFile'] === undefined) requireFor('tls.certFile');
    if (v['tls.keyFile'] === undefined) requireFor('tls.keyFile');
    if (hasSelfSigned && v['tls.certMode'] !== undefined) conflictFor('tls.selfSigned');
  } else if (certMode === 'self-signed') {
    if (!hasSelfSigned) requireFor('tls.selfSigned');
  } else if (certMode === 'acme') {
    if (v['tls.hostname'] === undefined) requireFor('tls.hostname');
    if (v['tls.certDir'] === undefined) requireFor('tls.certDir');
    if (hasSelfSigned) conflictFor('tls.selfSigned');
  }
  if (certMode === 'self-signed' || certMode === 'acme') {
    if (v['tls.certFile'] !== undefined) conflictFor('tls.certFile');
    if (v['tls.keyFile'] !== undefined) conflictFor('tls.keyFile');
  }
  if (v['tls.acme.staging'] === true && v['tls.acme.directory'] !== undefined) {
    problem('tls.acme.directory', `conflicts with ${named('tls.acme.staging')}: give one of them`);
  }
  if (certMode === 'none' && !dev && !insecureHttp) {
    problem(
      'tls.certMode',
      `refusing to serve DERP over plain HTTP: give --tls-cert/--tls-key (tls.certFile/tls.keyFile), --self-signed <host> (tls.selfSigned) or --cert-mode acme, or use --dev / --insecure-http`,
    );
  }

  checkAdmission(v, problem);
  if ((v['mesh.with'] ?? []).length > 0 && v['mesh.pskFile'] === undefined) {
    problem('mesh.with', `needs the region's mesh key: set ${named('mesh.pskFile')} (64 hex digits, the same file on every node)`);
  }
  if (v['mesh.caFile'] !== undefined && (v['mesh.with'] ?? []).length === 0) problem('mesh.caFile', `only used with ${named('mesh.with')}`);
  const abuseDefaults = defaultAbuseSettings();
  const banSeconds = v['abuse.banSeconds'] ?? abuseDefaults.banSeconds;
  const banMaxSeconds = v['abuse.banMaxSeconds'] ?? abuseDefaults.banMaxSeconds;
  if (banMaxSeconds < banSeconds) {
    problem(v['abuse.banMaxSeconds'] !== undefined ? 'abuse.banMaxSeconds' : 'abuse.banSeconds', `abuse.banMaxSeconds (${banMaxSeconds}) must be at least abuse.banSeconds (${banSeconds})`);
  }

  problems.push(...configIssuesOf(fileIssues));
  if (problems.length > 0) throw new ConfigFileError(problems);

  const addr = v.addr ?? (dev ? DEFAULT_ADDR : PROD_ADDR);
  // An ephemeral relay port (tests, parallel runs) gets ephemeral metrics and port-80 listeners too.
  const ephemeral = parseListenAddr(addr).port === 0;
  const metricsAddr = v['metrics.addr'] ?? (ephemeral ? EPHEMERAL_METRICS_ADDR : DEFAULT_METRICS_ADDR);
  const workers = v.workers ?? (dev || ephemeral ? 1 : availableParallelism());
  const tls: ServeConfig['tls'] = {
    certMode,
    acme: {
      directory: v['tls.acme.staging'] === true ? LE_STAGING_DIRECTORY : (v['tls.acme.directory'] ?? LE_PRODUCTION_DIRECTORY),
      staging: v['tls.acme.staging'] ?? false,
    },
    marginDays: v['tls.marginDays'] ?? DEFAULT_CERT_MARGIN_DAYS,
  };
  if (v['tls.certFile'] !== undefined) tls.certFile = v['tls.certFile'];
  if (v['tls.keyFile'] !== undefined) tls.keyFile = v['tls.keyFile'];
  if (v['tls.selfSigned'] !== undefined) tls.selfSigned = v['tls.selfSigned'];
  if (v['tls.hostname'] !== undefined) tls.hostname = v['tls.hostname'];
  if (v['tls.certDir'] !== undefined) tls.certDir = v['tls.certDir'];
  if (v['tls.acme.email'] !== undefined) tls.acme.email = v['tls.acme.email'];
  if (v['tls.acme.caFile'] !== undefined) tls.acme.caFile = v['tls.acme.caFile'];
  return {
    configFile: file?.source ?? null,
    addr,
    keyFile: v.keyFile ?? null,
    dev,
    insecureHttp,
    drainSeconds: v.drainSeconds ?? 0,
    log: { json: v['log.json'] ?? false, level: v['log.level'] ?? 'info' },
    tls,
    httpPort: v.httpPort ?? (certMode === 'none' ? HTTP_PORT_DISABLED : ephemeral ? 0 : DEFAULT_HTTP_PORT),
    stun: {
      enabled: v['stun.enabled'] ?? true,
      // An ephemeral relay port (tests) gets an ephemeral STUN port too, so runs never collide.
      port: v['stun.port'] ?? (ephemeral ? 0 : DEFAULT_STUN_PORT),
      rateLimit: v['stun.rateLimit'] ?? DEFAULT_RATE_LIMIT_PER_SECOND,
    },
    metrics: { addr: metricsAddr === METRICS_OFF ? null : metricsAddr },
    trustedProxies: [...(v.trustedProxies ?? [])],
    derpMap: file?.derpMap ?? null,
    admission: admissionOf(v),
    abuse: {
      windowSeconds: v['abuse.windowSeconds'] ?? abuseDefaults.windowSeconds,
      thresholds: {
        fanout: v['abuse.thresholds.fanout'] ?? abuseDefaults.thresholds.fanout,
        absentPeer: v['abuse.thresholds.absentPeer'] ?? abuseDefaults.thresholds.absentPeer,
        admissionRefused: v['abuse.thresholds.admissionRefused'] ?? abuseDefaults.thresholds.admissionRefused,
        handshakeFailure: v['abuse.thresholds.handshakeFailure'] ?? abuseDefaults.thresholds.handshakeFailure,
        protocolViolation: v['abuse.thresholds.protocolViolation'] ?? abuseDefaults.thresholds.protocolViolation,
      },
      ban: v['abuse.ban'] ?? abuseDefaults.ban,
      banSeconds,
      banMaxSeconds,
      lift: [...(v['abuse.lift'] ?? [])],
      exempt: [...(v['abuse.exempt'] ?? [])],
    },
    limits: {
      clientRate: v['limits.clientRate'] ?? 0,
      clientBurst: v['limits.clientBurst'] ?? 0,
      perKey: Object.fromEntries(Object.entries(v['limits.perKey'] ?? {}).map(([k, x]) => [k.toLowerCase(), x.burst === undefined ? { rate: x.rate } : { rate: x.rate, burst: x.burst }])),
      acceptRate: v['limits.acceptRate'] ?? 0,
      acceptBurst: v['limits.acceptBurst'] ?? 0,
      // Off with --dev: benchmarks and tests connect everything from loopback.
      maxConnsPerIp: v['limits.maxConnsPerIp'] ?? (dev ? 0 : DEFAULT_MAX_CONNS_PER_IP),
      maxConns: v['limits.maxConns'] ?? 0,
      maxPendingHandshakes: v['limits.maxPendingHandshakes'] ?? (dev ? 0 : DEFAULT_MAX_PENDING_HANDSHAKES),
      handshakeShare: v['limits.handshakeShare'] ?? 0,
      handshakeTimeoutSeconds: v['limits.handshakeTimeoutSeconds'] ?? DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
      writeTimeoutSeconds: v['limits.writeTimeoutSeconds'] ?? DEFAULT_WRITE_TIMEOUT_SECONDS,
    },
    mesh: {
      with: [...(v['mesh.with'] ?? [])],
      pskFile: v['mesh.pskFile'] ?? null,
      caFile: v['mesh.caFile'] ?? null,
      resolveSeconds: v['mesh.resolveSeconds'] ?? DEFAULT_MESH_RESOLVE_SECONDS,
    },
    // Tests and benchmarks (dev, port 0) stay one process unless they ask.
    workers,
    // Several workers already occupy every CPU; one process has the others free for the crypto.
    handshakeThread: v.handshakeThread ?? (workers === 1 && availableParallelism() > 1),
    // Tests start relays by the hundred; a warm-up is for relays that will meet load.
    warmUpHandshakes: v.warmUpHandshakes ?? (dev ? 0 : DEFAULT_WARM_UP_HANDSHAKES),
  };
}

/** Cross-field rules of `admission.*`: what each verifier needs, and settings that would be ignored. */
function checkAdmission(v: FieldValues, problem: (path: FieldPath, message: string) => void): void {
  const kind = v['admission.verifyTailnet'];
  const onlyWith = (path: FieldPath, what: string) => problem(path, `only used with ${what}: remove it or set ${what}`);
  if (kind === undefined) {
    for (const p of ['admission.tailnet', 'admission.apiKeyFile', 'admission.oauthClientFile', 'admission.headscaleUrl'] as const) {
      if (v[p] !== undefined) onlyWith(p, named('admission.verifyTailnet'));
    }
  } else if (kind === 'tailscale') {
    if (v['admission.tailnet'] === undefined) problem('admission.tailnet', `required with ${named('admission.verifyTailnet')} tailscale ("-" = the credential's own tailnet)`);
    const key = v['admission.apiKeyFile'] !== undefined;
    const oauth = v['admission.oauthClientFile'] !== undefined;
    if (!key && !oauth) problem('admission.verifyTailnet', `tailscale needs a credential: ${named('admission.apiKeyFile')} or ${named('admission.oauthClientFile')}`);
    if (key && oauth) problem('admission.oauthClientFile', `conflicts with ${named('admission.apiKeyFile')}: give one credential`);
    if (v['admission.headscaleUrl'] !== undefined) problem('admission.headscaleUrl', `not used with ${named('admission.verifyTailnet')} tailscale`);
  } else {
    if (v['admission.headscaleUrl'] === undefined) problem('admission.headscaleUrl', `required with ${named('admission.verifyTailnet')} headscale`);
    if (v['admission.apiKeyFile'] === undefined) problem('admission.apiKeyFile', `required with ${named('admission.verifyTailnet')} headscale (a Headscale API key)`);
    if (v['admission.oauthClientFile'] !== undefined) problem('admission.oauthClientFile', `not used with ${named('admission.verifyTailnet')} headscale`);
    if (v['admission.tailnet'] !== undefined) problem('admission.tailnet', `not used with ${named('admission.verifyTailnet')} headscale`);
  }
  if (v['admission.tailscaledSocket'] !== undefined && v['admission.verifyClients'] !== true) onlyWith('admission.tailscaledSocket', named('admission.verifyClients'));
  if (v['admission.verifyClientUrlFailOpen'] === true && v['admission.verifyClientUrl'] === undefined) onlyWith('admission.verifyClientUrlFailOpen', named('admission.verifyClientUrl'));
}

function admissionOf(v: FieldValues): AdmissionSettings {
  return {
    allowKeysFile: v['admission.allowKeysFile'] ?? null,
    denyKeysFile: v['admission.denyKeysFile'] ?? null,
    allowKeys: [...(v['admission.allowKeys'] ?? [])],
    denyKeys: [...(v['admission.denyKeys'] ?? [])],
    verifyClientUrl: v['admission.verifyClientUrl'] ?? null,
    verifyClientUrlFailOpen: v['admission.verifyClientUrlFailOpen'] ?? false,
    verifyClientUrlTimeoutMs: v['admission.verifyClientUrlTimeoutMs'] ?? DEFAULT_VERIFY_URL_TIMEOUT_MS,
    cacheAllowSeconds: v['admission.cacheAllowSeconds'] ?? DEFAULT_CACHE_ALLOW_SECONDS,
    cacheDenySeconds: v['admission.cacheDenySeconds'] ?? DEFAULT_CACHE_DENY_SECONDS,
    verifyClients: v['admission.verifyClients'] ?? false,
    tailscaledSocket: v['admission.tailscaledSocket'] ?? DEFAULT_TAILSCALED_SOCKET,
    verifyTailnet: v['admission.verifyTailnet'] ?? null,
    tailnet: v['admission.tailnet'] ?? null,
    apiKeyFile: v['admission.apiKeyFile'] ?? null,
    oauthClientFile: v['admission.oauthClientFile'] ?? null,
    headscaleUrl: v['admission.headscaleUrl'] ?? null,
    refreshSeconds: v['admission.refreshSeconds'] ?? DEFAULT_REFRESH_SECONDS,
    maxStaleSeconds: v['admission.maxStaleSeconds'] ?? DEFAULT_MAX_STALE_SECONDS,
  };
}

/** The relay's settings from `limits` (RelayServerInit's clientLimits and connectionLimits; setters on reload). */
export function relayLimits(l: ServeLimits): {
  clientLimits: { rate: number; burst?: number; perKey: Record<string, { rate: number; burst?: number }> };
  connectionLimits: { acceptRate: number; acceptBurst: number; maxConnsPerIp: number; maxConns: number; maxPendingHandshakes: number; handshakeShare: number };
} {
  return {
    clientLimits: { rate: l.clientRate, ...(l.clientBurst > 0 ? { burst: l.clientBurst } : {}), perKey: l.perKey },
    connectionLimits: { acceptRate: l.acceptRate, acceptBurst: l.acceptBurst, maxConnsPerIp: l.maxConnsPerIp, maxConns: l.maxConns, maxPendingHandshakes: l.maxPendingHandshakes, handshakeShare: l.handshakeShare },
  };
}

type RelayConnectionLimits = ReturnType<typeof relayLimits>['connectionLimits'];

/**
 * Worker `index`'s part of host-wide connection limits when `count` workers share the port: the
 * kernel spreads connections over them (SO_REUSEPORT, by a hash of the 4-tuple), so each enforces its
 * share and the host about the configured figure. Counts are split to sum to it; a share is never 0
 * (that would mean unlimited), so a limit below `count` admits up to `count` on the host.
 */
export function workerShare(l: RelayConnectionLimits, index: number, count: number): RelayConnectionLimits {
  if (count <= 1) return l;
  const part = (total: number): number => (total <= 0 ? 0 : Math.max(1, Math.floor(total / count) + (index < total % count ? 1 : 0)));
  return {
    acceptRate: l.acceptRate > 0 ? l.acceptRate / count : 0,
    // 0 = the relay's default (one second of its share of the rate).
    acceptBurst: part(l.acceptBurst),
    maxConnsPerIp: part(l.maxConnsPerIp),
    maxConns: part(l.maxConns),
    maxPendingHandshakes: part(l.maxPendingHandshakes),
    // A share of each worker's own event loop, not a host-wide figure.
    handshakeShare: l.handshakeShare,
  };
}

/**
 * Re-reads `file` (SIGHUP) with the same command-line flags. Throws ConfigFileError when the new file
 * is invalid, so the caller keeps the running config.
 */
export async function reloadServeConfig(file: string, givenFlags: GivenFlags): Promise<{ config: ServeConfig }> {
  return { config: resolveServeConfig(await loadConfigFile(file), givenFlags) };
}
