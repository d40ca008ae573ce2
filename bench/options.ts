/** Command-line options of `npm run bench`. */
import { availableParallelism, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { ConfigError } from '../src/lib/errors.js';
import { THROUGHPUT_SCENARIOS } from './reference.js';
import type { Timing } from '../src/lib/loadgen/index.js';

export const USAGE = `npm run bench -- [options]
  --quick                  short runs (0.5 s warm-up, 1.5 s measured, 2,000 idle clients)
  --duration <s>           measured seconds per throughput/handshake run (default 5)
  --warmup <s>             warm-up seconds before each throughput measurement (default 3)
  --workers <n>            generator processes (default: cores − 1, at least 1, at most 4)
  --relay-workers <n>      the scaling stage's N: derp serve --workers 1, then --workers N (default: the
                           number of CPUs, at least 2)
  --url <derp url>         load an already running DERP server instead of starting derp serve
  --pid <pid>              with --url: that server's pid, for CPU and RSS figures
  --compare-url <derp url> also run the handshake scenario against this server (e.g. Tailscale's derper)
                           right after ours, and print ours/theirs
  --compare-pid <pid>      with --compare-url: that server's pid, for its CPU per handshake
  --flood-seconds <s>      seconds per flood phase (default 5; 2 with --quick)
  --flood-warmup <s>       seconds of handshakes before the canary starts, as on a relay that has run a
                           while (default 0: the relay as it starts; derp serve warms itself, see
                           --warm-up-handshakes)
  --flood-placement <p>    split (default): the relay's event loop and the canary's pinned to one CPU, the
                           attacker and both processes' helper threads to the others, as an attacker's
                           CPU is elsewhere on the internet; shared: no pinning
                           (the default with --url: the bench does not pin a server it did not start)
  --flood-attacks <list>   flood subset, in the bench's order: any of connect,slowloris,handshake,blast,absent
  --flood-rounds <n>       flood rounds, each with a fresh relay and its own quiet phase (default 1, at most
                           20); past one, a table of every round's p99 ratio, judged on their median
  --flood-decoy            a control: the attacks go to a second relay (same arguments, pinned with the
                           attacker) while the measured relay carries the canary alone, so what is left of
                           the canary's tail is the machine's, not the relay's
  --scenarios <list>       throughput subset, e.g. 8x1200,8x64
  --idle <n>               idle plain-TCP clients (default 10000)
  --idle-tls <n>           idle TLS clients (default 2000)
  --idle-ws <n>            idle WebSocket clients (default 2000)
  --handshake-concurrency <n>  concurrent handshake loops (default 64)
  --stun-sockets <n>       UDP client sockets of the STUN load (default 64)
  --stun-window <n>        STUN requests in flight per socket (default 4, at most 32)
  --netcheck-runs <n>      netchecks over the 25 loopback regions (default 5)
  --skip <list>            any of throughput,baseline,halfload,handshakes,breakdown,flood,idle,tls,ws,stun,stun-multi,netcheck,metrics,scaling
                           (metrics: the throughput comparison with /metrics on and scraped every second)
                           (baseline also skips the bare STUN responder)
  --server-arg <arg>       extra argument for derp serve (repeatable; e.g. the DDoS limits, for the flood)
  --json                   machine-readable output (npm run -s bench -- --json for JSON only)
Env: BENCH_SERVER_NODE_ARGS / BENCH_WORKER_NODE_ARGS pass node flags (--cpu-prof, --trace-gc) to relay / generator.`;

const SKIPPABLE = ['throughput', 'baseline', 'halfload', 'idle', 'tls', 'ws', 'handshakes', 'breakdown', 'flood', 'stun', 'stun-multi', 'netcheck', 'metrics', 'scaling'] as const;
export type Skippable = (typeof SKIPPABLE)[number];

export interface BenchOptions {
  quick: boolean;
  timing: Timing;
  workers: number;
  /** N of the scaling stage (derp serve --workers N against --workers 1). */
  relayWorkers: number;
  url: string | undefined;
  pid: number | undefined;
  compareUrl: string | undefined;
  comparePid: number | undefined;
  floodSeconds: number;
  /** --flood-warmup: seconds of handshakes against the relay before the canary starts (0: none). */
  floodWarmupSeconds: number;
  /** split: the relay's event loop and the canary on one CPU, the attacker on the others (taskset); shared: no pinning. */
  floodPlacement: 'split' | 'shared';
  /** The attacks to run (a subset of FLOOD_ATTACKS, in its order). */
  floodAttacks: FloodAttack[];
  /** Flood rounds (--flood-rounds): the p99 ratios move 2-3x from run to run on a small machine. */
  floodRounds: number;
  /** --flood-decoy: attack a second relay, not the one carrying the canary (a control for the machine's own noise). */
  floodDecoy: boolean;
  scenarios: typeof THROUGHPUT_SCENARIOS;
  idle: { tcp: number; tls: number; ws: number };
  handshakeConcurrency: number;
  stun: { sockets: number; window: number };
  netcheckRuns: number;
  skip: Set<Skippable>;
  serverArgs: string[];
  json: boolean;
  /** The command line as a user would retype it. */
  command: string;
}

/**
 * STUN load shape. 64 × 4 = 256 requests in flight: enough to keep a server busy, and still within what
 * its default receive buffer (net.core.rmem_default, 208 KiB ≈ 270 small datagrams) holds without drops.
 */
const DEFAULT_STUN_SOCKETS = 64;
const DEFAULT_STUN_WINDOW = 4;
/** src/lib/loadgen/stun-load.ts's ring of pre-built requests is twice this. */
const MAX_STUN_WINDOW = 32;

function num(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new ConfigError(`--${name} must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}

/** Each round is a full flood (about 40 s at the default phase length): bounded. */
export const MAX_FLOOD_ROUNDS = 20;

function roundsOf(v: string | undefined): number {
  const n = int('flood-rounds', v, 1, 1);
  if (n > MAX_FLOOD_ROUNDS) throw new ConfigError(`--flood-rounds must be at most ${MAX_FLOOD_ROUNDS}, got ${n}`);
  return n;
}

/** Bounded like the phases: the warm-up is a handshake attack of its own. */
export const MAX_FLOOD_WARMUP_SECONDS = 60;

function floodWarmupOf(v: string | undefined, dflt: number): number {
  const n = num('flood-warmup', v, dflt);
  if (n > MAX_FLOOD_WARMUP_SECONDS) throw new ConfigError(`--flood-warmup must be at most ${MAX_FLOOD_WARMUP_SECONDS} seconds, got ${n}`);
  return n;
}

function placementOf(v: string | undefined, dflt: 'split' | 'shared'): 'split' | 'shared' {
  if (v === undefined) return dflt;
  if (v === 'split' || v === 'shared') return v;
  throw new ConfigError(`--flood-placement must be split or shared, got ${JSON.stringify(v)}`);
}

/** The flood's attacks, in the order the bench runs them. */
export const FLOOD_ATTACKS = ['connect', 'slowloris', 'handshake', 'blast', 'absent'] as const;
export type FloodAttack = (typeof FLOOD_ATTACKS)[number];

function attacksOf(v: string | undefined): FloodAttack[] {
  if (v === undefined) return [...FLOOD_ATTACKS];
  const asked = v.split(',').map((a) => a.trim()).filter(Boolean);
  for (const a of asked) if (!(FLOOD_ATTACKS as readonly string[]).includes(a)) throw new ConfigError(`--flood-attacks: unknown attack "${a}" (known: ${FLOOD_ATTACKS.join(', ')})`);
  if (asked.length === 0) throw new ConfigError('--flood-attacks: name at least one attack (or --skip flood)');
  return FLOOD_ATTACKS.filter((a) => asked.includes(a));
}

function int(name: string, v: string | undefined, dflt: number, min = 0): number {
  const n = Math.floor(num(name, v, dflt));
  if (n < min) throw new ConfigError(`--${name} must be at least ${min}`);
  return n;
}

export function parseOptions(args: string[]): BenchOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        quick: { type: 'boolean', default: false },
        duration: { type: 'string' },
        warmup: { type: 'string' },
        workers: { type: 'string' },
        'relay-workers': { type: 'string' },
        url: { type: 'string' },
        pid: { type: 'string' },
        'compare-url': { type: 'string' },
        'compare-pid': { type: 'string' },
        'flood-seconds': { type: 'string' },
        'flood-warmup': { type: 'string' },
        'flood-rounds': { type: 'string' },
        'flood-placement': { type: 'string' },
        'flood-attacks': { type: 'string' },
        'flood-decoy': { type: 'boolean', default: false },
        scenarios: { type: 'string' },
        idle: { type: 'string' },
        'idle-tls': { type: 'string' },
        'idle-ws': { type: 'string' },
        'handshake-concurrency': { type: 'string' },
        'stun-sockets': { type: 'string' },
        'stun-window': { type: 'string' },
        'netcheck-runs': { type: 'string' },
        skip: { type: 'string', default: '' },
        'server-arg': { type: 'string', multiple: true, default: [] },
        json: { type: 'boolean', default: false },
        // Answered by index.ts before parsing; declared so strict parsing accepts it.
        help: { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (cause) {
    throw new ConfigError(`${(cause as Error).message}\n${USAGE}`, { cause });
  }
  const quick = values.quick;
  for (const name of ['url', 'compare-url'] as const) {
    const v = values[name];
    if (v === undefined) continue;
    try {
      new URL(v);
    } catch (cause) {
      throw new ConfigError(`--${name} ${JSON.stringify(v)} is not a URL`, { cause });
    }
  }
  if (values['flood-decoy'] && values.url !== undefined) throw new ConfigError('--flood-decoy needs a relay the bench starts (not --url)');
  if (values.pid !== undefined && values.url === undefined) throw new ConfigError('--pid only makes sense with --url');
  if (values['compare-pid'] !== undefined && values['compare-url'] === undefined) throw new ConfigError('--compare-pid only makes sense with --compare-url');
  const skip = new Set<Skippable>();
  for (const s of values.skip.split(',').filter(Boolean)) {
    if (!(SKIPPABLE as readonly string[]).includes(s)) throw new ConfigError(`--skip: unknown part "${s}" (known: ${SKIPPABLE.join(', ')})`);
    skip.add(s as Skippable);
  }
  const scenarios = values.scenarios
    ? values.scenarios.split(',').map((name) => {
        const sc = THROUGHPUT_SCENARIOS.find((x) => `${x.pairs}x${x.size}` === name.trim());
        if (!sc) throw new ConfigError(`--scenarios: unknown "${name}" (known: ${THROUGHPUT_SCENARIOS.map((x) => `${x.pairs}x${x.size}`).join(', ')})`);
        return sc;
      })
    : THROUGHPUT_SCENARIOS;
  const quoted = args.map((a) => (/^[\w./:@=,-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`));
  return {
    quick,
    timing: {
      warmupMs: num('warmup', values.warmup, quick ? 0.5 : 3) * 1000,
      durationMs: num('duration', values.duration, quick ? 1.5 : 5) * 1000,
    },
    // Every core but the relay's, at most 4: on 2 cores one worker, which measured faster there than
    // two (three busy processes on two cores add scheduler latency to every figure).
    workers: int('workers', values.workers, Math.min(4, Math.max(1, cpus().length - 1)), 1),
    relayWorkers: int('relay-workers', values['relay-workers'], Math.max(2, availableParallelism()), 2),
    url: values.url,
    pid: values.pid === undefined ? undefined : int('pid', values.pid, 0, 1),
    compareUrl: values['compare-url'],
    comparePid: values['compare-pid'] === undefined ? undefined : int('compare-pid', values['compare-pid'], 0, 1),
    floodSeconds: num('flood-seconds', values['flood-seconds'], quick ? 2 : 5),
    floodWarmupSeconds: floodWarmupOf(values['flood-warmup'], 0),
    floodPlacement: placementOf(values['flood-placement'], values.url === undefined ? 'split' : 'shared'),
    floodAttacks: attacksOf(values['flood-attacks']),
    floodRounds: roundsOf(values['flood-rounds']),
    floodDecoy: values['flood-decoy'],
    scenarios,
    idle: {
      tcp: int('idle', values.idle, quick ? 2000 : 10_000),
      tls: int('idle-tls', values['idle-tls'], quick ? 300 : 2000),
      ws: int('idle-ws', values['idle-ws'], quick ? 300 : 2000),
    },
    handshakeConcurrency: int('handshake-concurrency', values['handshake-concurrency'], 64, 1),
    stun: {
      sockets: int('stun-sockets', values['stun-sockets'], DEFAULT_STUN_SOCKETS, 1),
      window: Math.min(MAX_STUN_WINDOW, int('stun-window', values['stun-window'], DEFAULT_STUN_WINDOW, 1)),
    },
    netcheckRuns: int('netcheck-runs', values['netcheck-runs'], quick ? 3 : 5, 1),
    skip,
    serverArgs: values['server-arg'],
    json: values.json,
    command: process.env.npm_lifecycle_event === 'bench' ? `npm run bench${quoted.length ? ` -- ${quoted.join(' ')}` : ''}` : `npx tsx bench/index.ts ${quoted.join(' ')}`.trim(),
  };
}
