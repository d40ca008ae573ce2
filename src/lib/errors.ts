/**
 * Typed errors with stable string codes (after undici's UND_ERR_*), so callers and the CLI can switch
 * on `code` instead of matching messages. Every error may carry a `cause` and structured context.
 */

export type DerpErrorCode =
  | 'DERP_ERR_PROTOCOL'
  | 'DERP_ERR_FRAME_TOO_LARGE'
  | 'DERP_ERR_BAD_MAGIC'
  | 'DERP_ERR_HANDSHAKE'
  | 'DERP_ERR_BAD_KEY'
  | 'DERP_ERR_KEY_FILE'
  | 'DERP_ERR_BOX'
  | 'DERP_ERR_HTTP'
  | 'DERP_ERR_TLS'
  | 'DERP_ERR_CONNECT'
  | 'DERP_ERR_TIMEOUT'
  | 'DERP_ERR_CLOSED'
  | 'DERP_ERR_PACKET_TOO_LARGE'
  | 'DERP_ERR_CONFIG'
  | 'DERP_ERR_CERT'
  | 'DERP_ERR_ACME'
  | 'DERP_ERR_SERVER'
  | 'DERP_ERR_MAP_INVALID'
  | 'DERP_ERR_MAP_FETCH'
  | 'DERP_ERR_NO_HEALTHY_SERVER'
  | 'DERP_ERR_KEY_LIST'
  | 'DERP_ERR_ADMISSION'
  | 'DERP_ERR_REPORT_WRITE';

export type ErrorContext = Record<string, string | number | boolean | undefined>;

export class DerpError extends Error {
  readonly code: DerpErrorCode;
  readonly context: ErrorContext;

  constructor(code: DerpErrorCode, message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.context = options.context ?? {};
  }
}

/** A frame violated the wire format (bad length, bad field, wrong frame at this point). */
export class ProtocolError extends DerpError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_PROTOCOL', message, options);
  }
}

/** A frame header announced more payload than the receiver accepts for that frame type. */
export class FrameTooLargeError extends DerpError {
  constructor(readonly frameType: number, readonly length: number, readonly limit: number) {
    super('DERP_ERR_FRAME_TOO_LARGE', `frame type 0x${frameType.toString(16).padStart(2, '0')} of ${length} bytes exceeds limit ${limit}`, {
      context: { frameType, length, limit },
    });
  }
}

export class BadKeyError extends DerpError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_BAD_KEY', message, options);
  }
}

export class KeyFileError extends DerpError {
  constructor(readonly file: string, message: string, options: { cause?: unknown } = {}) {
    super('DERP_ERR_KEY_FILE', `${file}: ${message}`, { ...options, context: { file } });
  }
}

/** A NaCl box failed to open (wrong key, tampered, truncated). */
export class BoxError extends DerpError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('DERP_ERR_BOX', message, options);
  }
}

export class HandshakeError extends DerpError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_HANDSHAKE', message, options);
  }
}

export class ConnectError extends DerpError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_CONNECT', message, options);
  }
}

export class TimeoutError extends DerpError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_TIMEOUT', message, options);
  }
}

export class ClosedError extends DerpError {
  constructor(message = 'connection closed', options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_CLOSED', message, options);
  }
}

export class PacketTooLargeError extends DerpError {
  constructor(readonly size: number, readonly limit: number) {
    super('DERP_ERR_PACKET_TOO_LARGE', `packet of ${size} bytes exceeds the DERP maximum of ${limit}`, { context: { size, limit } });
  }
}

/** TLS failed: untrusted or mismatched certificate, failed pin, handshake error. */
export class TlsError extends DerpError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_TLS', message, options);
  }
}

export class ConfigError extends DerpError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_CONFIG', message, options);
  }
}

/** One problem in the serve configuration: where (file and position, or the flag) and what. */
export interface ConfigIssue {
  /** The config file, or "command line" for a flag. */
  source: string;
  /** Dotted field path, e.g. `stun.port` or `derp.servers[0].hostname`; "" = the whole document. */
  path: string;
  /** The flag the value came from (`--stun-port`), when it came from the command line. */
  flag?: string;
  line?: number;
  column?: number;
  message: string;
}

/**
 * The serve configuration (file and/or flags) is invalid; lists every problem found, not just the
 * first. Same code as ConfigError, so callers mapping DERP_ERR_CONFIG to "bad usage" cover both.
 */
export class ConfigFileError extends ConfigError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: ConfigIssue[], options: { cause?: unknown } = {}) {
    const files = [...new Set(issues.map((i) => i.source))];
    super(`invalid configuration (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${issues.map((i) => `  ${formatConfigIssue(i)}`).join('\n')}`, {
      ...options,
      context: { source: files.join(', '), issues: issues.length },
    });
    this.issues = issues;
  }
}

/**
 * `derp.yaml:14:9 limits.acceptRate: expected …`; `derp.yaml:3:1: YAML syntax error …` for the whole
 * document; `--stun-port (stun.port): …` for a flag.
 */
export function formatConfigIssue(i: ConfigIssue): string {
  if (i.flag !== undefined) return `${i.flag}${i.path ? ` (${i.path})` : ''}: ${i.message}`;
  const pos = i.line === undefined ? '' : `:${i.line}${i.column === undefined ? '' : `:${i.column}`}`;
  return `${i.source}${pos}${i.path ? ` ${i.path}` : ''}: ${i.message}`;
}

/** Why a certificate or key was refused (stable, for logs and metrics labels). */
export type CertProblem = 'unreadable' | 'unparseable' | 'empty-chain' | 'key-mismatch' | 'expired' | 'not-yet-valid';

/** A certificate/key pair was refused: which file (or source) and why. */
export class CertificateError extends DerpError {
  constructor(
    readonly file: string,
    readonly reason: CertProblem,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super('DERP_ERR_CERT', `${file}: ${message}`, { ...options, context: { file, reason } });
  }
}

/** An ACME step failed: which CA (directory URL), which name, which step. */
export class AcmeError extends DerpError {
  constructor(
    readonly directory: string,
    readonly hostname: string,
    readonly step: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super('DERP_ERR_ACME', `ACME ${step} for ${hostname} at ${directory}: ${message}`, { ...options, context: { directory, hostname, step } });
  }
}

/** Server selection found no candidate: every region/node was filtered out, unmeasured or unhealthy. */
export class NoHealthyServerError extends DerpError {
  constructor(message: string, options: { cause?: unknown; context?: ErrorContext } = {}) {
    super('DERP_ERR_NO_HEALTHY_SERVER', message, options);
  }
}

/** One problem found in a DERP map: where (source, field path, line/column when known) and what. */
export interface MapIssue {
  /** File name, URL or "stdin". */
  source: string;
  /** Field path in the source's own naming, e.g. `Regions["900"].Nodes[1].STUNPort`; "" = the document. */
  path: string;
  line?: number;
  column?: number;
  message: string;
}

/** A DERP map failed to parse or validate; lists every problem found, not just the first. */
export class MapValidationError extends DerpError {
  readonly issues: readonly MapIssue[];

  constructor(readonly source: string, issues: MapIssue[]) {
    const lines = issues.map((i) => `  ${formatMapIssue(i)}`);
    super('DERP_ERR_MAP_INVALID', `${source}: invalid DERP map (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`, {
      context: { source, issues: issues.length },
    });
    this.issues = issues;
  }
}

/** `path (line L, column C): message` — the source is named once by the enclosing error. */
export function formatMapIssue(i: MapIssue): string {
  const where = i.line === undefined ? '' : ` (line ${i.line}${i.column === undefined ? '' : `, column ${i.column}`})`;
  return `${i.path || '(document)'}${where}: ${i.message}`;
}

/** A DERP map could not be fetched or read (network, HTTP status, timeout, size limit, missing file). */
export class MapFetchError extends DerpError {
  /** HTTP status when the server answered with something other than 200. */
  readonly status: number | undefined;

  constructor(
    readonly source: string,
    message: string,
    options: { cause?: unknown; status?: number } = {},
  ) {
    super('DERP_ERR_MAP_FETCH', `${source}: ${message}`, { cause: options.cause, context: { source, status: options.status } });
    this.status = options.status;
  }
}

/** Renders an error and its cause chain on one line, for logs. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    if (cur instanceof Error) {
      // Skip a cause whose text the outer message already quotes.
      if (!parts.some((p) => p.includes(cur instanceof Error ? cur.message : ''))) parts.push(cur.message);
      cur = cur.cause;
    } else {
      parts.push(String(cur));
      break;
    }
  }
  return parts.join(': ');
}

/** An allow/deny key list was refused: which file (or config field) and line, and what was wrong. */
export class KeyListError extends DerpError {
  constructor(
    readonly source: string,
    readonly line: number | undefined,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super('DERP_ERR_KEY_LIST', `${source}${line === undefined ? '' : `:${line}`}: ${message}`, { ...options, context: { source, line } });
  }
}

/** An admission source (webhook, tailscaled, tailnet API) failed: which source, which step. */
export class AdmissionError extends DerpError {
  constructor(
    readonly source: string,
    message: string,
    options: { cause?: unknown; status?: number } = {},
  ) {
    super('DERP_ERR_ADMISSION', `${source}: ${message}`, { cause: options.cause, context: { source, status: options.status } });
  }
}

/** A listener could not bind (address in use, no permission, no such address): which address. */
export class ListenError extends DerpError {
  constructor(
    readonly addr: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super('DERP_ERR_SERVER', `cannot listen on ${addr}: ${message}`, { ...options, context: { addr } });
  }
}

/** A report file (JUnit XML, JSON) could not be written: which file and why. */
export class ReportWriteError extends DerpError {
  constructor(
    readonly file: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super('DERP_ERR_REPORT_WRITE', `${file}: ${message}`, { ...options, context: { file } });
  }
}
