/**
 * `/debug/bans`: the bans in force as JSON, for loopback peers only and never for a proxied request
 * (the same rule as /debug/varz: behind a proxy on the same host every request comes from loopback).
 */
import { debugPage } from '../metrics/varz.js';
import type { RouteHandler } from '../server/relay.js';
import { banReason, type Ban } from './bans.js';
import type { AbuseMonitor } from './monitor.js';

export const BANS_PATH = '/debug/bans';

/** One ban as /debug/bans shows it (times in ISO 8601 UTC). */
export interface BanView {
  identity: string;
  type: Ban['type'];
  kind: Ban['kind'];
  reason: string;
  since: string;
  until: string;
  remainingSeconds: number;
  offences: number;
}

export function banView(b: Ban, now: number): BanView {
  return {
    identity: b.identity,
    type: b.type,
    kind: b.kind,
    reason: banReason(b),
    since: new Date(b.since).toISOString(),
    until: new Date(b.until).toISOString(),
    remainingSeconds: Math.max(0, Math.ceil((b.until - now) / 1000)),
    offences: b.offences,
  };
}

/** The handler for `/debug/bans` (403 to anyone but an unproxied loopback peer; GET and HEAD only). */
export function bansRoute(monitor: AbuseMonitor, now: () => number = Date.now): RouteHandler {
  return debugPage(() => {
    const t = now();
    const bans = monitor.bans().map((b) => banView(b, t));
    return { type: 'application/json; charset=utf-8', body: `${JSON.stringify({ now: new Date(t).toISOString(), banning: monitor.settings.ban, count: bans.length, bans }, null, 2)}\n` };
  });
}

/** `{ '/debug/bans': handler }`, to spread into the relay's `routes`. */
export function abuseDebugRoutes(monitor: AbuseMonitor, now?: () => number): Record<string, RouteHandler> {
  return { [BANS_PATH]: bansRoute(monitor, now) };
}
