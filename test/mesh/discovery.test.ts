import fc from 'fast-check';
import { spawn, type ChildProcess } from 'node:child_process';
import type { LookupAddress } from 'node:dns';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../src/lib/errors.js';
import { MeshDiscovery, MeshDiscoveryError, type MeshDiscoveryOptions } from '../../src/lib/mesh/discovery.js';
import { parseMeshWith } from '../../src/lib/mesh/targets.js';
import type { MeshEndpoint } from '../../src/lib/mesh/types.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { isLoopbackAddress } from '../../src/lib/util/net.js';
import { NODE, ROOT } from '../helpers/cli.js';

/** A "DNS" the test edits: a name answers its addresses, an error code, or hangs until released. */
class TestDns {
  private readonly zone = new Map<string, string[] | { code: string } | 'hang'>();
  readonly calls: string[] = [];
  private readonly hung: Array<{ resolve: (a: LookupAddress[]) => void; reject: (e: Error) => void }> = [];

  set(name: string, answer: string[] | { code: string } | 'hang'): void {
    this.zone.set(name, answer);
  }

  readonly lookup = (name: string): Promise<LookupAddress[]> => {
    this.calls.push(name);
    const answer = this.zone.get(name) ?? { code: 'ENOTFOUND' };
    if (answer === 'hang') return new Promise((resolve, reject) => this.hung.push({ resolve, reject }));
    if (!Array.isArray(answer)) return Promise.reject(Object.assign(new Error(`getaddrinfo ${answer.code} ${name}`), { code: answer.code }));
    return Promise.resolve(answer.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })));
  };

  /** Hung lookups answer now (late). */
  answerHung(addresses: string[]): void {
    for (const h of this.hung.splice(0)) h.resolve(addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })));
  }

  /** Ends hung lookups so nothing outlives the test. */
  release(): void {
    for (const h of this.hung.splice(0)) h.reject(new Error('released'));
  }
}

const running: MeshDiscovery[] = [];
afterEach(() => {
  for (const d of running.splice(0)) d.stop();
  vi.useRealTimers();
});

function discovery(mesh: string, dns: TestDns, opts: Partial<MeshDiscoveryOptions> = {}): { d: MeshDiscovery; logger: MemoryLogger; changes: MeshEndpoint[][] } {
  const logger = new MemoryLogger();
  const d = new MeshDiscovery({ targets: parseMeshWith(mesh), defaultPort: 443, lookup: dns.lookup, logger, ...opts });
  const changes: MeshEndpoint[][] = [];
  d.on('change', (list) => changes.push(list));
  running.push(d);
  return { d, logger, changes };
}

const ids = (list: readonly MeshEndpoint[]) => list.map((e) => e.id);

describe('MeshDiscovery: literals', () => {
  it('IP hosts and IP dial hosts give one endpoint each without any lookup; the default port fills in', async () => {
    const dns = new TestDns();
    const { d, changes } = discovery('10.0.0.1,[fd00::1]:8443,derp3.example/10.0.0.3', dns);
    const list = await d.start();
    expect(dns.calls).toEqual([]);
    expect(list.map((e) => [e.id, e.host, e.address, e.port])).toEqual([
      ['10.0.0.1:443', '10.0.0.1', '10.0.0.1', 443],
      ['[fd00::1]:8443', 'fd00::1', 'fd00::1', 8443],
      ['10.0.0.3:443', 'derp3.example', '10.0.0.3', 443],
    ]);
    expect(list[2]!.target.spec).toBe('derp3.example/10.0.0.3');
    expect(changes).toEqual([list]);
    expect(d.stats().map((s) => [s.kind, s.endpoints, s.resolutions])).toEqual([
      ['literal', 1, 0],
      ['literal', 1, 0],
      ['literal', 1, 0],
    ]);
  });

  it('a dial host that is a name is resolved (every address a node) while the host stays the TLS name', async () => {
    const dns = new TestDns();
    dns.set('derp-mesh.ns.svc.cluster.local', ['10.0.0.7', '10.0.0.8']);
    const { d } = discovery('derp.example.com:8443/derp-mesh.ns.svc.cluster.local', dns);
    const list = await d.start();
    expect(dns.calls).toEqual(['derp-mesh.ns.svc.cluster.local']);
    expect(list.map((e) => [e.id, e.host, e.address, e.port])).toEqual([
      ['10.0.0.7:8443', 'derp.example.com', '10.0.0.7', 8443],
      ['10.0.0.8:8443', 'derp.example.com', '10.0.0.8', 8443],
    ]);
    expect(d.stats()[0]!.kind).toBe('dns');
  });
});

describe('MeshDiscovery: a DNS name', () => {
  it('gives one endpoint per distinct address (IPv4-mapped as IPv4, junk skipped), in the resolver order, both families; host stays the name', async () => {
    const dns = new TestDns();
    dns.set('derp.ns.svc', ['10.0.0.2', 'fd00::2', '10.0.0.1', '10.0.0.2', '::ffff:10.0.0.1', 'not-an-ip', 'FD00::2']);
    const { d } = discovery('derp.ns.svc:8443', dns);
    const list = await d.start();
    expect(list.map((e) => [e.id, e.address, e.host, e.port])).toEqual([
      ['10.0.0.2:8443', '10.0.0.2', 'derp.ns.svc', 8443],
      ['[fd00::2]:8443', 'fd00::2', 'derp.ns.svc', 8443],
      ['10.0.0.1:8443', '10.0.0.1', 'derp.ns.svc', 8443],
    ]);
    expect(d.current()).toEqual(list);
    expect(d.stats()).toEqual([{ spec: 'derp.ns.svc:8443', kind: 'dns', resolutions: 1, failures: 0, consecutiveFailures: 0, endpoints: 3 }]);
  });

  it('a record added → change adds it; removed → change removes it; the same set (reordered) → no change', async () => {
    const dns = new TestDns();
    dns.set('region.example', ['10.0.0.1', '10.0.0.2']);
    const { d, changes, logger } = discovery('region.example', dns);
    await d.start();
    expect(changes.map(ids)).toEqual([['10.0.0.1:443', '10.0.0.2:443']]);

    dns.set('region.example', ['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    const added = once(d, 'change');
    void d.refresh();
    expect(ids((await added)[0] as MeshEndpoint[])).toEqual(['10.0.0.1:443', '10.0.0.2:443', '10.0.0.3:443']);

    dns.set('region.example', ['10.0.0.3', '10.0.0.1']);
    const removed = once(d, 'change');
    void d.refresh();
    expect(ids((await removed)[0] as MeshEndpoint[])).toEqual(['10.0.0.3:443', '10.0.0.1:443']);
    expect(logger.entries.find((e) => e.msg === 'mesh name addresses changed' && e.fields.removed === '10.0.0.2')).toBeDefined();

    dns.set('region.example', ['10.0.0.1', '10.0.0.3']);
    await d.refresh();
    await d.refresh();
    expect(changes).toHaveLength(3);
    expect(d.stats()[0]!.resolutions).toBe(5);
    expect(ids(d.current())).toEqual(['10.0.0.3:443', '10.0.0.1:443']);
  });

  it('a failing lookup keeps the last good endpoints, is counted, logged once per streak; recovery is logged', async () => {
    const dns = new TestDns();
    dns.set('region.example', ['10.0.0.1', '10.0.0.2']);
    const { d, changes, logger } = discovery('region.example', dns);
    await d.start();

    dns.set('region.example', { code: 'EAI_AGAIN' });
    await d.refresh();
    await d.refresh();
    expect(ids(d.current())).toEqual(['10.0.0.1:443', '10.0.0.2:443']);
    expect(changes).toHaveLength(1);
    expect(d.stats()[0]).toEqual({ spec: 'region.example', kind: 'dns', resolutions: 1, failures: 2, consecutiveFailures: 2, endpoints: 2, lastError: 'EAI_AGAIN' });
    const warns = logger.entries.filter((e) => e.msg === 'mesh name does not resolve');
    expect(warns).toHaveLength(1);
    expect(warns[0]!.level).toBe('warn');
    expect(warns[0]!.fields).toMatchObject({ name: 'region.example', code: 'EAI_AGAIN', entry: 1, keeping: 2 });

    // A resolver answering with nothing usable is a failure too, not "the region is empty".
    dns.set('region.example', []);
    await d.refresh();
    expect(d.stats()[0]).toMatchObject({ failures: 3, lastError: 'ENODATA', endpoints: 2 });
    expect(logger.entries.filter((e) => e.msg === 'mesh name does not resolve')).toHaveLength(2);

    dns.set('region.example', ['10.0.0.2']);
    await d.refresh();
    expect(ids(d.current())).toEqual(['10.0.0.2:443']);
    expect(d.stats()[0]).toEqual({ spec: 'region.example', kind: 'dns', resolutions: 2, failures: 3, consecutiveFailures: 0, endpoints: 1 });
    expect(logger.entries.find((e) => e.msg === 'mesh name resolves again')?.fields).toMatchObject({ name: 'region.example', failures: 3 });
  });

  it('a name that does not resolve at start is not fatal: logged with its code, counted, retried each interval', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const dns = new TestDns();
    dns.set('a.example', ['10.0.0.1']);
    const { d, changes, logger } = discovery('a.example,late.example:8443', dns, { intervalMs: 1_000 });
    expect(ids(await d.start())).toEqual(['10.0.0.1:443']);
    const warn = logger.entries.find((e) => e.msg === 'mesh name does not resolve');
    expect(warn?.level).toBe('warn');
    expect(warn?.fields).toMatchObject({ entry: 2, spec: 'late.example:8443', name: 'late.example', code: 'ENOTFOUND', keeping: 0 });
    expect(d.stats()[1]).toMatchObject({ failures: 1, endpoints: 0, lastError: 'ENOTFOUND' });

    await vi.advanceTimersByTimeAsync(1_000);
    expect(dns.calls.filter((n) => n === 'late.example')).toHaveLength(2);
    expect(d.stats()[1]).toMatchObject({ failures: 2 });
    expect(logger.entries.filter((e) => e.msg === 'mesh name does not resolve')).toHaveLength(1);

    dns.set('late.example', ['10.0.0.9']);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(changes.map(ids)).toEqual([['10.0.0.1:443'], ['10.0.0.1:443', '10.0.0.9:8443']]);
  });

  it('strict: an unresolvable name at start rejects with a typed error naming the entry; nothing is published', async () => {
    const dns = new TestDns();
    dns.set('a.example', ['10.0.0.1']);
    const { d, changes } = discovery('a.example,gone.example', dns, { strict: true });
    const err = await d.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MeshDiscoveryError);
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as MeshDiscoveryError;
    expect(e.code).toBe('DERP_ERR_CONFIG');
    expect(e.message).toBe('--mesh-with entry 2 "gone.example": gone.example does not resolve (ENOTFOUND)');
    expect([e.source, e.entry, e.host, e.resolverCode]).toEqual(['--mesh-with', 2, 'gone.example', 'ENOTFOUND']);
    expect(changes).toEqual([]);
    // Stopped: a refresh does nothing.
    const before = dns.calls.length;
    await d.refresh();
    expect(dns.calls.length).toBe(before);
  });

  it('a hung lookup times out (counted as ETIMEOUT), the next interval still runs and waits on that lookup instead of piling up another', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const dns = new TestDns();
    dns.set('slow.example', 'hang');
    const { d, changes } = discovery('10.0.0.1,slow.example', dns, { intervalMs: 1_000, lookupTimeoutMs: 5_000 });
    const started = d.start();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(ids(await started)).toEqual(['10.0.0.1:443']);
    expect(d.stats()[1]).toMatchObject({ failures: 1, lastError: 'ETIMEOUT', endpoints: 0 });

    // The next round starts on time and waits on the same lookup; it answers during that round.
    await vi.advanceTimersByTimeAsync(1_000);
    expect(dns.calls).toEqual(['slow.example']);
    dns.answerHung(['10.0.0.2']);
    await vi.advanceTimersByTimeAsync(0);
    expect(changes.map(ids).at(-1)).toEqual(['10.0.0.1:443', '10.0.0.2:443']);
    expect(d.stats()[1]).toMatchObject({ failures: 1, resolutions: 1, consecutiveFailures: 0 });

    // That lookup is done: the round after asks afresh.
    dns.set('slow.example', ['10.0.0.2']);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(dns.calls).toEqual(['slow.example', 'slow.example']);
    expect(d.stats()[1]).toMatchObject({ resolutions: 2 });
  });

  it('a lookup that answers after its round gave up is not used: the next round asks again', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const dns = new TestDns();
    dns.set('slow.example', 'hang');
    const { d } = discovery('slow.example', dns, { intervalMs: 10_000, lookupTimeoutMs: 5_000 });
    const started = d.start();
    await vi.advanceTimersByTimeAsync(5_000);
    await started;
    dns.answerHung(['10.0.0.7']);
    await vi.advanceTimersByTimeAsync(0);
    expect(d.current()).toEqual([]);
    dns.set('slow.example', ['10.0.0.8']);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(dns.calls).toEqual(['slow.example', 'slow.example']);
    expect(ids(d.current())).toEqual(['10.0.0.8:443']);
  });

  it('never runs two resolutions at once: a refresh during one joins it', async () => {
    const dns = new TestDns();
    dns.set('slow.example', 'hang');
    const { d } = discovery('slow.example', dns);
    const started = d.start();
    const r1 = d.refresh();
    const r2 = d.refresh();
    await Promise.resolve();
    expect(dns.calls).toEqual(['slow.example']);
    dns.answerHung(['10.0.0.1']);
    await Promise.all([started, r1, r2]);
    expect(dns.calls).toEqual(['slow.example']);
    expect(d.stats()[0]).toMatchObject({ resolutions: 1 });
    dns.set('slow.example', ['10.0.0.1']);
    await d.refresh();
    expect(dns.calls).toEqual(['slow.example', 'slow.example']);
  });

  it('looks a name up once per round for all entries naming it; an id reached twice is published once', async () => {
    const dns = new TestDns();
    dns.set('region.example', ['10.0.0.1', '10.0.0.2']);
    const { d } = discovery('region.example,region.example:8443,region.example/10.0.0.1,10.0.0.2', dns);
    const list = await d.start();
    expect(dns.calls).toEqual(['region.example']);
    expect(list.map((e) => [e.id, e.target.spec])).toEqual([
      ['10.0.0.1:443', 'region.example'],
      ['10.0.0.2:443', 'region.example'],
      ['10.0.0.1:8443', 'region.example:8443'],
      ['10.0.0.2:8443', 'region.example:8443'],
    ]);
  });

  it('the exclude hook drops endpoints before they are published (a throwing hook keeps the endpoint)', async () => {
    const dns = new TestDns();
    dns.set('region.example', ['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    const { d, logger } = discovery('region.example', dns, {
      exclude: (e) => {
        if (e.address === '10.0.0.3') throw new Error('hook bug');
        return e.address === '10.0.0.1';
      },
    });
    expect(ids(await d.start())).toEqual(['10.0.0.2:443', '10.0.0.3:443']);
    expect(logger.entries.find((e) => e.msg.startsWith('mesh endpoint exclude hook failed'))?.fields).toMatchObject({ id: '10.0.0.3:443' });
  });

  it('after stop() an answer still in flight publishes nothing', async () => {
    let asked!: (answer: (a: LookupAddress[]) => void) => void;
    const lookupCalled = new Promise<(a: LookupAddress[]) => void>((resolve) => {
      asked = resolve;
    });
    const { d, changes } = discovery('region.example', new TestDns(), {
      lookup: () => new Promise<LookupAddress[]>((resolve) => asked(resolve)),
    });
    const started = d.start();
    const answer = await lookupCalled;
    d.stop();
    answer([{ address: '10.0.0.1', family: 4 }]);
    expect(await started).toEqual([]);
    expect(changes).toEqual([]);
    expect(d.stats()[0]).toMatchObject({ resolutions: 0, endpoints: 0 });
  });

  it('refuses an interval under 1 s or beyond a timer, a bad timeout and a bad default port', () => {
    const targets = parseMeshWith('a.example');
    expect(() => new MeshDiscovery({ targets, defaultPort: 443, intervalMs: 999 })).toThrow(
      new ConfigError('mesh discovery: re-resolve interval 999 ms is below the minimum of 1000 ms'),
    );
    expect(() => new MeshDiscovery({ targets, defaultPort: 443, intervalMs: Infinity })).toThrow(/re-resolve interval Infinity ms is above the maximum of 2147483647 ms/);
    expect(() => new MeshDiscovery({ targets, defaultPort: 443, lookupTimeoutMs: 0 })).toThrow(/lookup timeout 0 ms must be from 1 to 2147483647 ms/);
    expect(() => new MeshDiscovery({ targets, defaultPort: 443, lookupTimeoutMs: Number.NaN })).toThrow(/lookup timeout NaN ms/);
    expect(() => new MeshDiscovery({ targets, defaultPort: 0 })).toThrow(/default port 0 is not a port/);
  });
});

describe('MeshDiscovery: any sequence of answers (model)', () => {
  const pool = ['10.0.0.1', '10.0.0.2', '10.0.0.3', 'fd00::1'];
  const answer = fc.oneof(
    { weight: 3, arbitrary: fc.subarray(pool, { minLength: 1 }).chain((a) => fc.shuffledSubarray(a, { minLength: a.length })) },
    { weight: 1, arbitrary: fc.constantFrom<{ code: string } | string[]>({ code: 'ENOTFOUND' }, { code: 'EAI_AGAIN' }, []) },
  );

  it('publishes the union of each name\'s last good answer, with a change exactly when that set changes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(answer, answer), { minLength: 1, maxLength: 12 }), async (steps) => {
        const dns = new TestDns();
        const { d, changes } = discovery('a.example,b.example:8443,10.0.0.9', dns);
        const lastGood: Record<string, string[]> = { 'a.example': [], 'b.example': [] };
        let publishedIds = new Set<string>();
        let expectedChanges = 0;
        for (const [i, [a, b]] of steps.entries()) {
          dns.set('a.example', a);
          dns.set('b.example', b);
          if (i === 0) await d.start();
          else await d.refresh();
          if (Array.isArray(a) && a.length > 0) lastGood['a.example'] = a;
          if (Array.isArray(b) && b.length > 0) lastGood['b.example'] = b;
          const want = new Set([
            ...lastGood['a.example']!.map((x) => (x.includes(':') ? `[${x}]:443` : `${x}:443`)),
            ...lastGood['b.example']!.map((x) => (x.includes(':') ? `[${x}]:8443` : `${x}:8443`)),
            '10.0.0.9:443',
          ]);
          const differs = want.size !== publishedIds.size || [...want].some((x) => !publishedIds.has(x));
          if (differs) expectedChanges++;
          publishedIds = want;
          expect(new Set(ids(d.current()))).toEqual(want);
          expect(changes).toHaveLength(expectedChanges);
        }
        const failuresA = steps.filter(([a]) => !Array.isArray(a) || a.length === 0).length;
        expect(d.stats()[0]).toMatchObject({ resolutions: steps.length - failuresA, failures: failuresA });
        d.stop();
      }),
      { numRuns: 150 },
    );
  });
});

describe('MeshDiscovery: the system resolver', () => {
  it('resolves localhost to loopback addresses with the default lookup', async () => {
    const d = new MeshDiscovery({ targets: parseMeshWith('localhost:8443'), defaultPort: 443, strict: true });
    running.push(d);
    const list = await d.start();
    expect(list.length).toBeGreaterThan(0);
    for (const e of list) {
      expect(isLoopbackAddress(e.address), e.address).toBe(true);
      expect(e.host).toBe('localhost');
      expect(e.port).toBe(8443);
    }
    expect(d.stats()[0]).toMatchObject({ kind: 'dns', resolutions: 1, failures: 0 });
  });
});

/**
 * Discovery in a child process whose /etc/hosts is a file this test edits (a private mount namespace:
 * the machine's /etc/hosts is untouched). getaddrinfo reads the file on every lookup, so this drives
 * the real system-resolver path through records added, removed and gone.
 */
describe('MeshDiscovery: the system resolver with changing records', () => {
  const isRoot = process.getuid?.() === 0;
  let child: ChildProcess | undefined;
  let dir: string | undefined;
  afterEach(() => {
    child?.kill('SIGKILL');
    child = undefined;
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it.skipIf(!isRoot)('follows /etc/hosts: a record added and removed, then the name gone (last good kept, logged)', async () => {
    dir = mkdtempSync(join(tmpdir(), 'mesh-hosts-'));
    const hosts = join(dir, 'hosts');
    const zone = (addrs: string[]) => writeFileSync(hosts, `127.0.0.1 localhost\n${addrs.map((a) => `${a} region.mesh.test\n`).join('')}`);
    zone(['10.9.0.1', '10.9.0.2']);
    const code = `
      const { MeshDiscovery } = await import(${JSON.stringify(`${ROOT}/src/lib/mesh/discovery.ts`)});
      const { parseMeshWith } = await import(${JSON.stringify(`${ROOT}/src/lib/mesh/targets.ts`)});
      const { JsonLogger } = await import(${JSON.stringify(`${ROOT}/src/lib/util/logger.ts`)});
      const d = new MeshDiscovery({ targets: parseMeshWith('region.mesh.test'), defaultPort: 443, intervalMs: 1000, logger: new JsonLogger(process.stdout) });
      d.on('change', (list) => process.stdout.write(JSON.stringify({ change: list.map((e) => e.id).sort() }) + '\\n'));
      await d.start();
      process.stdin.on('end', () => process.exit(0)).resume();`;
    // The bind mount is private to the child's mount namespace and goes away with it.
    child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hosts, NODE, '--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: child.stdout! });
    const seen: Array<Record<string, unknown>> = [];
    const waiters: Array<{ pred: (m: Record<string, unknown>) => boolean; resolve: (m: Record<string, unknown>) => void }> = [];
    lines.on('line', (line) => {
      const m = JSON.parse(line) as Record<string, unknown>;
      seen.push(m);
      for (const w of waiters.splice(0)) if (w.pred(m)) w.resolve(m);
      else waiters.push(w);
    });
    const exited = once(child, 'exit').then(([c]) => {
      throw new Error(`discovery child exited ${String(c)}: ${stderr}`);
    });
    const next = (pred: (m: Record<string, unknown>) => boolean) =>
      Promise.race([exited, new Promise<Record<string, unknown>>((resolve) => waiters.push({ pred, resolve }))]);
    const change = (want: string[]) => next((m) => JSON.stringify(m.change) === JSON.stringify(want));

    await change(['10.9.0.1:443', '10.9.0.2:443']);
    zone(['10.9.0.1', '10.9.0.2', '10.9.0.3']);
    await change(['10.9.0.1:443', '10.9.0.2:443', '10.9.0.3:443']);
    zone(['10.9.0.3']);
    await change(['10.9.0.3:443']);
    zone([]);
    const warn = await next((m) => m.msg === 'mesh name does not resolve');
    expect(warn).toMatchObject({ level: 'warn', name: 'region.mesh.test', keeping: 1 });
    expect(typeof warn.code).toBe('string');
    // The failure kept the last good endpoint: no change (to an empty list) between it and the recovery.
    zone(['10.9.0.3']);
    await next((m) => m.msg === 'mesh name resolves again');
    expect(seen.filter((m) => m.change !== undefined).map((m) => m.change)).toEqual([
      ['10.9.0.1:443', '10.9.0.2:443'],
      ['10.9.0.1:443', '10.9.0.2:443', '10.9.0.3:443'],
      ['10.9.0.3:443'],
    ]);
    child.stdin!.end();
  }, 20_000);
});
