/** Durations on the command line: "30s", "500ms", "1.5m", "2h". */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

export interface DurationSyntax {
  /** Unit of a bare number ("5"); without it a unit is required. */
  bareUnit?: 'ms' | 's';
  /** Accept 0 (e.g. "no warm-up"). */
  allowZero?: boolean;
}

/** Milliseconds, or undefined when `text` is not a duration (or is 0 without allowZero). */
export function parseDuration(text: string, syntax: DurationSyntax = {}): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return undefined;
  const unit = m[2] ?? syntax.bareUnit;
  if (unit === undefined) return undefined;
  const ms = Number(m[1]) * UNIT_MS[unit]!;
  if (!Number.isFinite(ms)) return undefined;
  return ms > 0 || (syntax.allowZero && ms === 0) ? ms : undefined;
}
