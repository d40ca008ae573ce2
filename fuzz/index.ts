/**
 * `npm run fuzz -- --cases N [--seconds S] [--seed X] [--concurrency C] [--url U --pid P --key K
 * [--metrics-url M] [--stun-port N]]`: the live fuzzer against `derp serve --dev` (started here) or
 * a relay already running. Prints the report as JSON; findings also go to fuzz/findings/.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FAMILIES, type Family } from './cases.js';
import { runFuzz, type FuzzTarget } from './run.js';
import { REPO_ROOT, startRelay, type RelayProcess } from './server.js';

const { values: a } = parseArgs({
  options: {
    cases: { type: 'string', default: '100000' },
    seconds: { type: 'string' },
    seed: { type: 'string' },
    concurrency: { type: 'string', default: '64' },
    families: { type: 'string' },
    'audit-every': { type: 'string', default: '500' },
    'settle-seconds': { type: 'string', default: '10' },
    url: { type: 'string' },
    pid: { type: 'string' },
    key: { type: 'string' },
    'metrics-url': { type: 'string' },
    'stun-port': { type: 'string' },
    'node-args': { type: 'string', default: '' },
    env: { type: 'string', multiple: true, default: [] },
  },
});

const int = (s: string | undefined, what: string): number => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${what} must be an integer ≥ 0, got ${String(s)}`);
  return n;
};

async function main(): Promise<void> {
  const seed = a.seed === undefined ? (Date.now() & 0x7fffffff) : int(a.seed, 'seed');
  const families = a.families === undefined ? FAMILIES : (a.families.split(',') as Family[]);
  for (const f of families) if (!FAMILIES.includes(f)) throw new Error(`unknown family ${f} (known: ${FAMILIES.join(', ')})`);
  let relay: RelayProcess | null = null;
  let target: FuzzTarget;
  if (a.url !== undefined) {
    if (a.pid === undefined || a.key === undefined) throw new Error('--url needs --pid and --key (the relay\'s nodekey:…)');
    target = { url: a.url, pid: int(a.pid, 'pid'), publicKey: a.key, stunPort: a['stun-port'] === undefined ? null : int(a['stun-port'], 'stun-port'), metricsUrl: a['metrics-url'] ?? null };
  } else {
    const env = Object.fromEntries(a.env.map((kv) => kv.split('=', 2) as [string, string]));
    relay = await startRelay({ inspect: true, nodeArgs: a['node-args'].split(' ').filter(Boolean), env });
    target = relay;
  }
  process.stderr.write(`fuzzing ${target.url} (pid ${target.pid}) seed ${seed}\n`);
  try {
    const report = await runFuzz(target, {
      cases: int(a.cases, 'cases'),
      seconds: a.seconds === undefined ? undefined : int(a.seconds, 'seconds'),
      seed,
      concurrency: int(a.concurrency, 'concurrency'),
      families,
      auditEvery: int(a['audit-every'], 'audit-every'),
      settleMs: int(a['settle-seconds'], 'settle-seconds') * 1000,
      onProgress: (p) => process.stderr.write(`  ${p.done} cases, ${Math.round(p.done / (p.elapsedMs / 1000))}/s, ${p.findings} findings\n`),
    });
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    if (report.findings.length > 0) {
      const dir = join(REPO_ROOT, 'fuzz', 'findings');
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-seed${seed}.json`);
      writeFileSync(file, `${JSON.stringify(report.findings, null, 2)}\n`);
      process.stderr.write(`${report.findings.length} findings written to ${file}\n`);
      process.exitCode = 1;
    }
  } finally {
    await relay?.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`fuzz: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 2;
});
