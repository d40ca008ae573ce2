/**
 * Keeps repeated warnings from flooding the log: the same message for the same cause from the same
 * peer IP is logged a few times per window, then only counted; when the window ends, one line says
 * how many were suppressed.
 */
import type { LogFields, LogLevel, Logger } from './logger.js';

export interface RepeatLimitOptions {
  /** Lines per key per window before suppression (default 5). */
  burst?: number;
  /** Window length (default 60 s). */
  windowMs?: number;
  /** Distinct keys tracked at once; the oldest is forgotten first (default 10,000). */
  maxKeys?: number;
  /** Called for every suppressed line (e.g. a metric). */
  onSuppressed?: (level: LogLevel, msg: string) => void;
  now?: () => number;
}

interface Window {
  start: number;
  logged: number;
  suppressed: number;
  level: LogLevel;
  msg: string;
  fields: LogFields;
}

const LIMITED: ReadonlySet<LogLevel> = new Set(['warn', 'error']);

/** The peer's IP from a `remote` field ("1.2.3.4:5", "[::1]:5"). */
function peerOf(remote: LogFields[string]): string {
  if (typeof remote !== 'string') return '';
  const v6 = /^\[([^\]]+)\]:\d+$/.exec(remote);
  if (v6) return v6[1]!;
  const i = remote.lastIndexOf(':');
  return i > 0 && remote.indexOf(':') === i ? remote.slice(0, i) : remote;
}

export class RepeatLimitedLogger implements Logger {
  private readonly windows = new Map<string, Window>();
  private readonly burst: number;
  private readonly windowMs: number;
  private readonly maxKeys: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | null = null;
  suppressedTotal = 0;

  constructor(
    readonly inner: Logger,
    private readonly opts: RepeatLimitOptions = {},
  ) {
    this.burst = opts.burst ?? 5;
    this.windowMs = opts.windowMs ?? 60_000;
    this.maxKeys = opts.maxKeys ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!LIMITED.has(level)) {
      this.inner.log(level, msg, fields);
      return;
    }
    const key = `${level}\u0000${msg}\u0000${String(fields?.reason ?? '')}\u0000${peerOf(fields?.remote)}`;
    const now = this.now();
    let w = this.windows.get(key);
    if (w !== undefined && now - w.start >= this.windowMs) {
      this.summarise(w);
      this.windows.delete(key);
      w = undefined;
    }
    if (w === undefined) {
      if (this.windows.size >= this.maxKeys) this.evictOldest();
      w = { start: now, logged: 0, suppressed: 0, level, msg, fields: fields ?? {} };
      this.windows.set(key, w);
      this.armTimer();
    }
    if (w.logged < this.burst) {
      w.logged++;
      this.inner.log(level, msg, fields);
      return;
    }
    w.suppressed++;
    w.fields = fields ?? {};
    this.suppressedTotal++;
    this.opts.onSuppressed?.(level, msg);
  }

  /** Ends every window now, writing the suppression summaries (tests; shutdown). */
  flush(): void {
    for (const w of this.windows.values()) this.summarise(w);
    this.windows.clear();
    this.stop();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private summarise(w: Window): void {
    if (w.suppressed === 0) return;
    this.inner.log(w.level, `${w.msg} (repeated)`, { ...w.fields, suppressed: w.suppressed, windowSeconds: Math.round(this.windowMs / 1000) });
  }

  private evictOldest(): void {
    const first = this.windows.entries().next();
    if (first.done === true) return;
    this.summarise(first.value[1]);
    this.windows.delete(first.value[0]);
  }

  private armTimer(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.sweep(), this.windowMs);
    this.timer.unref();
  }

  /** Summarises windows that ended with no later line to trigger it. */
  private sweep(): void {
    const now = this.now();
    for (const [k, w] of this.windows) {
      if (now - w.start < this.windowMs) continue;
      this.summarise(w);
      this.windows.delete(k);
    }
    if (this.windows.size === 0) this.stop();
  }
}
