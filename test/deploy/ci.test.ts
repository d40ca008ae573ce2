/**
 * deploy/ci/: the GitHub Actions workflow and the GitLab CI job, parsed with `yaml`; their probe command
 * lines are then run by a real shell against a stub `npx` that records its arguments, so the flags, the
 * report paths and the exit status are what the publish steps expect.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { ROOT } from '../helpers/cli.js';

const run = promisify(execFile);

interface Step { name?: string; uses?: string; run?: string; if?: string; env?: Record<string, string>; with?: Record<string, string | number | boolean> }
interface Workflow {
  on: { schedule?: Array<{ cron: string }>; workflow_dispatch?: unknown; push?: unknown };
  permissions?: Record<string, string>;
  jobs: Record<string, { steps: Step[]; 'timeout-minutes'?: number }>;
}
interface GitlabJob {
  image: string;
  rules: Array<{ if: string }>;
  script: string[];
  artifacts: { when: string; paths: string[]; reports: { junit: string } };
}

const GH = join(ROOT, 'deploy/ci/github-actions.yml');
const GL = join(ROOT, 'deploy/ci/gitlab-ci.yml');

/** The value after `--flag` in a command line. */
function flag(cmd: string, name: string): string | undefined {
  return new RegExp(`(?:^|\\s)${name}\\s+("[^"]*"|\\S+)`).exec(cmd)?.[1];
}

/** A 5-field cron expression that fires at least once an hour. */
function hourlyCron(c: string): boolean {
  const f = c.trim().split(/\s+/);
  return f.length === 5 && /^\d{1,2}$/.test(f[0]!) && f.slice(1).every((x) => x === '*');
}

/** Runs `script` in `sh` with a stub npx that records its argv and stdout target, and exits with `code`. */
async function runWithStubNpx(script: string, env: Record<string, string>, code: number): Promise<{ exit: number; argv: string[]; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'derp-ci-'));
  await writeFile(join(dir, 'npx'), `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > "$STUB_ARGV"\necho '{"stub":true}'\ntouch derp-probe.xml\nexit ${code}\n`);
  await chmod(join(dir, 'npx'), 0o755);
  let exit = 0;
  try {
    await run('/bin/sh', ['-e', '-c', script], { cwd: dir, env: { PATH: `${dir}:/usr/bin:/bin`, STUB_ARGV: join(dir, 'argv'), ...env } });
  } catch (err) {
    exit = (err as { code?: number }).code ?? -1;
  }
  const argv = (await readFile(join(dir, 'argv'), 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');
  return { exit, argv, dir };
}

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('deploy/ci/github-actions.yml', () => {
  let wf: Workflow;
  let steps: Step[];
  let probe: Step;
  beforeAll(async () => {
    wf = parseYaml(await readFile(GH, 'utf8')) as Workflow;
    steps = Object.values(wf.jobs)[0]!.steps;
    probe = steps.find((s) => s.run?.includes('derp probe'))!;
  });

  it('runs hourly, by hand and on push', () => {
    expect(wf.on.schedule?.map((s) => s.cron).filter(hourlyCron)).toHaveLength(1);
    expect('workflow_dispatch' in wf.on).toBe(true);
    expect(wf.on.push).toBeDefined();
    expect(wf.permissions).toMatchObject({ checks: 'write', contents: 'read' });
  });

  it('uses Node 24', () => {
    const setup = steps.find((s) => s.uses?.startsWith('actions/setup-node@'));
    expect(String(setup?.with?.['node-version'])).toBe('24');
  });

  it('writes JUnit where the publish step reads it, and both reports where the upload step takes them', () => {
    expect(probe).toBeDefined();
    const cmd = probe.run!.split('\n').find((l) => l.includes('derp probe'))!;
    const junit = flag(cmd, '--junit');
    expect(junit).toBe('derp-probe.xml');
    expect(cmd).toMatch(/--json\s*>\s*derp-probe\.json/);
    expect(flag(cmd, '--map')).toBe('"$DERP_MAP_URL"');
    expect(probe.env?.DERP_MAP_URL).toBe('${{ vars.DERP_MAP_URL }}');

    const publish = steps.find((s) => s.uses?.startsWith('mikepenz/action-junit-report@'))!;
    // Pinned to a release, not a branch or a floating major.
    expect(publish.uses).toMatch(/@v\d+\.\d+\.\d+$/);
    expect(publish.with?.report_paths).toBe(junit);
    const upload = steps.find((s) => s.uses?.startsWith('actions/upload-artifact@'))!;
    expect(String(upload.with?.path).split('\n').map((l) => l.trim()).filter(Boolean)).toEqual([junit, 'derp-probe.json']);
  });

  it('publishes and uploads always, after the probe step (which fails the job on its own)', () => {
    const i = steps.indexOf(probe);
    const publish = steps.findIndex((s) => s.uses?.startsWith('mikepenz/action-junit-report@'));
    const upload = steps.findIndex((s) => s.uses?.startsWith('actions/upload-artifact@'));
    expect(publish).toBeGreaterThan(i);
    expect(upload).toBeGreaterThan(i);
    for (const s of [steps[publish]!, steps[upload]!]) expect(s.if).toBe('always()');
    // The probe step must not swallow the exit status.
    expect(probe.if).toBeUndefined();
    expect((probe as Record<string, unknown>)['continue-on-error']).toBeUndefined();
    expect(steps[publish]!.with?.fail_on_failure).toBeUndefined();
  });

  it("its script passes the flags through and keeps derp probe's exit status", async () => {
    const env = { DERP_MAP_URL: 'https://derp.example.net/map.json', DERP_PACKAGE: 'derp@0.1.0' };
    const failed = await runWithStubNpx(probe.run!, env, 1);
    dirs.push(failed.dir);
    expect(failed.exit).toBe(1);
    expect(failed.argv).toEqual(['--yes', '--package', 'derp@0.1.0', 'derp', 'probe', '--map', 'https://derp.example.net/map.json', '--junit', 'derp-probe.xml', '--json']);
    expect(await readFile(join(failed.dir, 'derp-probe.json'), 'utf8')).toBe('{"stub":true}\n');
    const ok = await runWithStubNpx(probe.run!, env, 0);
    dirs.push(ok.dir);
    expect(ok.exit).toBe(0);
    const unset = await runWithStubNpx(probe.run!, { DERP_PACKAGE: 'derp@0.1.0' }, 0);
    dirs.push(unset.dir);
    expect(unset.exit).toBe(2);
    expect(unset.argv).toEqual([]);
  });
});

describe('deploy/ci/gitlab-ci.yml', () => {
  let job: GitlabJob;
  beforeAll(async () => {
    const doc = parseYaml(await readFile(GL, 'utf8')) as Record<string, GitlabJob>;
    job = doc['derp-probe']!;
  });

  it('runs in scheduled and web pipelines on Node 24', () => {
    expect(job.rules.map((r) => r.if)).toEqual(['$CI_PIPELINE_SOURCE == "schedule"', '$CI_PIPELINE_SOURCE == "web"']);
    expect(job.image).toMatch(/^node:24(-|$)/);
  });

  it('keeps the reports always and hands GitLab the JUnit file the probe writes', () => {
    const cmd = job.script.find((l) => l.includes('derp probe'))!;
    const junit = flag(cmd, '--junit');
    expect(junit).toBe('derp-probe.xml');
    expect(job.artifacts.when).toBe('always');
    expect(job.artifacts.reports.junit).toBe(junit);
    expect(job.artifacts.paths).toEqual([junit, 'derp-probe.json']);
  });

  it("its script passes the flags through and keeps derp probe's exit status", async () => {
    const env = { DERP_MAP_URL: 'https://derp.example.net/map.json', DERP_PACKAGE: 'derp@0.1.0' };
    const r = await runWithStubNpx(job.script.join('\n'), env, 1);
    dirs.push(r.dir);
    expect(r.exit).toBe(1);
    expect(r.argv).toEqual(['--yes', '--package', 'derp@0.1.0', 'derp', 'probe', '--map', 'https://derp.example.net/map.json', '--junit', 'derp-probe.xml', '--json']);
    const unset = await runWithStubNpx(job.script.join('\n'), { DERP_MAP_URL: 'https://x/' }, 0);
    dirs.push(unset.dir);
    expect(unset.exit).toBe(2);
  });
});
