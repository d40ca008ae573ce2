/** Command-line options of `npm run soak`. */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from '../src/lib/errors.js';
import { REPO_ROOT } from '../bench/procs.js';

export const USAGE = `npm run soak -- [options]
  --duration <d>      how long the load runs: seconds, or e.g. 90s, 10m, 2h (default 10m)
  --warmup <d>        not fitted at the start (default 20 % of the run, at least 30 s, at most half)
  --churn <n>/min     connect + handshake + close cycles a minute (default 3000/min; 0 = none)
  --pairs <n>         steady-load sender/receiver pairs (default 8)
  --rate <pkt/s>      steady-load packets per second, all pairs together (default 2000)
  --size <bytes>      steady-load packet size (default 1024)
  --no-hostile        without the slowloris, absent-key sender and non-reader
  --out <dir>         where soak-<duration>.{csv,svg,json} go (default bench/results/)
  --url <derp url>    soak an already running server instead of starting derp serve --dev
  --pid <pid>         with --url: its pid (RSS and descriptors come from /proc/<pid>)
  --metrics-url <u>   with --url: its /metrics, for heap, event-loop delay and connections
  --json              print the verdict as JSON on stdout
Exit status: 0 pass, 1 the verdict failed (each failure is printed), 2 bad options.`;

export interface SoakOptions {
  durationS: number;
  /** As typed (normalised), for file names and the title: "10m", "60s". */
  durationLabel: string;
  warmupS: number | undefined;
  churnPerMin: number;
  pairs: number;
  rate: number;
  size: number;
  hostile: boolean;
  outDir: string;
  url: string | undefined;
  pid: number | undefined;
  metricsUrl: string | undefined;
  json: boolean;
  command: string;
}

const UNIT_S: Record<string, number> = { s: 1, m: 60, h: 3600 };
/** A soak longer than a day is a deployment, not a run. */
const MAX_DURATION_S = 24 * 3600;

export function parseSoakDuration(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h)?$/.exec(text.trim());
  const s = m ? Number(m[1]) * UNIT_S[m[2] ?? 's']! : NaN;
  if (!Number.isFinite(s) || s <= 0) throw new ConfigError(`${flag}: bad duration ${JSON.stringify(text)} (seconds, or e.g. 90s, 10m, 2h)`, { context: { flag } });
  if (s > MAX_DURATION_S) throw new ConfigError(`${flag} ${text} is over the ${MAX_DURATION_S / 3600} h maximum`, { context: { flag } });
  return s;
}

function int(flag: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(`${flag}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`, { context: { flag } });
  return n;
}

export function parseSoakOptions(args: string[]): SoakOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        duration: { type: 'string' },
        warmup: { type: 'string' },
        churn: { type: 'string' },
        pairs: { type: 'string' },
        rate: { type: 'string' },
        size: { type: 'string' },
        'no-hostile': { type: 'boolean' },
        out: { type: 'string' },
        url: { type: 'string' },
        pid: { type: 'string' },
        'metrics-url': { type: 'string' },
        json: { type: 'boolean' },
      },
    }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n${USAGE}`);
  }
  const durationText = values.duration ?? '10m';
  const durationS = parseSoakDuration('--duration', durationText);
  const warmupS = values.warmup === undefined ? undefined : parseSoakDuration('--warmup', values.warmup);
  if (warmupS !== undefined && warmupS >= durationS) throw new ConfigError(`--warmup ${values.warmup} leaves nothing of the ${durationText} run to fit`);
  const churnText = values.churn ?? '3000/min';
  const cm = /^(\d+)(?:\/min)?$/.exec(churnText.trim());
  if (!cm) throw new ConfigError(`--churn: expected cycles a minute, e.g. 3000/min, got ${JSON.stringify(churnText)}`, { context: { flag: '--churn' } });
  if ((values.pid !== undefined || values['metrics-url'] !== undefined) && values.url === undefined) throw new ConfigError('--pid and --metrics-url go with --url');
  if (values.url !== undefined && values.pid === undefined) throw new ConfigError('--url needs --pid: RSS and descriptors are read from /proc/<pid>');
  return {
    durationS,
    durationLabel: durationText.trim().replace(/^(\d+(?:\.\d+)?)$/, '$1s'),
    warmupS,
    churnPerMin: Number(cm[1]),
    pairs: int('--pairs', values.pairs, 8, 1),
    rate: int('--rate', values.rate, 2000, 1),
    size: int('--size', values.size, 1024, 12),
    hostile: !values['no-hostile'],
    outDir: values.out ?? join(REPO_ROOT, 'bench', 'results'),
    url: values.url,
    pid: values.pid === undefined ? undefined : int('--pid', values.pid, 0, 1),
    metricsUrl: values['metrics-url'],
    json: values.json ?? false,
    command: ['npm run soak --', ...args].join(' '),
  };
}
