/**
 * A small structured logger: library code logs events with fields; the CLI picks text or JSON lines.
 * Tests pass a `MemoryLogger` and assert on what was logged.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  log(level: LogLevel, msg: string, fields?: LogFields): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export const silentLogger: Logger = { log() {} };

/** One JSON object per line: {"time","level","msg",...fields}. */
export class JsonLogger implements Logger {
  constructor(
    private readonly out: NodeJS.WritableStream = process.stderr,
    private readonly min: LogLevel = 'info',
  ) {}
  log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (ORDER[level] < ORDER[this.min]) return;
    this.out.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
  }
}

/** Human-readable: `time level msg key=value …`. */
export class TextLogger implements Logger {
  constructor(
    private readonly out: NodeJS.WritableStream = process.stderr,
    private readonly min: LogLevel = 'info',
  ) {}
  log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (ORDER[level] < ORDER[this.min]) return;
    let line = `${new Date().toISOString()} ${level.padEnd(5)} ${msg}`;
    if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${typeof v === 'string' && /\s/.test(v) ? JSON.stringify(v) : String(v)}`;
    this.out.write(`${line}\n`);
  }
}

export interface LogEntry {
  level: LogLevel;
  msg: string;
  fields: LogFields;
}

/** Keeps entries in memory (bounded) so tests can assert on logged reasons. */
export class MemoryLogger implements Logger {
  readonly entries: LogEntry[] = [];
  private waiters: { pred: (e: LogEntry) => boolean; resolve: (e: LogEntry) => void }[] = [];
  constructor(private readonly max = 10_000) {}
  log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    const e = { level, msg, fields };
    if (this.entries.length >= this.max) this.entries.shift();
    this.entries.push(e);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(e)) return true;
      w.resolve(e);
      return false;
    });
  }
  /** Resolves with the first entry (already logged or future) that matches. */
  waitFor(pred: (e: LogEntry) => boolean): Promise<LogEntry> {
    const found = this.entries.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.waiters.push({ pred, resolve }));
  }
}
