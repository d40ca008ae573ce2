/**
 * `npm run accounting -- --duration 60s`: the packet-accounting harness (src/lib/loadgen/accounting)
 * against its own `derp serve` child process, or with `--mesh N` a region of N meshed ones; prints the
 * table and exits 1 when the equation fails.
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
  --mesh <n>       n derp serve nodes meshed by list, peers spread over them (default: 1 node, no mesh)
  --restarts <n>   relay restarts (SIGTERM) under load, evenly spaced, each node in turn
                   (default 1 per 10 s alone, 1 per 20 s with --mesh; at least 1)
  --kills <n>      relay kills (SIGKILL, then a new life) under load, interleaved with the restarts
                   (default 0 alone, 1 per 20 s with --mesh, at least 1)
  --rate <pps>     packets/s of the ordinary senders together (default 3000)
  --json           the report as JSON`;

/** Exit codes: 1 = the equation failed, 2 = bad options (oclif's usage-error convention). */
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

function wholeNumber(flag: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(`${flag}: expected a whole number ≥ ${min}, got ${JSON.stringify(v)}`, { context: { flag } });
  return n;
}

async function main(): Promise<number> {
  let values: { duration?: string; mesh?: string; restarts?: string; kills?: string; rate?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        duration: { type: 'string' },
        mesh: { type: 'string' },
        restarts: { type: 'string' },
        kills: { type: 'string' },
        rate: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean' },
      },
    }));
  } catch (err) {
    throw new ConfigError(describeError(err), { cause: err });
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const durationMs = values.duration === undefined ? 10_000 : parseBenchDuration('--duration', values.duration);
  const meshNodes = wholeNumber('--mesh', values.mesh, 1, 1);
  const meshed = meshNodes > 1;
  const restarts = wholeNumber('--restarts', values.restarts, Math.max(1, Math.round(durationMs / (meshed ? 20_000 : 10_000))), 0);
  const kills = wholeNumber('--kills', values.kills, meshed ? Math.max(1, Math.round(durationMs / 20_000)) : 0, 0);
  const rate = wholeNumber('--rate', values.rate, 3000, 1);
  const pinned = join(REPO_ROOT, 'node_modules/.bin/node');
  const serve = { node: existsSync(pinned) ? pinned : process.execPath, entry: join(REPO_ROOT, 'bin/run.js'), cwd: REPO_ROOT };
  const region = meshed ? await ServeNode.startRegion(meshNodes, serve) : null;
  const nodes = region?.nodes ?? [await ServeNode.start({ name: 'node-1', ...serve })];
  try {
    const report = await runAccounting({ nodes, durationMs, restarts, kills, rate, onPhase: (t) => process.stderr.write(`· ${t}\n`) });
    if (values.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else {
      const what = meshed ? `${meshNodes} meshed nodes, ` : '';
      process.stdout.write(`packet accounting, ${what}${report.date}, ${(report.durationMs / 1000).toFixed(1)} s\n${renderAccounts([...report.perNode, ...(report.perNode.length > 1 ? [report.total] : [])])}\n`);
      for (const k of report.kills) {
        const region = meshed ? `, the other nodes delivered ${k.deliveredElsewhere} meanwhile; ${k.movedPeers} of its clients moved to the next node and received ${k.deliveredToMoved} there` : '';
        process.stdout.write(`kill ${k.node}: gone ${(k.downMs / 1000).toFixed(1)} s${region}; clients of its new life received ${k.deliveredAfterRevive}\n`);
      }
      for (const p of report.problems) process.stdout.write(`FAIL ${p}\n`);
      for (const s of report.samples) process.stdout.write(`  e.g. ${s}\n`);
    }
    return report.ok ? 0 : EXIT_FAILED;
  } finally {
    if (region !== null) await region.stop();
    else for (const n of nodes) await n.stop().catch(() => n.kill());
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
