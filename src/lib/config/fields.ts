/**
 * The one table of serve settings: each entry is a config-file field (dotted path = nesting) and,
 * unless file-only, a `derp serve` flag. The file schema, the flag definitions, the flag → field merge,
 * "did you mean", `derp config example` and the README table are all derived from it. A new group
 * (`limits.*`, say) is new entries here plus its resolution in resolve.ts.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import {
  DEFAULT_CACHE_ALLOW_SECONDS, DEFAULT_CACHE_DENY_SECONDS, DEFAULT_MAX_STALE_SECONDS, DEFAULT_REFRESH_SECONDS, DEFAULT_TAILSCALED_SOCKET, DEFAULT_VERIFY_URL_TIMEOUT_MS,
} from '../admission/constants.js';
import { nodeKeyProblem } from '../admission/keylist.js';
import { TAILNET_KINDS } from '../admission/types.js';
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
} from '../abuse/constants.js';
import { isExemptEntry, isLiftEntry } from '../abuse/identity.js';
import { DEFAULT_ADDR } from '../server/constants.js';
import { parseListenAddr } from '../server/relay.js';
import { DEFAULT_RATE_LIMIT_PER_SECOND, DEFAULT_STUN_PORT } from '../stun/index.js';
import { MIN_CLIENT_BURST_BYTES } from '../server/limits.js';
import {
  DEFAULT_HANDSHAKE_TIMEOUT_SECONDS, DEFAULT_MAX_CONNS_PER_IP, DEFAULT_MAX_PENDING_HANDSHAKES, DEFAULT_WARM_UP_HANDSHAKES, DEFAULT_WRITE_TIMEOUT_SECONDS,
} from './constants.js';
import { DEFAULT_CERT_MARGIN_DAYS, DEFAULT_HTTP_PORT, DEFAULT_METRICS_ADDR, LE_PRODUCTION_DIRECTORY, METRICS_OFF, PROD_ADDR } from './constants.js';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const CERT_MODES = ['manual', 'acme', 'self-signed'] as const;
export type CertMode = (typeof CERT_MODES)[number];

export interface FlagSpec {
  name: string;
  kind: 'string' | 'integer' | 'number' | 'boolean' | 'strings';
  /** Allowed values (string flags). */
  options?: readonly string[];
  /** `--no-<name>` (boolean flags). */
  allowNo?: boolean;
}

export interface FieldSpec {
  /** Validates the value, from the file and from the flag alike. */
  schema: z.ZodType;
  /** What a valid value looks like: "expected <expect>, found …". */
  expect: string;
  flag?: FlagSpec;
  /** The default, as the README and `--help` state it. */
  defaultText: string;
  description: string;
  /** The value `derp config example` shows. */
  example: unknown;
  /** Shown commented out in the example (an alternative to the active choice). */
  exampleCommented?: boolean;
}

function isListenAddr(s: string): boolean {
  try {
    parseListenAddr(s);
    return true;
  } catch {
    return false;
  }
}

/** An IP address or CIDR (`10.0.0.0/8`, `fd00::/8`, `192.0.2.1`). */
export function isCidr(s: string): boolean {
  const [ip, bits, ...rest] = s.split('/');
  if (ip === undefined || rest.length > 0) return false;
  const family = isIP(ip);
  if (family === 0) return false;
  if (bits === undefined) return true;
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
}

const port = (min: number) => z.number().int().min(min).max(65_535);
const threshold = z.number().int().min(0).max(MAX_THRESHOLD);
const THRESHOLD = `an integer from 0 to ${MAX_THRESHOLD} (0 = off)`;
/** Up to a year: a ban is in memory only, so anything longer is a mistake. */
const banSeconds = z.number().int().min(1).max(365 * 86_400);
const atLeast0 = z.number().min(0);
const count = z.number().int().min(0);
const NODE_KEY_TEXT = /^nodekey:[0-9a-f]{64}$/i;
const nonEmpty = z.string().min(1);
const LISTEN = 'a listen address host:port, [ipv6]:port or :port';

export const FIELDS = {
  addr: {
    schema: nonEmpty.refine(isListenAddr), expect: LISTEN, flag: { name: 'addr', kind: 'string' },
    defaultText: `\`${DEFAULT_ADDR}\` with dev, else \`${PROD_ADDR}\``, example: ':443',
    description: 'listen address of the relay (`:port` = all interfaces; port 0 = ephemeral)',
  },
  keyFile: {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'key-file', kind: 'string' },
    defaultText: 'required unless dev (then an ephemeral key)', example: '/var/lib/derp/derper.key',
    description: 'derper-compatible node key file; created with mode 0600 if missing',
  },
  dev: {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'dev', kind: 'boolean' },
    defaultText: 'false', example: false,
    description: `development mode: plain HTTP on ${DEFAULT_ADDR}, ephemeral key unless keyFile`,
  },
  insecureHttp: {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'insecure-http', kind: 'boolean' },
    defaultText: 'false', example: false,
    description: 'allow plain HTTP without dev (only behind a TLS-terminating proxy)',
  },
  drainSeconds: {
    schema: z.number().int().min(0).max(3600), expect: 'an integer from 0 to 3600', flag: { name: 'drain-seconds', kind: 'integer' },
    defaultText: '0', example: 0,
    description: 'on SIGTERM, report /healthz 503 (draining) for this long while still serving, then send Restarting and stop',
  },
  'log.json': {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'json', kind: 'boolean' },
    defaultText: 'false', example: true,
    description: 'JSON log lines on stdout (the first is the "listening" line)',
  },
  'log.level': {
    schema: z.enum(LOG_LEVELS), expect: `one of ${LOG_LEVELS.join(', ')}`, flag: { name: 'log-level', kind: 'string', options: LOG_LEVELS },
    defaultText: 'info', example: 'info',
    description: 'least severe level logged',
  },
  'tls.certMode': {
    schema: z.enum(CERT_MODES), expect: `one of ${CERT_MODES.join(', ')}`, flag: { name: 'cert-mode', kind: 'string', options: CERT_MODES },
    defaultText: 'manual when certFile/keyFile given, self-signed when selfSigned given, none otherwise (plain HTTP)', example: 'acme',
    description: 'where the TLS certificate comes from',
  },
  'tls.certFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'tls-cert', kind: 'string' },
    defaultText: '', example: '/etc/derp/cert.pem', exampleCommented: true,
    description: 'manual mode: PEM certificate chain (needs tls.keyFile)',
  },
  'tls.keyFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'tls-key', kind: 'string' },
    defaultText: '', example: '/etc/derp/key.pem', exampleCommented: true,
    description: 'manual mode: PEM private key (needs tls.certFile)',
  },
  'tls.selfSigned': {
    schema: nonEmpty, expect: 'a host name or IP address', flag: { name: 'self-signed', kind: 'string' },
    defaultText: '', example: '203.0.113.7', exampleCommented: true,
    description: 'self-signed mode: generate a certificate for this host name or IP at start',
  },
  'tls.hostname': {
    schema: nonEmpty, expect: 'a DNS name', flag: { name: 'hostname', kind: 'string' },
    defaultText: 'required for acme', example: 'derp.example.com',
    description: 'acme mode: the name the certificate is issued for',
  },
  'tls.certDir': {
    schema: nonEmpty, expect: 'a directory path', flag: { name: 'cert-dir', kind: 'string' },
    defaultText: 'required for acme', example: '/var/lib/derp/certs',
    description: 'acme mode: where the account key and certificates are kept (mode 0600)',
  },
  'tls.acme.email': {
    schema: z.email(), expect: 'an e-mail address', flag: { name: 'acme-email', kind: 'string' },
    defaultText: '', example: 'ops@example.com',
    description: 'acme mode: contact address for the CA (expiry notices)',
  },
  'tls.acme.directory': {
    schema: z.url({ protocol: /^https$/ }), expect: 'an https URL (RFC 8555 §6.1)', flag: { name: 'acme-directory', kind: 'string' },
    defaultText: `Let's Encrypt production \`${LE_PRODUCTION_DIRECTORY}\``, example: LE_PRODUCTION_DIRECTORY,
    description: 'acme mode: directory URL of any RFC 8555 CA',
  },
  'tls.acme.caFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'acme-ca-file', kind: 'string' },
    defaultText: 'the system roots', example: '/etc/derp/acme-ca.pem', exampleCommented: true,
    description: 'acme mode: PEM CA certificate(s) to trust for the directory (a private ACME CA)',
  },
  'tls.acme.staging': {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'acme-staging', kind: 'boolean' },
    defaultText: "false (true = Let's Encrypt staging)", example: false,
    description: "acme mode: use Let's Encrypt's staging directory (not with tls.acme.directory)",
  },
  'tls.marginDays': {
    schema: z.number().min(0), expect: 'a number ≥ 0', flag: { name: 'cert-margin-days', kind: 'integer' },
    defaultText: String(DEFAULT_CERT_MARGIN_DAYS), example: DEFAULT_CERT_MARGIN_DAYS,
    description: '/healthz reports unhealthy when the certificate expires within this many days',
  },
  httpPort: {
    schema: port(-1), expect: 'an integer from -1 to 65535', flag: { name: 'http-port', kind: 'integer' },
    defaultText: `${DEFAULT_HTTP_PORT} when TLS is on (ephemeral when addr's port is 0), else -1`, example: DEFAULT_HTTP_PORT,
    description: 'plain-HTTP listener for /generate_204, ACME HTTP-01 and the redirect to HTTPS; -1 disables it',
  },
  'stun.enabled': {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'stun', kind: 'boolean', allowNo: true },
    defaultText: 'true', example: true,
    description: 'run the STUN server beside the relay (`--no-stun` turns it off)',
  },
  'stun.port': {
    schema: port(0), expect: 'an integer from 0 to 65535', flag: { name: 'stun-port', kind: 'integer' },
    defaultText: `${DEFAULT_STUN_PORT}, ephemeral (0) when addr's port is 0`, example: DEFAULT_STUN_PORT,
    description: 'UDP port of the STUN server (same host as addr)',
  },
  'stun.rateLimit': {
    schema: z.number().int().min(0), expect: 'an integer ≥ 0', flag: { name: 'stun-rate-limit', kind: 'integer' },
    defaultText: `${DEFAULT_RATE_LIMIT_PER_SECOND} (0 = off)`, example: DEFAULT_RATE_LIMIT_PER_SECOND,
    description: 'STUN answers per second per source IP',
  },
  'metrics.addr': {
    schema: nonEmpty.refine((s) => s === METRICS_OFF || isListenAddr(s)), expect: `${LISTEN}, or "${METRICS_OFF}"`, flag: { name: 'metrics-addr', kind: 'string' },
    defaultText: `\`${DEFAULT_METRICS_ADDR}\` (\`127.0.0.1:0\` when addr's port is 0)`, example: DEFAULT_METRICS_ADDR,
    description: `Prometheus /metrics listener; "${METRICS_OFF}" turns it off`,
  },
  trustedProxies: {
    schema: z.array(z.string().refine(isCidr)), expect: 'a list of IP addresses or CIDRs', flag: { name: 'trusted-proxy', kind: 'strings' },
    defaultText: '[]', example: ['127.0.0.1/32', '::1/128'],
    description: 'X-Forwarded-For is believed only from these peers (flag repeatable)',
  },
  'admission.allowKeysFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'allow-keys', kind: 'string' },
    defaultText: 'none', example: '/etc/derp/allow-keys', exampleCommented: true,
    description: 'allow list: `nodekey:<64 hex>` per line, `#` comments; re-read on change and SIGHUP. Present = only listed keys get in, unless a verifier is configured (then listed keys skip it)',
  },
  'admission.denyKeysFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'deny-keys', kind: 'string' },
    defaultText: 'none', example: '/etc/derp/deny-keys',
    description: 'deny list (same format); deny wins over everything but mesh peers',
  },
  'admission.allowKeys': {
    schema: z.array(z.string().refine((k) => nodeKeyProblem(k) === null)), expect: 'a list of node keys `nodekey:<64 hex>`',
    defaultText: '[]', example: ['nodekey:358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254'], exampleCommented: true,
    description: 'allow-list keys in the config file (added to allowKeysFile); a non-empty list makes the allow list present',
  },
  'admission.denyKeys': {
    schema: z.array(z.string().refine((k) => nodeKeyProblem(k) === null)), expect: 'a list of node keys `nodekey:<64 hex>`',
    defaultText: '[]', example: [],
    description: 'deny-list keys in the config file (added to denyKeysFile)',
  },
  'admission.verifyClientUrl': {
    schema: z.url({ protocol: /^https?$/ }), expect: 'an http or https URL', flag: { name: 'verify-client-url', kind: 'string' },
    defaultText: 'none', example: 'https://admit.example.com/derp', exampleCommented: true,
    description: 'derper-compatible admission webhook: POST `{"NodePublic","Source"}`, admitted only on 200 `{"Allow":true}`',
  },
  'admission.verifyClientUrlFailOpen': {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'verify-client-url-fail-open', kind: 'boolean', allowNo: true },
    defaultText: 'false (derper: true)', example: false,
    description: 'admit when the webhook cannot be reached or times out (HTTP errors and bad answers still refuse)',
  },
  'admission.verifyClientUrlTimeoutMs': {
    schema: z.number().int().min(100).max(60_000), expect: 'an integer from 100 to 60000', flag: { name: 'verify-client-url-timeout-ms', kind: 'integer' },
    defaultText: `${DEFAULT_VERIFY_URL_TIMEOUT_MS} (derper's)`, example: DEFAULT_VERIFY_URL_TIMEOUT_MS,
    description: 'webhook timeout per request',
  },
  'admission.cacheAllowSeconds': {
    schema: z.number().int().min(0).max(86_400), expect: 'an integer from 0 to 86400',
    defaultText: String(DEFAULT_CACHE_ALLOW_SECONDS), example: DEFAULT_CACHE_ALLOW_SECONDS,
    description: 'a webhook "Allow: true" is reused this long per key and IP (0 = ask every time)',
  },
  'admission.cacheDenySeconds': {
    schema: z.number().int().min(0).max(86_400), expect: 'an integer from 0 to 86400',
    defaultText: String(DEFAULT_CACHE_DENY_SECONDS), example: DEFAULT_CACHE_DENY_SECONDS,
    description: 'a webhook "Allow: false" is reused this long per key and IP (errors are never cached)',
  },
  'admission.verifyClients': {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'verify-clients', kind: 'boolean' },
    defaultText: 'false', example: false,
    description: "admit only peers of the local tailscaled (LocalAPI whois), as derper's --verify-clients",
  },
  'admission.tailscaledSocket': {
    schema: nonEmpty, expect: 'a unix socket path', flag: { name: 'tailscaled-socket', kind: 'string' },
    defaultText: `\`${DEFAULT_TAILSCALED_SOCKET}\``, example: DEFAULT_TAILSCALED_SOCKET, exampleCommented: true,
    description: "tailscaled's LocalAPI socket (verifyClients)",
  },
  'admission.verifyTailnet': {
    schema: z.enum(TAILNET_KINDS), expect: `one of ${TAILNET_KINDS.join(', ')}`, flag: { name: 'verify-tailnet', kind: 'string', options: TAILNET_KINDS },
    defaultText: 'off', example: 'tailscale', exampleCommented: true,
    description: "admit the node keys of a tailnet from the Tailscale API or a Headscale server's API, without tailscaled",
  },
  'admission.tailnet': {
    schema: nonEmpty, expect: 'a tailnet name, or "-" for the credential\'s own', flag: { name: 'tailnet', kind: 'string' },
    defaultText: 'required for verifyTailnet tailscale', example: 'example.com', exampleCommented: true,
    description: 'verifyTailnet tailscale: the tailnet whose devices are admitted',
  },
  'admission.apiKeyFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'tailnet-api-key-file', kind: 'string' },
    defaultText: 'none', example: '/etc/derp/tailscale-api-key', exampleCommented: true,
    description: 'file with a Tailscale API access token (tskey-api-…) or, for headscale, a Headscale API key',
  },
  'admission.oauthClientFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'tailnet-oauth-client-file', kind: 'string' },
    defaultText: 'none', example: '/etc/derp/tailscale-oauth.json', exampleCommented: true,
    description: 'verifyTailnet tailscale: JSON `{"clientId","clientSecret"}` of an OAuth client with scope devices:core:read (instead of apiKeyFile)',
  },
  'admission.headscaleUrl': {
    schema: z.url({ protocol: /^https?$/ }), expect: 'an http or https URL', flag: { name: 'headscale-url', kind: 'string' },
    defaultText: 'required for verifyTailnet headscale', example: 'https://headscale.example.com', exampleCommented: true,
    description: 'verifyTailnet headscale: the Headscale server',
  },
  'admission.refreshSeconds': {
    schema: z.number().int().min(10).max(86_400), expect: 'an integer from 10 to 86400',
    defaultText: String(DEFAULT_REFRESH_SECONDS), example: DEFAULT_REFRESH_SECONDS,
    description: 'device list refresh period of verifyTailnet (an unknown key also refreshes, at most every 10 s)',
  },
  'admission.maxStaleSeconds': {
    schema: z.number().int().min(0).max(7 * 86_400), expect: 'an integer from 0 to 604800',
    defaultText: String(DEFAULT_MAX_STALE_SECONDS), example: DEFAULT_MAX_STALE_SECONDS,
    description: 'with verifyTailnet, while the API fails, the last good list is used this long; then every key is refused',
  },
  'limits.clientRate': {
    schema: atLeast0, expect: 'a number ≥ 0', flag: { name: 'client-rate', kind: 'integer' },
    defaultText: '0 (unlimited)', example: 0,
    description: 'bytes per second each client may send (frames with headers; read no faster, never dropped; advertised in ServerInfo; mesh peers exempt)',
  },
  'limits.clientBurst': {
    schema: atLeast0, expect: 'a number ≥ 0', flag: { name: 'client-burst', kind: 'integer' },
    defaultText: `one second of clientRate, never below ${MIN_CLIENT_BURST_BYTES} (one maximal frame)`, example: 0,
    description: 'token-bucket burst of the client rate, in bytes (0 = the default)',
  },
  'limits.perKey': {
    schema: z.record(z.string().regex(NODE_KEY_TEXT), z.strictObject({ rate: atLeast0, burst: atLeast0.optional() })),
    expect: 'a mapping of nodekey:<64 hex digits> to { rate, burst }',
    defaultText: '{}', example: { [`nodekey:${'5'.repeat(64)}`]: { rate: 0 } },
    description: 'per-key overrides of clientRate/clientBurst (rate 0 exempts the key)',
  },
  'limits.acceptRate': {
    schema: atLeast0, expect: 'a number ≥ 0', flag: { name: 'accept-connection-limit', kind: 'number' },
    defaultText: '0 (unlimited)', example: 0,
    description: "TCP connections accepted per second (derper's flag); past it the listener closes until tokens are due, so the kernel refuses the excess",
  },
  'limits.acceptBurst': {
    schema: count, expect: 'an integer ≥ 0', flag: { name: 'accept-connection-burst', kind: 'integer' },
    defaultText: 'one second of acceptRate (at least 1)', example: 0,
    description: "burst of the accept rate (derper's flag; 0 = the default)",
  },
  'limits.maxConnsPerIp': {
    schema: count, expect: 'an integer ≥ 0', flag: { name: 'max-conns-per-ip', kind: 'integer' },
    defaultText: `0 (off) with dev, else ${DEFAULT_MAX_CONNS_PER_IP}`, example: DEFAULT_MAX_CONNS_PER_IP,
    description: 'concurrent connections per client IPv4 address or IPv6 /64 (behind a trusted proxy: the forwarded client); 0 = no cap',
  },
  'limits.maxConns': {
    schema: count, expect: 'an integer ≥ 0', flag: { name: 'max-conns', kind: 'integer' },
    defaultText: '0 (no cap)', example: 0,
    description: 'concurrent TCP connections in total',
  },
  'limits.maxPendingHandshakes': {
    schema: count, expect: 'an integer ≥ 0', flag: { name: 'max-pending-handshakes', kind: 'integer' },
    defaultText: `0 (off) with dev, else ${DEFAULT_MAX_PENDING_HANDSHAKES}`, example: DEFAULT_MAX_PENDING_HANDSHAKES,
    description: 'DERP connections between the upgrade and ServerInfo (waiting for ClientInfo or admission); beyond it new ones are closed',
  },
  'limits.handshakeShare': {
    schema: z.number().min(0).max(1), expect: 'a number from 0 to 1', flag: { name: 'handshake-share', kind: 'number' },
    defaultText: '0 (off)', example: 0,
    description: 'share of the event loop that handling ClientInfo frames (admission, registration, and X25519 and box unless on the handshake thread) may take while clients are relaying; past it a burst of handshakes waits, in order and within the handshake deadline, instead of delaying relayed packets',
  },
  'limits.handshakeTimeoutSeconds': {
    schema: z.number().gt(0).max(300), expect: 'a number of seconds > 0 and ≤ 300', flag: { name: 'handshake-timeout', kind: 'number' },
    defaultText: String(DEFAULT_HANDSHAKE_TIMEOUT_SECONDS), example: DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
    description: 'deadline for the HTTP head and, after the upgrade, for ClientInfo and the admission decision (restart to change)',
  },
  'limits.writeTimeoutSeconds': {
    schema: z.number().min(0).max(300), expect: 'a number of seconds from 0 to 300', flag: { name: 'write-timeout', kind: 'number' },
    defaultText: `${DEFAULT_WRITE_TIMEOUT_SECONDS} (0 = never)`, example: DEFAULT_WRITE_TIMEOUT_SECONDS,
    description: 'close a client whose writes stay blocked (its queue full) this long (restart to change)',
  },
  'derp.servers': {
    schema: z.array(z.unknown()).min(1), expect: 'a non-empty list of servers',
    defaultText: 'none (no /derpmap)',
    example: [{ region: 'us-east', hostname: 'derp.example.com', stunPort: DEFAULT_STUN_PORT, derpPort: 443 }],
    description: "the seed's deployment form: the region(s) this node serves, published as a DERP map at /derpmap",
  },
  'abuse.windowSeconds': {
    schema: z.number().int().min(1).max(86_400), expect: 'an integer from 1 to 86400',
    defaultText: String(DEFAULT_WINDOW_SECONDS), example: DEFAULT_WINDOW_SECONDS,
    description: 'abuse detection: the sliding window the thresholds count over (it slides in sixths)',
  },
  'abuse.thresholds.fanout': {
    schema: threshold, expect: THRESHOLD,
    defaultText: `${DEFAULT_FANOUT_THRESHOLD} (0 = off)`, example: DEFAULT_FANOUT_THRESHOLD,
    description: 'distinct destinations a key or IP may send to per window',
  },
  'abuse.thresholds.absentPeer': {
    schema: threshold, expect: THRESHOLD,
    defaultText: `${DEFAULT_ABSENT_PEER_THRESHOLD} (0 = off)`, example: DEFAULT_ABSENT_PEER_THRESHOLD,
    description: 'packets to keys not connected here, per window',
  },
  'abuse.thresholds.admissionRefused': {
    schema: threshold, expect: THRESHOLD,
    defaultText: `${DEFAULT_ADMISSION_REFUSED_THRESHOLD} (0 = off)`, example: DEFAULT_ADMISSION_REFUSED_THRESHOLD,
    description: 'connections refused by admission, per window',
  },
  'abuse.thresholds.handshakeFailure': {
    schema: threshold, expect: THRESHOLD,
    defaultText: `${DEFAULT_HANDSHAKE_FAILURE_THRESHOLD} (0 = off)`, example: DEFAULT_HANDSHAKE_FAILURE_THRESHOLD,
    description: 'failed DERP handshakes, per window',
  },
  'abuse.thresholds.protocolViolation': {
    schema: threshold, expect: THRESHOLD,
    defaultText: `${DEFAULT_PROTOCOL_VIOLATION_THRESHOLD} (0 = off)`, example: DEFAULT_PROTOCOL_VIOLATION_THRESHOLD,
    description: 'connections closed for a protocol violation, per window',
  },
  'abuse.ban': {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'abuse-ban', kind: 'boolean', allowNo: true },
    defaultText: String(DEFAULT_BAN), example: true,
    description: 'ban the key or IP that crosses a threshold (else warn and count only)',
  },
  'abuse.banSeconds': {
    schema: banSeconds, expect: 'an integer from 1 to 31536000',
    defaultText: `${DEFAULT_BAN_SECONDS} (10 min)`, example: DEFAULT_BAN_SECONDS,
    description: 'length of a first ban; each repeat offence doubles it',
  },
  'abuse.banMaxSeconds': {
    schema: banSeconds, expect: 'an integer from 1 to 31536000',
    defaultText: `${DEFAULT_BAN_MAX_SECONDS} (24 h)`, example: DEFAULT_BAN_MAX_SECONDS,
    description: 'the longest ban (at least abuse.banSeconds)',
  },
  'abuse.lift': {
    schema: z.array(z.string().refine(isLiftEntry)), expect: 'a list of nodekey:… keys and IP addresses',
    defaultText: '[]', example: [],
    description: 'bans of these keys/addresses are lifted on each reload (SIGHUP); an IPv6 address lifts its /64',
  },
  'abuse.exempt': {
    schema: z.array(z.string().refine(isExemptEntry)), expect: 'a list of nodekey:… keys, IP addresses or CIDRs',
    defaultText: '[] (loopback and trustedProxies are always exempt)', example: ['192.0.2.10', '2001:db8:100::/48'],
    description: 'never banned (still counted and warned about)',
  },
  'mesh.with': {
    schema: z.array(nonEmpty), expect: 'a list of mesh peers `host[:port][/dialhost]` or DNS names of the region',
    flag: { name: 'mesh-with', kind: 'strings' },
    defaultText: '[] (no mesh links)', example: ['derp-mesh.derp.svc.cluster.local'], exampleCommented: true,
    description: 'the other nodes of this region (derper syntax; comma-separated or repeated): each is dialed as a mesh peer and packets for its clients are forwarded there in one hop; a name is re-resolved and every address it has is a node',
  },
  'mesh.pskFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'mesh-psk-file', kind: 'string' },
    defaultText: 'none (no client is a mesh peer)', example: '/etc/derp/mesh.key', exampleCommented: true,
    description: 'the region\'s mesh key: 64 hex digits (`openssl rand -hex 32`), the same on every node; clients presenting it are mesh peers (no admission, no limits). Required with mesh.with',
  },
  'mesh.caFile': {
    schema: nonEmpty, expect: 'a file path', flag: { name: 'mesh-ca-file', kind: 'string' },
    defaultText: 'the system roots', example: '/etc/derp/mesh-ca.pem', exampleCommented: true,
    description: 'extra CA certificate(s), PEM, that mesh links trust (self-signed or private-CA nodes)',
  },
  'mesh.resolveSeconds': {
    schema: z.number().int().min(1).max(3600), expect: 'an integer from 1 to 3600', flag: { name: 'mesh-resolve-seconds', kind: 'integer' },
    defaultText: '30', example: 30,
    description: 'how often the names in mesh.with are resolved again (nodes added and removed as their records change)',
  },
  workers: {
    schema: z.number().int().min(1).max(256), expect: 'an integer from 1 to 256', flag: { name: 'workers', kind: 'integer' },
    defaultText: 'the number of CPUs (1 with dev or an ephemeral port)', example: 2,
    description: 'relay processes sharing the listening ports (SO_REUSEPORT) and meshed with each other over loopback; 1 = a single process',
  },
  handshakeThread: {
    schema: z.boolean(), expect: 'true or false', flag: { name: 'handshake-thread', kind: 'boolean', allowNo: true },
    defaultText: 'true when the relay is one process (workers 1) on a host with more than one CPU, else false', example: false,
    description: 'open ClientInfo frames (X25519, both boxes: half of a handshake) on a worker thread, off the event loop that relays packets (`--no-handshake-thread` keeps them inline)',
  },
  warmUpHandshakes: {
    schema: z.number().int().min(0).max(10_000), expect: 'an integer from 0 to 10000', flag: { name: 'warm-up-handshakes', kind: 'integer' },
    defaultText: `0 (off) with dev, else ${DEFAULT_WARM_UP_HANDSHAKES}`, example: DEFAULT_WARM_UP_HANDSHAKES,
    description: 'handshakes the relay makes with a private loopback copy of itself before it listens (at most 5 s), so that the first clients, or a reconnect storm after a restart, meet compiled code rather than a cold one that holds relayed packets several times longer',
  },
} as const satisfies Record<string, FieldSpec>;

export type FieldPath = keyof typeof FIELDS;
/** Validated values by dotted path; absent = not given. */
export type FieldValues = { -readonly [K in FieldPath]?: z.output<(typeof FIELDS)[K]['schema']> };

export const FIELD_PATHS = Object.keys(FIELDS) as FieldPath[];

/** "default 7", "required for acme", or "" when there is no default: for help and comments. */
export function defaultPhrase(spec: FieldSpec): string {
  const d = spec.defaultText.replace(/`/g, '');
  if (d === '') return '';
  return d.startsWith('required') ? d : `default ${d}`;
}

export function fieldSpec(path: FieldPath): FieldSpec {
  return FIELDS[path];
}

/** The field a flag sets, by flag name. */
export const FIELD_OF_FLAG: ReadonlyMap<string, FieldPath> = new Map(
  FIELD_PATHS.flatMap((p) => {
    const f: FlagSpec | undefined = fieldSpec(p).flag;
    return f === undefined ? [] : [[f.name, p] as const];
  }),
);
