/**
 * `npm run accounting -- --duration 60s`: the packet-accounting harness (src/lib/loadgen/accounting)
 * against its own `derp serve` child process; prints the table and exits 1 when the equation fails.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, describeError } from '../src/lib/errors.js';
import { parseBenchDuration } from '../src/lib/loadgen/index.js';
import { ServeNode, renderAccounts, runAccounting } from '../src/lib/loadgen/accounting/index.js';
import { REPO_ROOT } from './procs.js';

const USAGE = `npm run accounting -- [options]
  --duration <d>   mixed-load time (default 10s; e.g. 60s, 2m)
  --restarts <n>   relay restarts under load, evenly spaced (default 1 per 10 s, at least 1)
  --rate <pps>     packets/s of the ordinary senders together (default 3000)
  --json           the report as JSON`;

/** Exit codes: 1 = the equation failed, 2 = bad options (oclif's usage-error convention). */
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

function positiveInt(flag: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${flag}: expected a whole number ≥ 1, got ${JSON.stringify(v)}`, { context: { flag } });
  return n;
}

async function main(): Promise<number> {
  let values: { duration?: string; restarts?: string; rate?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: { duration: { type: 'string' }, restarts: { type: 'string' }, rate: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } },
    }));
  } catch (err) {
    throw new ConfigError(describeError(err), { cause: err });
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const durationMs = values.duration === undefined ? 10_000 : parseBenchDuration('--duration', values.duration);
  const restarts = positiveInt('--restarts', values.restarts, Math.max(1, Math.round(durationMs / 10_000)));
  const rate = positiveInt('--rate', values.rate, 3000);
  const pinned = join(REPO_ROOT, 'node_modules/.bin/node');
  const node = await ServeNode.start({ name: 'node-1', node: existsSync(pinned) ? pinned : process.execPath, entry: join(REPO_ROOT, 'bin/run.js'), cwd: REPO_ROOT });
  try {
    const report = await runAccounting({ nodes: [node], durationMs, restarts, rate, onPhase: (t) => process.stderr.write(`· ${t}\n`) });
    if (values.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else {
      process.stdout.write(`packet accounting, ${report.date}, ${(report.durationMs / 1000).toFixed(1)} s\n${renderAccounts([...report.perNode, ...(report.perNode.length > 1 ? [report.total] : [])])}\n`);
      for (const p of report.problems) process.stdout.write(`FAIL ${p}\n`);
      for (const s of report.samples) process.stdout.write(`  e.g. ${s}\n`);
    }
    return report.ok ? 0 : EXIT_FAILED;
  } finally {
    await node.stop().catch(() => node.kill());
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${describeError(err)}\n`);
    if (err instanceof ConfigError) process.stderr.write(`${USAGE}\n`);
    process.exit(err instanceof ConfigError ? EXIT_USAGE : EXIT_FAILED);
  },
);
