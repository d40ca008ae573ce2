/** Shared pieces of the abuse tests: an injected clock, keys, settings. */
import { randomBytes } from 'node:crypto';
import { defaultAbuseSettings, type AbuseSettings } from '../../src/lib/abuse/index.js';

export class Clock {
  t = Date.UTC(2026, 0, 1);
  readonly now = (): number => this.t;
  advance(seconds: number): void {
    this.t += seconds * 1000;
  }
}

export function key(): Buffer {
  return randomBytes(32);
}

export type SettingsOver = Partial<Omit<AbuseSettings, 'thresholds'>> & { thresholds?: Partial<AbuseSettings['thresholds']> };

export function settings(over: SettingsOver = {}): AbuseSettings {
  const d = defaultAbuseSettings();
  return { ...d, ...over, thresholds: { ...d.thresholds, ...over.thresholds } };
}
