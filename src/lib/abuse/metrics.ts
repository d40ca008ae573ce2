/**
 * Abuse counters on the relay's Prometheus registry, read when scraped (nothing on the hot path).
 * Labels are bounded (kind, action, type); never a key or an address.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { METRIC_PREFIX } from '../metrics/constants.js';
import { ABUSE_ACTIONS, ABUSE_KINDS } from './constants.js';
import type { AbuseMonitor, AbuseStats } from './monitor.js';

type Emit = (labels: Record<string, string>, v: number) => void;

/**
 * Registers `derp_abuse_*` on `registry` (e.g. `RelayMetrics.registry`), reading `monitor.stats()` once
 * per scrape. Call once per registry.
 */
export function registerAbuseMetrics(registry: Registry, monitor: AbuseMonitor): void {
  let snap: { at: number; stats: AbuseStats } | null = null;
  // One stats() per scrape: the metrics below are collected one after another within a few ms.
  const take = (): AbuseStats => {
    const t = Date.now();
    if (snap === null || t - snap.at > 1000) snap = { at: t, stats: monitor.stats() };
    return snap.stats;
  };
  // `aggregator`: how a --workers parent combines its workers' values (prom-client's AggregatorRegistry).
  const metric = (type: 'counter' | 'gauge', name: string, help: string, labelNames: string[], read: (s: AbuseStats, emit: Emit) => void, aggregator: 'sum' | 'max' = 'sum'): void => {
    if (type === 'counter') {
      const c: Counter = new Counter({ name: `${METRIC_PREFIX}${name}`, help, labelNames, registers: [registry], aggregator, collect: () => (c.reset(), read(take(), (l, v) => c.inc(l, v))) });
    } else {
      const g: Gauge = new Gauge({ name: `${METRIC_PREFIX}${name}`, help, labelNames, registers: [registry], aggregator, collect: () => (g.reset(), read(take(), (l, v) => g.set(l, v))) });
    }
  };
  metric('counter', 'abuse_events_total', 'Suspicious events the relay reported, by kind.', ['kind'], (s, emit) => {
    for (const k of ABUSE_KINDS) emit({ kind: k }, s.events[k]);
  });
  metric('counter', 'abuse_crossings_total', 'Abuse thresholds crossed, by kind and action (warned, banned, exempt).', ['kind', 'action'], (s, emit) => {
    for (const k of ABUSE_KINDS) for (const a of ABUSE_ACTIONS) emit({ kind: k, action: a }, s.crossings[k][a]);
  });
  // Every worker of a host holds every ban (they are shared): the host's count is any worker's, not their sum.
  metric(
    'gauge',
    'abuse_bans',
    'Bans in force, by what is banned (key, ip).',
    ['type'],
    (s, emit) => {
      emit({ type: 'key' }, s.bans.activeByType.key);
      emit({ type: 'ip' }, s.bans.activeByType.ip);
    },
    'max',
  );
  metric('counter', 'abuse_bans_total', 'Bans made.', [], (s, emit) => emit({}, s.bans.total));
  metric('counter', 'abuse_bans_lifted_total', 'Bans ended, by cause (expired, config, api).', ['cause'], (s, emit) => {
    for (const [cause, v] of Object.entries(s.bans.lifted)) emit({ cause }, v);
  });
  metric('counter', 'abuse_banned_refusals_total', 'Connections refused because of a ban, by what matched (key, ip).', ['type'], (s, emit) => {
    emit({ type: 'key' }, s.refused.key);
    emit({ type: 'ip' }, s.refused.ip);
  });
  metric('gauge', 'abuse_tracked', 'Identities whose events are being counted, by type (key, ip).', ['type'], (s, emit) => {
    emit({ type: 'key' }, s.tracked.keys);
    emit({ type: 'ip' }, s.tracked.ips);
  });
  metric('counter', 'abuse_tracked_evictions_total', 'Identities forgotten because the tracking table was full.', [], (s, emit) => emit({}, s.tracked.evictions));
}
