// ProbeMonitor on a real loopback listener, driven by a `run` the test feeds one report (or error) at a time.
import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ListenError } from '../../src/lib/errors.js';
import { DEFAULT_PROBE_LISTEN, ProbeMonitor, parseProbeListen } from '../../src/lib/probe/continuous.js';
import type { ProbeReport } from '../../src/lib/probe/types.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { scrape, value } from '../metrics/helpers.js';
import { buildReport, fullReport } from './fixtures.js';

/** A `run` that waits for the test to hand it its result; so between feeds the monitor's state is fixed. */
class Feeder {
  calls = 0;
  active = 0;
  maxActive = 0;
  private queue: Array<ProbeReport | Error> = [];
  private waiting: Array<(x: ProbeReport | Error) => void> = [];

  readonly run = (signal: AbortSignal): Promise<ProbeReport> => {
    this.calls++;
    this.maxActive = Math.max(this.maxActive, ++this.active);
    const p = new Promise<ProbeReport>((resolve, reject) => {
      const take = (x: ProbeReport | Error): void => (x instanceof Error ? reject(x) : resolve(x));
      const next = this.queue.shift();
      if (next !== undefined) return take(next);
      this.waiting.push(take);
      signal.addEventListener('abort', () => {
        this.waiting = this.waiting.filter((w) => w !== take);
        reject(signal.reason as Error);
      });
    });
    return p.finally(() => this.active--);
  };

  feed(x: ProbeReport | Error): void {
    const w = this.waiting.shift();
    if (w) w(x);
    else this.queue.push(x);
  }
}

/** Resolves once the monitor has finished `n` runs. */
function runsReach(m: ProbeMonitor, n: number): Promise<void> {
  if (m.state.runs >= n) return Promise.resolve();
  return new Promise((resolve) => {
    const on = (): void => {
      if (m.state.runs < n) return;
      m.off('run', on);
      resolve();
    };
    m.on('run', on);
  });
}

const monitors: ProbeMonitor[] = [];
afterEach(async () => {
  await Promise.all(monitors.splice(0).map((m) => m.stop()));
});

async function startMonitor(feeder: Feeder, logger = new MemoryLogger()): Promise<ProbeMonitor> {
  const m = new ProbeMonitor({ run: feeder.run, everyMs: 1, listen: { host: '127.0.0.1', port: 0 }, logger });
  monitors.push(m);
  await m.start();
  return m;
}

const twoNodes = (): ProbeReport =>
  buildReport([
    { regionId: 900, regionCode: 'fra', node: '900a', checks: [
      { check: 'stun4', status: 'good', value: 12, unit: 'ms', durationMs: 15 },
      { check: 'tls', status: 'warn', value: 9, unit: 'days' },
      { check: 'mesh', status: 'bad', peer: '900b', message: 'no packet' },
      { check: 'bandwidth', status: 'good', value: 250, unit: 'Mbit/s' },
    ] },
    { regionId: 900, regionCode: 'fra', node: '900b', checks: [{ check: 'stun4', status: 'good', value: 20, unit: 'ms' }] },
  ]);

describe('ProbeMonitor', () => {
  it('answers 503 on / and /json before the first run, and serves /metrics with no runs', async () => {
    const feeder = new Feeder();
    const m = await startMonitor(feeder);
    const page = await fetch(`${m.url}/`);
    expect(page.status).toBe(503);
    expect(await page.text()).toContain('no probe run has finished yet');
    const json = await fetch(`${m.url}/json`);
    expect(json.status).toBe(503);
    expect(await json.json()).toEqual({ error: 'no probe run has finished yet' });
    const fams = await scrape(`${m.url}/metrics`);
    expect(value(fams, 'derp_probe_runs_total')).toBe(0);
    expect(fams.get('derp_probe_check_status')?.metrics ?? []).toEqual([]);
    expect((await fetch(`${m.url}/nope`)).status).toBe(404);
    expect((await fetch(`${m.url}/json`, { method: 'POST' })).status).toBe(405);
  });

  it('exports the last report: one-hot status, durations, values in base units, run bookkeeping', async () => {
    const feeder = new Feeder();
    const m = await startMonitor(feeder);
    feeder.feed(twoNodes());
    await runsReach(m, 1);
    const fams = await scrape(`${m.url}/metrics`);
    const mesh = { region: 'fra', node: '900a', check: 'mesh', peer: '900b' };
    expect(value(fams, 'derp_probe_check_status', { ...mesh, status: 'bad' })).toBe(1);
    expect(value(fams, 'derp_probe_check_status', { ...mesh, status: 'good' })).toBe(0);
    expect(fams.get('derp_probe_check_status')!.metrics.filter((s) => s.labels?.check === 'mesh')).toHaveLength(4);
    expect(value(fams, 'derp_probe_check_status', { node: '900a', check: 'tls', peer: '', status: 'warn' })).toBe(1);
    expect(value(fams, 'derp_probe_check_duration_seconds', { node: '900a', check: 'stun4' })).toBeCloseTo(0.015, 9);
    expect(value(fams, 'derp_probe_latency_seconds', { node: '900b', check: 'stun4' })).toBeCloseTo(0.02, 9);
    expect(value(fams, 'derp_probe_certificate_expires_in_seconds', { node: '900a', check: 'tls' })).toBe(9 * 86_400);
    expect(value(fams, 'derp_probe_throughput_bits_per_second', { node: '900a' })).toBe(250e6);
    // The mesh check had no value: no latency series for it.
    expect(fams.get('derp_probe_latency_seconds')!.metrics.some((s) => s.labels?.check === 'mesh')).toBe(false);
    expect(value(fams, 'derp_probe_runs_total')).toBe(1);
    expect(value(fams, 'derp_probe_run_failures_total')).toBe(0);
    expect(value(fams, 'derp_probe_last_run_timestamp_seconds', { result: 'ok' })).toBeCloseTo(m.state.lastSuccessAt! / 1000, 3);
    expect(value(fams, 'derp_probe_last_run_duration_seconds')).toBeGreaterThanOrEqual(0);
    expect(fams.get('derp_probe_check_status')!.type).toBe('GAUGE');
    expect(fams.get('derp_probe_runs_total')!.type).toBe('COUNTER');
    // Its own registry: nothing of prom-client's default process metrics.
    expect([...fams.keys()].filter((k) => !k.startsWith('derp_probe_'))).toEqual([]);
  });

  it('follows changing reports, and drops the series of a node that left the map', async () => {
    const feeder = new Feeder();
    const m = await startMonitor(feeder);
    feeder.feed(twoNodes());
    await runsReach(m, 1);
    let fams = await scrape(`${m.url}/metrics`);
    expect(value(fams, 'derp_probe_latency_seconds', { node: '900b' })).toBeCloseTo(0.02, 9);

    feeder.feed(buildReport([{ regionId: 900, regionCode: 'fra', node: '900a', checks: [{ check: 'stun4', status: 'bad', message: 'timeout' }] }]));
    await runsReach(m, 2);
    fams = await scrape(`${m.url}/metrics`);
    for (const name of ['derp_probe_check_status', 'derp_probe_check_duration_seconds', 'derp_probe_latency_seconds']) {
      expect((fams.get(name)?.metrics ?? []).filter((s) => s.labels?.node === '900b'), name).toEqual([]);
    }
    expect(value(fams, 'derp_probe_check_status', { node: '900a', check: 'stun4', status: 'bad' })).toBe(1);
    expect(fams.get('derp_probe_certificate_expires_in_seconds')?.metrics ?? []).toEqual([]);
    expect(value(fams, 'derp_probe_runs_total')).toBe(2);
  });

  it('serves the report on /json and an escaped, coloured status page on /', async () => {
    const feeder = new Feeder();
    const m = await startMonitor(feeder);
    const r = fullReport();
    r.nodes[0]!.checks[6]!.message = '<script>alert("x&y")</script>';
    feeder.feed(r);
    await runsReach(m, 1);
    const json = await fetch(`${m.url}/json`);
    expect(json.status).toBe(200);
    expect(json.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await json.json()).toEqual(r);

    const res = await fetch(`${m.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    const html = await res.text();
    expect(html).not.toContain('<script>');
    expect(html).toContain('&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;');
    // No external assets: no src= or href= at all.
    expect(html).not.toMatch(/\s(src|href)=/);
    const rows = html.split('\n').filter((l) => l.startsWith('<tr><td>'));
    expect(rows).toHaveLength(r.summary.checks);
    expect(rows.find((l) => l.includes('mesh → 900b'))).toContain('class="s-bad"');
    expect(rows.find((l) => l.includes('>tls<'))).toContain('class="s-warn"');
    expect(rows.find((l) => l.includes('>stun6<'))).toContain('class="s-skipped"');
    expect(html).toContain(r.startedAt);
  });

  it('counts and logs a run that throws, keeps the last report, and goes on', async () => {
    const feeder = new Feeder();
    const logger = new MemoryLogger();
    const m = await startMonitor(feeder, logger);
    feeder.feed(new Error('map fetch failed: 502'));
    await runsReach(m, 1);
    expect(m.state).toMatchObject({ runs: 1, failures: 1, lastError: 'map fetch failed: 502' });
    expect((await fetch(`${m.url}/json`)).status).toBe(503);
    expect(await (await fetch(`${m.url}/`)).text()).toContain('the last one failed: map fetch failed: 502');

    feeder.feed(twoNodes());
    await runsReach(m, 2);
    feeder.feed(new Error('map fetch failed again'));
    await runsReach(m, 3);
    const fams = await scrape(`${m.url}/metrics`);
    expect(value(fams, 'derp_probe_runs_total')).toBe(3);
    expect(value(fams, 'derp_probe_run_failures_total')).toBe(2);
    expect(value(fams, 'derp_probe_last_run_timestamp_seconds', { result: 'failed' })).toBeGreaterThanOrEqual(value(fams, 'derp_probe_last_run_timestamp_seconds', { result: 'ok' })!);
    // The last good report stays on every endpoint.
    expect(value(fams, 'derp_probe_check_status', { node: '900b', status: 'good' })).toBe(1);
    expect(((await (await fetch(`${m.url}/json`)).json()) as ProbeReport).nodes).toHaveLength(2);
    expect(await (await fetch(`${m.url}/`)).text()).toContain('The last run failed');
    expect(logger.entries.filter((e) => e.msg === 'probe run failed').map((e) => e.fields.reason)).toEqual(['map fetch failed: 502', 'map fetch failed again']);

    feeder.feed(twoNodes());
    await runsReach(m, 4);
    expect(m.state.failures).toBe(2);
  });

  it('counts a run that resolves without a report as failed', async () => {
    const m = new ProbeMonitor({ run: () => Promise.resolve(null as unknown as ProbeReport), everyMs: 3_600_000, listen: { host: '127.0.0.1', port: 0 } });
    monitors.push(m);
    await m.start();
    await runsReach(m, 1);
    expect(m.state).toMatchObject({ runs: 1, failures: 1, lastError: 'probe run resolved without a report' });
    expect(m.lastReport).toBeUndefined();
  });

  it('never runs twice at once, and starts the next run when the previous overran everyMs', async () => {
    const feeder = new Feeder();
    const m = await startMonitor(feeder);
    for (let i = 1; i <= 5; i++) {
      feeder.feed(twoNodes());
      await runsReach(m, i);
    }
    // Every run waited for its feed far longer than everyMs (1 ms), yet none overlapped another.
    expect(feeder.maxActive).toBe(1);
    expect(feeder.calls).toBeGreaterThanOrEqual(5);
  });

  it('stop() aborts the waiting run, closes the listener and leaves no timer or server handle', async () => {
    const count = (kind: string): number => process.getActiveResourcesInfo().filter((r) => r === kind).length;
    // A closed handle leaves the list a loop turn after its close callback: poll, bounded.
    const settles = async (pred: () => boolean): Promise<boolean> => {
      for (let i = 0; i < 1000 && !pred(); i++) await new Promise((r) => setImmediate(r));
      return pred();
    };
    expect(await settles(() => count('TCPServerWrap') === 0)).toBe(true);
    const timers = count('Timeout');
    const feeder = new Feeder();
    const logger = new MemoryLogger();
    const m = new ProbeMonitor({ run: feeder.run, everyMs: 1, listen: { host: '127.0.0.1', port: 0 }, logger });
    await m.start();
    const url = m.url;
    feeder.feed(twoNodes());
    await runsReach(m, 1);
    expect(count('TCPServerWrap')).toBe(1);
    await m.stop();
    expect(await settles(() => count('TCPServerWrap') === 0), 'listener handle left open').toBe(true);
    expect(await settles(() => count('Timeout') <= timers), `timers left: ${process.getActiveResourcesInfo().join(', ')}`).toBe(true);
    await expect(fetch(`${url}/metrics`)).rejects.toThrow();
    // The aborted run is not counted as a failure.
    expect(m.state).toMatchObject({ runs: 1, failures: 0 });
    expect(logger.entries.some((e) => e.msg === 'probe run failed')).toBe(false);
    const calls = feeder.calls;
    // Feeding now would start nothing: no timer is left to call run.
    feeder.feed(twoNodes());
    expect(feeder.calls).toBe(calls);
  });

  it('stop() between runs clears the pending timer (an hour away) and the listener', async () => {
    const count = (kind: string): number => process.getActiveResourcesInfo().filter((r) => r === kind).length;
    const settles = async (pred: () => boolean): Promise<boolean> => {
      for (let i = 0; i < 1000 && !pred(); i++) await new Promise((r) => setImmediate(r));
      return pred();
    };
    expect(await settles(() => count('TCPServerWrap') === 0)).toBe(true);
    const timers = count('Timeout');
    const feeder = new Feeder();
    const m = new ProbeMonitor({ run: feeder.run, everyMs: 3_600_000, listen: { host: '127.0.0.1', port: 0 } });
    feeder.feed(twoNodes());
    await m.start();
    await runsReach(m, 1);
    expect(feeder.calls).toBe(1);
    expect(count('Timeout')).toBeGreaterThan(timers);
    await m.stop();
    expect(await settles(() => count('Timeout') <= timers), `timers left: ${process.getActiveResourcesInfo().join(', ')}`).toBe(true);
    expect(await settles(() => count('TCPServerWrap') === 0)).toBe(true);
    expect(feeder.calls).toBe(1);
  });

  it('refuses a port in use with a ListenError naming the address', async () => {
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const feeder = new Feeder();
      const m = new ProbeMonitor({ run: feeder.run, everyMs: 1000, listen: { host: '127.0.0.1', port } });
      const err = await m.start().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ListenError);
      expect((err as ListenError).addr).toBe(`127.0.0.1:${port}`);
      expect((err as Error).message).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}.*EADDRINUSE|in use`));
      expect(feeder.calls).toBe(0);
      await m.stop();
    } finally {
      await new Promise<void>((resolve) => busy.close(() => resolve()));
    }
  });

  it('defaults to loopback 9101 and parses --listen forms', () => {
    expect(DEFAULT_PROBE_LISTEN).toEqual({ host: '127.0.0.1', port: 9101 });
    expect(parseProbeListen('127.0.0.1:9101')).toEqual({ host: '127.0.0.1', port: 9101 });
    expect(parseProbeListen('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseProbeListen(':9101')).toEqual({ port: 9101 });
    expect(() => parseProbeListen('9101')).toThrow(/host:port/);
    expect(() => new ProbeMonitor({ run: new Feeder().run, everyMs: 0 })).toThrow(/at least 1 ms/);
  });
});
