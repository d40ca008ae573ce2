/**
 * The deploy/ files, checked as far as this machine can: systemd's own verifier and security score on
 * the unit, the Dockerfile's build inputs against the tree and .dockerignore (no Docker engine here),
 * its HEALTHCHECK command run for real, and the Prometheus example parsed.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { NODE, ROOT } from '../helpers/cli.js';

const run = promisify(execFile);
const SYSTEMD_ANALYZE = '/usr/bin/systemd-analyze';
const UNIT = join(ROOT, 'deploy/systemd/derp.service');
const DOCKERFILE = join(ROOT, 'deploy/docker/Dockerfile');

const haveSystemd = existsSync(SYSTEMD_ANALYZE);
if (!haveSystemd) console.warn(`[files.test] systemd checks SKIPPED: ${SYSTEMD_ANALYZE} is not installed`);

describe.skipIf(!haveSystemd)('deploy/systemd/derp.service', () => {
  let dir: string;
  let unit: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'derp-unit-'));
    const text = await readFile(UNIT, 'utf8');
    expect(text).toMatch(/^ExecStart=\/usr\/local\/bin\/derp serve --config \/etc\/derp\/derp\.yaml$/m);
    // `derp` is not installed on this machine: point ExecStart at a binary that exists, change nothing else.
    unit = join(dir, 'derp.service');
    await writeFile(unit, text.replace(/^ExecStart=\/usr\/local\/bin\/derp /m, 'ExecStart=/bin/true '));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('passes systemd-analyze verify with no warning (unknown keys would be reported)', async () => {
    const r = await run(SYSTEMD_ANALYZE, ['verify', unit]);
    expect(r.stderr.trim()).toBe('');
  });

  it('scores as well-sandboxed in systemd-analyze security (exposure ≤ 2.5 of 10)', async () => {
    const r = await run(SYSTEMD_ANALYZE, ['security', '--offline=yes', '--threshold=25', unit]);
    expect(r.stdout).toMatch(/Overall exposure level for derp\.service: [0-2]\.\d/);
  });

  it('has the essentials: unprivileged, one capability, state dir, reload by SIGHUP, restart, many fds', async () => {
    const text = await readFile(UNIT, 'utf8');
    for (const line of [
      'DynamicUser=yes',
      'AmbientCapabilities=CAP_NET_BIND_SERVICE',
      'CapabilityBoundingSet=CAP_NET_BIND_SERVICE',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'PrivateTmp=yes',
      'StateDirectory=derp',
      'ExecReload=/bin/kill -HUP $MAINPID',
      'Restart=on-failure',
      'LimitNOFILE=1048576',
    ])
      expect(text.split('\n'), line).toContain(line);
  });
});

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    if (cur === '' && /^\s*#/.test(raw)) continue;
    cur += raw.replace(/\\\s*$/, ' ');
    if (/\\\s*$/.test(raw)) continue;
    const m = /^\s*(\w+)\s+(.*)$/.exec(cur);
    if (m) out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim() });
    cur = '';
  }
  return out;
}

describe('deploy/docker/Dockerfile', () => {
  let ins: Instruction[];
  beforeAll(async () => {
    ins = instructions(await readFile(DOCKERFILE, 'utf8'));
  });

  it('is two stages on node:24-slim, and the runtime stage runs as a non-root user', () => {
    const froms = ins.filter((i) => i.op === 'FROM').map((i) => i.args);
    expect(froms).toEqual(['node:24-slim AS build', 'node:24-slim']);
    const runtime = ins.slice(ins.findIndex((i) => i.op === 'FROM' && i.args === 'node:24-slim'));
    const user = runtime.filter((i) => i.op === 'USER').map((i) => i.args);
    expect(user).toHaveLength(1);
    expect(user[0]).not.toMatch(/^(root|0)(:|$)/);
    expect(runtime.find((i) => i.op === 'EXPOSE')?.args.split(/\s+/).sort()).toEqual(['3478/udp', '443/tcp', '80/tcp']);
    expect(runtime.find((i) => i.op === 'VOLUME')?.args).toContain('/var/lib/derp');
    expect(runtime.find((i) => i.op === 'HEALTHCHECK')?.args).toContain('DERP_HEALTH_URL');
    // jemalloc for derp serve to preload (src/lib/node/allocator.ts), installed while still root.
    const jemalloc = runtime.findIndex((i) => i.op === 'RUN' && /apt-get install .*\blibjemalloc2\b/.test(i.args));
    expect(jemalloc).toBeGreaterThan(0);
    expect(jemalloc).toBeLessThan(runtime.findIndex((i) => i.op === 'USER'));
  });

  it('copies into the build only files that exist and that .dockerignore lets through', async () => {
    const ignore = (await readFile(join(ROOT, '.dockerignore'), 'utf8'))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    const ignored = (p: string) => ignore.some((g) => (g.startsWith('*') ? p.endsWith(g.slice(1)) : p === g || p.startsWith(`${g}/`)));
    const sources = ins
      .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))
      .flatMap((i) => {
        const parts = i.args.split(/\s+/);
        return parts.slice(0, -1);
      })
      .map((p) => p.replace(/^\.\//, ''));
    expect(sources).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'src', 'bin']));
    for (const s of sources) {
      expect(existsSync(join(ROOT, s)), `${s} exists`).toBe(true);
      expect(ignored(s), `${s} not in .dockerignore`).toBe(false);
    }
    // And the bulky or irrelevant parts of the tree stay out of the build context.
    for (const p of ['node_modules', 'dist', 'test', '.git']) expect(ignored(p), p).toBe(true);
  });

  it('ships exactly what package.json "files" lists (plus package.json and production node_modules)', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { files: string[] };
    const copied = ins.filter((i) => i.op === 'COPY' && i.args.startsWith('--from=build')).map((i) => i.args.split(/\s+/)[1]!.replace(/^\/src\//, ''));
    const shipped = pkg.files.filter((f) => !f.startsWith('!'));
    expect(copied.sort()).toEqual([...shipped, 'node_modules', 'package.json'].sort());
    expect(ins.some((i) => i.op === 'RUN' && /npm prune --omit=dev/.test(i.args))).toBe(true);
    // What the package leaves out of dist/, the image removes from it.
    if (pkg.files.includes('!dist/**/*.map')) expect(ins.some((i) => i.op === 'RUN' && i.args.includes("find dist -name '*.map' -delete"))).toBe(true);
  });

  describe('HEALTHCHECK command', () => {
    let server: http.Server;
    let status = 200;
    let base = '';
    beforeAll(async () => {
      server = http.createServer((req, res) => res.writeHead(req.url === '/healthz' ? status : 404).end());
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await new Promise((resolve) => server.close(resolve));
    });

    async function healthcheck(url: string): Promise<number | null> {
      const hc = ins.find((i) => i.op === 'HEALTHCHECK')!.args;
      const argv = JSON.parse(hc.slice(hc.indexOf('CMD') + 3).trim()) as string[];
      expect(argv[0]).toBe('node');
      return new Promise((resolve, reject) => {
        const p = spawn(NODE, argv.slice(1), { env: { ...process.env, DERP_HEALTH_URL: url }, stdio: 'ignore' });
        p.once('error', reject);
        p.once('exit', (code) => resolve(code));
      });
    }

    it('exits 0 on 200, 1 on 503, 1 when nothing listens', async () => {
      status = 200;
      expect(await healthcheck(`${base}/healthz`)).toBe(0);
      status = 503;
      expect(await healthcheck(`${base}/healthz`)).toBe(1);
      const closed = http.createServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const port = (closed.address() as AddressInfo).port;
      await new Promise((resolve) => closed.close(resolve));
      expect(await healthcheck(`http://127.0.0.1:${port}/healthz`)).toBe(1);
    });
  });
});

describe('deploy/prometheus/prometheus.yml', () => {
  it('parses and scrapes /metrics of job derp on the default loopback metrics address', async () => {
    const cfg = parseYaml(await readFile(join(ROOT, 'deploy/prometheus/prometheus.yml'), 'utf8')) as {
      scrape_configs: { job_name: string; metrics_path?: string; static_configs: { targets: string[] }[] }[];
    };
    const job = cfg.scrape_configs.find((j) => j.job_name === 'derp');
    expect(job).toBeDefined();
    expect(job!.metrics_path ?? '/metrics').toBe('/metrics');
    expect(job!.static_configs.flatMap((s) => s.targets)).toContain('127.0.0.1:9090');
  });
});
