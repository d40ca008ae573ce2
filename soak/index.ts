/**
 * `npm run soak`: hours-in-minutes for the relay. Steady load, connection churn and hostile clients
 * against `derp serve --dev` (run.ts), one reading of the server a second, then the verdict (verdict.ts)
 * and the series as CSV, a chart as SVG and the whole result as JSON under bench/results/ (or --out).
 */
import { ConfigError, describeError } from '../src/lib/errors.js';
import { parseSoakOptions, USAGE, type SoakOptions } from './options.js';
import { summary, writeOutputs } from './outputs.js';
import { runSoak } from './run.js';

const EXIT_FAIL = 1;
const EXIT_USAGE = 2;

async function main(): Promise<number> {
  if (process.argv.includes('--help')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let o: SoakOptions;
  try {
    o = parseSoakOptions(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return EXIT_USAGE;
  }
  const r = await runSoak(o, (msg) => process.stderr.write(`· ${msg}\n`));
  const paths = writeOutputs(r, o.outDir, o.durationLabel);
  process.stderr.write(`${summary(r)}\n  wrote ${paths.csv}, ${paths.svg}, ${paths.json}\n`);
  if (o.json) process.stdout.write(`${JSON.stringify({ verdict: r.verdict, ...paths }, null, 2)}\n`);
  return r.verdict.pass ? 0 : EXIT_FAIL;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`soak failed: ${describeError(err)}\n`);
    process.exit(EXIT_FAIL);
  },
);
