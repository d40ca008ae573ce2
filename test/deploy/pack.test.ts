/**
 * `npm pack` makes a package that installs and runs on its own: pack the built tree, install the
 * tarball into an empty directory outside the repository (npm cache first, registry for the rest),
 * then run its `derp` with the pinned Node 24. Needs `npm run build` first (as `npm test` does).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NODE, ROOT } from '../helpers/cli.js';

/** npm install of the production dependencies is the slow part; this bounds it. */
const INSTALL_TIMEOUT_MS = 150_000;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs to completion with a bound; npm itself runs on the pinned Node (its directory first on PATH). */
function exec(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<Ran> {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(NODE)}${delimiter}${process.env.PATH ?? ''}`, NO_COLOR: '1' };
  // Nothing may leak the repository's modules into the installed package.
  delete env.NODE_PATH;
  delete env.NODE_OPTIONS;
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('error', reject);
    p.once('close', (code, signal) => resolve({ code, stdout, stderr: signal === null ? stderr : `${stderr}\n[test] killed by ${signal} after ${timeoutMs} ms` }));
  });
}

/** What may ship: the CLI entry, compiled JS with its type declarations, the oclif manifest, the --json schemas, npm's own. */
const ALLOWED = [/^bin\/run\.js$/, /^dist\/.+\.js$/, /^dist\/.+\.d\.ts$/, /^oclif\.manifest\.json$/, /^schemas\/[a-z-]+\.schema\.json$/, /^package\.json$/, /^README\.md$/, /^LICENSE$/];

describe('npm pack', () => {
  let work: string;
  let tarball = '';
  let files: string[] = [];
  let install: Ran | undefined;

  beforeAll(async () => {
    if (!existsSync(join(ROOT, 'dist/commands/demo.js'))) throw new Error('dist/ is missing: run `npm run build` first');
    work = await mkdtemp(join(tmpdir(), 'derp-pack-'));
    const packed = await exec('npm', ['pack', '--json', '--pack-destination', work], ROOT, 60_000);
    expect(packed, packed.stderr).toMatchObject({ code: 0 });
    const info = (JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[])[0]!;
    tarball = join(work, info.filename);
    files = info.files.map((f) => f.path);
    // An empty project far from the source tree.
    await writeFile(join(work, 'package.json'), JSON.stringify({ name: 'derp-pack-test', private: true }));
    install = await exec('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--no-package-lock', tarball], work, INSTALL_TIMEOUT_MS);
  }, INSTALL_TIMEOUT_MS + 70_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('ships only what runs: no tests, sources, source maps, benchmarks or dev entry points', () => {
    const junk = files.filter((f) => !ALLOWED.some((re) => re.test(f)));
    expect(junk).toEqual([]);
    expect(files).toEqual(expect.arrayContaining(['bin/run.js', 'oclif.manifest.json', 'package.json', 'dist/commands/serve.js', 'dist/lib/server/relay.d.ts', 'schemas/netcheck.schema.json', 'schemas/connect.schema.json']));
    // tsc never deletes outputs: a dist/ file without its source is a stale leftover of an older build.
    const stale = files.filter((f) => /^dist\/.+\.js$/.test(f) && !existsSync(join(ROOT, 'src', f.slice('dist/'.length).replace(/\.js$/, '.ts'))));
    expect(stale, 'stale dist/ files: rm -rf dist && npm run build').toEqual([]);
  });

  it('installs from the tarball alone', () => {
    expect(install, install?.stderr).toMatchObject({ code: 0 });
    expect(existsSync(join(work, 'node_modules/derp/bin/run.js'))).toBe(true);
    // The package's own devDependencies (the pinned Node, TypeScript, vitest) are not installed.
    expect(existsSync(join(work, 'node_modules/typescript'))).toBe(false);
  });

  it('its derp prints the version and runs the demo', async () => {
    const bin = join(work, 'node_modules/.bin/derp');
    const v = await exec(NODE, [bin, '--version'], work, 30_000);
    expect(v, v.stderr).toMatchObject({ code: 0 });
    const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(v.stdout.startsWith(`derp/${version} `)).toBe(true);
    expect(v.stdout).toMatch(/ node-v24\./);

    const d = await exec(NODE, [bin, 'demo', '--packets', '100', '--json'], work, 60_000);
    expect(d, d.stderr).toMatchObject({ code: 0 });
    const report = JSON.parse(d.stdout) as { packetsEachWay: number; delivered: { aToB: number; bToA: number }; netcheck: { udp: boolean } };
    expect(report).toMatchObject({ schema: 'derp.demo/v1', packetsEachWay: 100, delivered: { aToB: 100, bToA: 100 }, netcheck: { udp: true } });
  });
});
