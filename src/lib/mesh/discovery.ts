/**
 * Mesh discovery: turns `--mesh-with` targets into the endpoints (one per node) to keep links to. A DNS
 * name stands for every address it resolves to (a Kubernetes headless service, a round-robin record) and
 * is re-resolved periodically; literals need no DNS. A failed lookup never removes endpoints: a DNS blip
 * must not tear the mesh down, so a target keeps its last good answer until a lookup returns another.
 */
import { promises as dnsPromises, type LookupAddress } from 'node:dns';
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { ConfigError, TimeoutError, describeError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { MeshEndpoint, MeshLookup, MeshTarget } from './types.js';

/** How often names are looked up again. Short enough that a new pod joins within half a minute. */
export const DEFAULT_MESH_RESOLVE_INTERVAL_MS = 30_000;
/** Below this a resolver (or a cluster's CoreDNS) is hammered for no gain. */
export const MIN_MESH_RESOLVE_INTERVAL_MS = 1_000;
/** A lookup slower than this counts as failed (the system resolver's own retries can take far longer). */
export const DEFAULT_MESH_LOOKUP_TIMEOUT_MS = 5_000;
/** setTimeout's largest delay (a signed 32-bit count of ms); Node fires longer ones after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The code recorded for a lookup that hit the timeout (c-ares' name for it, `dns.TIMEOUT`). */
export const LOOKUP_TIMEOUT_CODE = 'ETIMEOUT';
/** The code recorded for a lookup that answered with no usable address. */
export const LOOKUP_EMPTY_CODE = 'ENODATA';

/** The system resolver (getaddrinfo: /etc/hosts, then DNS), both families, in the resolver's order. */
export const defaultMeshLookup: MeshLookup = (hostname) => dnsPromises.lookup(hostname, { all: true, order: 'verbatim' });

export interface MeshDiscoveryOptions {
  targets: readonly MeshTarget[];
  /** The node's own DERP port: a target without a port is dialed there. */
  defaultPort: number;
  lookup?: MeshLookup;
  /** Default DEFAULT_MESH_RESOLVE_INTERVAL_MS; at least MIN_MESH_RESOLVE_INTERVAL_MS. */
  intervalMs?: number;
  /** Default DEFAULT_MESH_LOOKUP_TIMEOUT_MS. */
  lookupTimeoutMs?: number;
  logger?: Logger;
  /** start() rejects when a name does not resolve, instead of logging it and retrying. */
  strict?: boolean;
  /** Where the targets came from, for the strict error (default `--mesh-with`, as parseMeshWith's). */
  source?: string;
  /** Drops endpoints (e.g. the node's own addresses) before they are published. */
  exclude?: (endpoint: MeshEndpoint) => boolean;
}

/** Per target, for metrics and status pages. */
export interface MeshTargetStats {
  spec: string;
  /** `literal`: an IP (host or dial host), never looked up. */
  kind: 'literal' | 'dns';
  /** Lookups that answered with at least one address. */
  resolutions: number;
  /** Lookups that failed (resolver error, timeout, no address). */
  failures: number;
  /** Failures since the last success (0 when healthy). */
  consecutiveFailures: number;
  /** Endpoints this target contributes now (its last good answer). */
  endpoints: number;
  /** The resolver's error code of the current failure streak (ENOTFOUND, EAI_AGAIN, ETIMEOUT, …). */
  lastError?: string;
}

export interface MeshDiscoveryEvents {
  /** The full endpoint list, whenever the set of endpoint ids changed. */
  change: [MeshEndpoint[]];
}

/** A name did not resolve at start and `strict` was set: which entry, which name, the resolver's code. */
export class MeshDiscoveryError extends ConfigError {
  constructor(
    readonly source: string,
    readonly entry: number,
    readonly spec: string,
    readonly host: string,
    readonly resolverCode: string,
    options: { cause?: unknown } = {},
  ) {
    super(`${source} entry ${entry} "${spec}": ${host} does not resolve (${resolverCode})`, {
      ...options,
      context: { source, entry, spec, host, resolverCode },
    });
  }
}

interface TargetState {
  target: MeshTarget;
  /** 1-based, as in parseMeshWith's messages. */
  entry: number;
  port: number;
  literal: boolean;
  endpoints: MeshEndpoint[];
  resolutions: number;
  failures: number;
  consecutiveFailures: number;
  lastError: string | undefined;
}

/**
 * The name whose addresses are the nodes: the dial host when there is one (e.g. a headless Service
 * behind a public certificate name: `derp.example.com/derp-mesh.ns.svc.cluster.local`), else the host.
 * An IP literal is the node itself.
 */
function lookupName(t: MeshTarget): string {
  return t.dialHost ?? t.host;
}

/** `host:port`, with brackets around an IPv6 address (as net.JoinHostPort). */
export function endpointId(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

function endpointFor(target: MeshTarget, address: string, port: number): MeshEndpoint {
  return { id: endpointId(address, port), host: target.host, address, port, target };
}

function errorCode(err: unknown): string {
  if (err instanceof TimeoutError) return LOOKUP_TIMEOUT_CODE;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code !== '') return code;
  return err instanceof Error ? err.name : 'EUNKNOWN';
}

/** An IP literal from a resolver answer, IPv4-mapped IPv6 as plain IPv4 (one node, one id); else undefined. */
function unmapped(address: unknown): string | undefined {
  if (typeof address !== 'string') return undefined;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (m && isIP(m[1]!) === 4) return m[1]!;
  return isIP(address) === 0 ? undefined : address.toLowerCase();
}

/** A log field listing addresses; absent rather than empty. */
function joinOrUndefined(items: readonly string[]): string | undefined {
  return items.length === 0 ? undefined : items.join(',');
}

function sameIds(a: readonly MeshEndpoint[], b: readonly MeshEndpoint[]): boolean {
  if (a.length !== b.length) return false;
  const ids = new Set(a.map((e) => e.id));
  return b.every((e) => ids.has(e.id));
}

export class MeshDiscovery extends EventEmitter<MeshDiscoveryEvents> {
  private readonly states: TargetState[];
  private readonly lookup: MeshLookup;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly logger: Logger;
  private readonly strict: boolean;
  private readonly source: string;
  private readonly exclude: ((endpoint: MeshEndpoint) => boolean) | undefined;
  private published: MeshEndpoint[] = [];
  private inFlight: Promise<void> | undefined;
  /** Lookups not yet answered, by name (including ones a round already gave up on). */
  private readonly pendingLookups = new Map<string, Promise<LookupAddress[]>>();
  private timer: NodeJS.Timeout | undefined;
  private startPromise: Promise<MeshEndpoint[]> | undefined;
  private stopped = false;
  /** start() finished its first round (and, when strict, every name resolved). */
  private running = false;

  constructor(opts: MeshDiscoveryOptions) {
    super();
    const port = opts.defaultPort;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`mesh discovery: default port ${port} is not a port (1 to 65535)`);
    this.intervalMs = opts.intervalMs ?? DEFAULT_MESH_RESOLVE_INTERVAL_MS;
    if (!(this.intervalMs >= MIN_MESH_RESOLVE_INTERVAL_MS)) {
      throw new ConfigError(`mesh discovery: re-resolve interval ${this.intervalMs} ms is below the minimum of ${MIN_MESH_RESOLVE_INTERVAL_MS} ms`);
    }
    if (this.intervalMs > MAX_TIMER_MS) throw new ConfigError(`mesh discovery: re-resolve interval ${this.intervalMs} ms is above the maximum of ${MAX_TIMER_MS} ms`);
    this.timeoutMs = opts.lookupTimeoutMs ?? DEFAULT_MESH_LOOKUP_TIMEOUT_MS;
    if (!(this.timeoutMs > 0 && this.timeoutMs <= MAX_TIMER_MS)) throw new ConfigError(`mesh discovery: lookup timeout ${this.timeoutMs} ms must be from 1 to ${MAX_TIMER_MS} ms`);
    this.lookup = opts.lookup ?? defaultMeshLookup;
    this.logger = opts.logger ?? silentLogger;
    this.strict = opts.strict ?? false;
    this.source = opts.source ?? '--mesh-with';
    this.exclude = opts.exclude;
    this.states = opts.targets.map((target, i) => {
      const p = target.port ?? port;
      const name = lookupName(target);
      const fixed = isIP(name) !== 0 ? name : undefined;
      return {
        target,
        entry: i + 1,
        port: p,
        literal: fixed !== undefined,
        endpoints: fixed === undefined ? [] : [endpointFor(target, fixed, p)],
        resolutions: 0,
        failures: 0,
        consecutiveFailures: 0,
        lastError: undefined,
      };
    });
  }

  /** The endpoints last published (the same list the last `change` carried). */
  current(): MeshEndpoint[] {
    return [...this.published];
  }

  stats(): MeshTargetStats[] {
    return this.states.map((s) => {
      const out: MeshTargetStats = {
        spec: s.target.spec,
        kind: s.literal ? 'literal' : 'dns',
        resolutions: s.resolutions,
        failures: s.failures,
        consecutiveFailures: s.consecutiveFailures,
        endpoints: s.endpoints.length,
      };
      if (s.lastError !== undefined) out.lastError = s.lastError;
      return out;
    });
  }

  /**
   * The first resolution, then re-resolution every interval. A name that does not resolve is logged and
   * retried (its target contributes nothing until it does), unless `strict`: then this rejects with a
   * MeshDiscoveryError naming the first such entry, and discovery is stopped.
   */
  start(): Promise<MeshEndpoint[]> {
    this.startPromise ??= (async () => {
      await this.round();
      if (this.stopped) return this.current();
      if (this.strict) {
        const bad = this.states.find((s) => !s.literal && s.endpoints.length === 0);
        if (bad) {
          this.stop();
          throw new MeshDiscoveryError(this.source, bad.entry, bad.target.spec, lookupName(bad.target), bad.lastError ?? LOOKUP_EMPTY_CODE);
        }
      }
      this.running = true;
      this.publish();
      this.schedule();
      return this.current();
    })();
    return this.startPromise;
  }

  /**
   * Looks every name up now (e.g. on SIGHUP) and publishes a change if there is one (once started).
   * While a resolution is in flight this waits for that one instead of starting another.
   */
  async refresh(): Promise<void> {
    if (this.stopped) return;
    await this.round();
    if (this.running && !this.stopped) this.publish();
  }

  /** Stops re-resolving; a lookup still in flight is ignored when it answers. No `change` after this. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.stopped) return;
    // Chained timeouts, not an interval: the next round is counted from the end of this one.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.refresh()
        .catch((err: unknown) => this.logger.log('error', 'mesh discovery round failed', { error: describeError(err) }))
        .finally(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref();
  }

  /** One resolution of every name; never two at once. */
  private round(): Promise<void> {
    this.inFlight ??= this.resolveAll().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async resolveAll(): Promise<void> {
    // One lookup per distinct name per round, shared by the entries that name it.
    const answers = new Map<string, Promise<LookupAddress[]>>();
    await Promise.all(
      this.states
        .filter((s) => !s.literal)
        .map(async (s) => {
          const name = lookupName(s.target);
          let answer = answers.get(name);
          if (answer === undefined) {
            answer = this.lookupBounded(name);
            answers.set(name, answer);
          }
          try {
            this.onAnswer(s, await answer);
          } catch (err) {
            this.onFailure(s, err);
          }
        }),
    );
  }

  /**
   * The lookup of `name`, given up on after the timeout. A lookup that timed out is not abandoned: while
   * it is still pending the next round waits on it again instead of starting another, because each
   * pending dns.lookup holds one of libuv's few threadpool threads (shared with fs and crypto).
   */
  private lookupBounded(name: string): Promise<LookupAddress[]> {
    let pending = this.pendingLookups.get(name);
    if (pending === undefined) {
      const p = Promise.resolve().then(() => this.lookup(name));
      pending = p;
      this.pendingLookups.set(name, p);
      const forget = () => {
        if (this.pendingLookups.get(name) === p) this.pendingLookups.delete(name);
      };
      p.then(forget, forget);
    }
    const lookup = pending;
    return new Promise<LookupAddress[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new TimeoutError(`DNS lookup of ${name} took longer than ${this.timeoutMs} ms`, { context: { host: name } })), this.timeoutMs);
      timer.unref();
      lookup.then(
        (addrs) => {
          clearTimeout(timer);
          resolve(addrs);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  private onAnswer(s: TargetState, addrs: readonly LookupAddress[]): void {
    if (this.stopped) return;
    const seen = new Set<string>();
    const endpoints: MeshEndpoint[] = [];
    for (const a of addrs) {
      const address = unmapped(a?.address);
      if (address === undefined || seen.has(address)) continue;
      seen.add(address);
      endpoints.push(endpointFor(s.target, address, s.port));
    }
    if (endpoints.length === 0) {
      const err = Object.assign(new Error(`${lookupName(s.target)} resolved to no usable address`), { code: LOOKUP_EMPTY_CODE });
      throw err;
    }
    const fields = { entry: s.entry, spec: s.target.spec, name: lookupName(s.target) };
    if (s.consecutiveFailures > 0) {
      this.logger.log('info', 'mesh name resolves again', { ...fields, failures: s.consecutiveFailures, addresses: endpoints.length });
    }
    if (s.resolutions > 0 && !sameIds(s.endpoints, endpoints)) {
      const before = new Set(s.endpoints.map((e) => e.address));
      const after = new Set(endpoints.map((e) => e.address));
      this.logger.log('info', 'mesh name addresses changed', {
        ...fields,
        added: joinOrUndefined([...after].filter((a) => !before.has(a))),
        removed: joinOrUndefined([...before].filter((a) => !after.has(a))),
      });
    }
    s.resolutions++;
    s.consecutiveFailures = 0;
    s.lastError = undefined;
    s.endpoints = endpoints;
  }

  private onFailure(s: TargetState, err: unknown): void {
    if (this.stopped) return;
    const code = errorCode(err);
    s.failures++;
    s.consecutiveFailures++;
    // Logged once per failure streak (again only if the reason changes), not every interval.
    if (s.consecutiveFailures === 1 || code !== s.lastError) {
      this.logger.log('warn', 'mesh name does not resolve', {
        entry: s.entry,
        spec: s.target.spec,
        name: lookupName(s.target),
        code,
        error: describeError(err),
        keeping: s.endpoints.length,
      });
    }
    s.lastError = code;
  }

  private publish(): void {
    const seen = new Set<string>();
    const list: MeshEndpoint[] = [];
    for (const s of this.states) {
      for (const e of s.endpoints) {
        if (seen.has(e.id)) continue; // two entries naming the same node: the first keeps it
        seen.add(e.id);
        if (this.excluded(e)) continue;
        list.push(e);
      }
    }
    if (sameIds(this.published, list)) return;
    const before = new Set(this.published.map((e) => e.id));
    const after = new Set(list.map((e) => e.id));
    this.logger.log('info', 'mesh endpoints changed', {
      endpoints: list.length,
      added: joinOrUndefined(list.filter((e) => !before.has(e.id)).map((e) => e.id)),
      removed: joinOrUndefined(this.published.filter((e) => !after.has(e.id)).map((e) => e.id)),
    });
    this.published = list;
    try {
      this.emit('change', this.current());
    } catch (err) {
      this.logger.log('error', 'mesh endpoints change listener failed', { error: describeError(err) });
    }
  }

  private excluded(e: MeshEndpoint): boolean {
    if (this.exclude === undefined) return false;
    try {
      return this.exclude(e);
    } catch (err) {
      this.logger.log('warn', 'mesh endpoint exclude hook failed; endpoint kept', { id: e.id, error: describeError(err) });
      return false;
    }
  }
}
