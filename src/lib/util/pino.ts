/**
 * The production logger: pino, JSON lines (`time` ISO, `level` as a word, as the older JSON logger
 * wrote them) or pino-pretty's readable form, with secrets redacted should a field ever carry one.
 */
import { pino, stdTimeFunctions, type Logger as Pino } from 'pino';
import { PinoPretty } from 'pino-pretty';
import type { LogFields, LogLevel, Logger } from './logger.js';

export type LogFormat = 'json' | 'pretty';

export interface PinoLoggerOptions {
  level?: LogLevel;
  format: LogFormat;
  /** File descriptor: 1 = stdout, 2 = stderr. */
  fd: 1 | 2;
  /** Colours in the pretty format (default: the descriptor is a TTY). */
  colorize?: boolean;
}

/** Field names that must never reach a log line in clear. */
const REDACT = ['privateKey', 'meshKey', 'psk', 'password', 'apiKey', 'clientSecret', 'authorization', 'payload'];

export class PinoLogger implements Logger {
  private readonly p: Pino;

  constructor(opts: PinoLoggerOptions) {
    const stream =
      opts.format === 'pretty'
        ? PinoPretty({ destination: opts.fd, sync: true, colorize: opts.colorize ?? isTty(opts.fd), translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' })
        : pino.destination({ dest: opts.fd, sync: true });
    this.p = pino(
      {
        level: opts.level ?? 'info',
        base: undefined,
        timestamp: stdTimeFunctions.isoTime,
        formatters: { level: (label) => ({ level: label }) },
        redact: { paths: REDACT, censor: '[redacted]' },
      },
      stream,
    );
  }

  log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (fields === undefined) this.p[level](msg);
    else this.p[level](fields, msg);
  }

  get level(): LogLevel {
    return this.p.level as LogLevel;
  }

  /** Changes the threshold at once (a SIGHUP reload of `log.level`). */
  setLevel(level: LogLevel): void {
    this.p.level = level;
  }

  isEnabled(level: LogLevel): boolean {
    return this.p.isLevelEnabled(level);
  }
}

function isTty(fd: 1 | 2): boolean {
  return (fd === 1 ? process.stdout : process.stderr).isTTY === true;
}

/** JSON when the stream is not a terminal, readable when it is. */
export function defaultLogFormat(fd: 1 | 2): LogFormat {
  return isTty(fd) ? 'pretty' : 'json';
}
