/**
 * Bad mesh configuration through the real CLI (issue 10 §4): a precise message and exit code 2 for
 * what cannot work (key file, flags, entries), and for what can come right later — a name that does not
 * resolve, a peer with another mesh key — a logged, counted refusal while the node keeps serving.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flatCliText, runCli } from '../helpers/cli.js';
import { until } from '../faults/helpers.js';
import { RegionMember, reach, kill, linksUp, meshKeyFile, metric, removeDir, scrape, startRegion, startServe, type MeshProc } from './procs.js';

let dir = '';
let good = '';
const procs: MeshProc[] = [];
const members: RegionMember[] = [];
beforeAll(async () => {
  const k = await meshKeyFile();
  dir = k.dir;
  good = k.file;
});
afterAll(async () => {
  for (const m of members) await m.close();
  await Promise.all(procs.map((p) => kill(p)));
  await removeDir(dir);
});

async function keyFile(name: string, text: string): Promise<string> {
  const f = join(dir, name);
  await writeFile(f, text, { mode: 0o600 });
  await chmod(f, 0o600);
  return f;
}

const SERVE = ['serve', '--dev', '--addr', '127.0.0.1:0', '--no-stun', '--metrics-addr', 'none'];

/** Runs serve with `args`; it must exit 2 before listening, with `message` on stderr. */
async function refused(args: string[], message: string): Promise<void> {
  const r = await runCli([...SERVE, ...args]);
  expect(flatCliText(r.stderr)).toContain(message);
  expect(r.code).toBe(2);
  expect(r.stdout).not.toMatch(/listening/);
}

describe('derp serve refuses a mesh it cannot run, naming the file, flag or entry', () => {
  it.concurrent('a missing key file', async () => {
    const f = join(dir, 'missing.key');
    await refused(['--mesh-with', '127.0.0.1:1', '--mesh-psk-file', f], `Error: ${f}: mesh key file does not exist`);
  });
  it.concurrent('a key of the wrong length', async () => {
    const f = await keyFile('short.key', 'abcd\n');
    await refused(['--mesh-with', '127.0.0.1:1', '--mesh-psk-file', f], `Error: ${f}: mesh key must be 64 hex digits (32 bytes); found 4`);
  });
  it.concurrent('a key that is not hex', async () => {
    const f = await keyFile('nothex.key', `${'zz'.repeat(32)}\n`);
    await refused(['--mesh-with', '127.0.0.1:1', '--mesh-psk-file', f], `Error: ${f}: mesh key must be 64 hex digits; found 64 characters that are not all hex`);
  });
  it.concurrent('a key of all zeros', async () => {
    const f = await keyFile('zero.key', `${'0'.repeat(64)}\n`);
    await refused(['--mesh-with', '127.0.0.1:1', '--mesh-psk-file', f], `Error: ${f}: mesh key is all zeros (a zero key is never sent, so no peer could authenticate)`);
  });
  it.concurrent('--mesh-with without --mesh-psk-file', async () => {
    await refused(['--mesh-with', '127.0.0.1:1'], "--mesh-with (mesh.with): needs the region's mesh key: set mesh.pskFile (--mesh-psk-file) (64 hex digits, the same file on every node)");
  });
  it.concurrent('a --mesh-with entry that is a URL', async () => {
    await refused(['--mesh-with', '127.0.0.1:1,https://derp.example.com/derp', '--mesh-psk-file', good], 'Error: --mesh-with entry 2 "https://derp.example.com/derp": a URL is not accepted (the scheme is always https and the path /derp): write derp.example.com');
  });
  it.concurrent('a mesh.with entry in a config file names the file', async () => {
    const cfg = join(dir, 'derp.yaml');
    await writeFile(cfg, `dev: true\naddr: "127.0.0.1:0"\nstun:\n  enabled: false\nmetrics:\n  addr: none\nmesh:\n  with: ["derp-b:99999"]\n  pskFile: ${JSON.stringify(good)}\n`);
    const r = await runCli(['serve', '--config', cfg]);
    expect(flatCliText(r.stderr)).toContain(`Error: ${cfg} mesh.with entry 1 "derp-b:99999": port 99999 is out of range (1 to 65535)`);
    expect(r.code).toBe(2);
  });
});

describe('derp serve rides out what can come right later', () => {
  it('a name that does not resolve: serves, links to the other entries, warns naming the entry, looks it up again', async () => {
    const { nodes } = await startRegion(1, good);
    const peer = nodes[0]!;
    procs.push(peer);
    const s = await startServe(['--dev', '--addr', '127.0.0.1:0', '--no-stun', '--metrics-addr', '127.0.0.1:0', '--mesh-with', `nonexistent.invalid,127.0.0.1:${peer.port}`, '--mesh-psk-file', good, '--mesh-resolve-seconds', '1']);
    procs.push(s);
    await linksUp(s, [peer.port]);
    await until(() => s.output().includes('"msg":"mesh name does not resolve"'), 10_000, 'the warning');
    const warning = JSON.parse(s.output().split('\n').find((l) => l.includes('"msg":"mesh name does not resolve"'))!) as Record<string, unknown>;
    expect(warning).toMatchObject({ level: 'warn', entry: 1, spec: 'nonexistent.invalid', name: 'nonexistent.invalid' });
    await until(async () => (await metric(s, 'derp_mesh_lookups_total', { entry: 'nonexistent.invalid', result: 'failed' })) >= 2, 10_000, 'a second failed lookup of the name');
    expect(await metric(s, 'derp_mesh_lookups_total', { entry: `127.0.0.1:${peer.port}`, result: 'ok' })).toBeNaN();
    // Still a relay: two plain clients talk through it.
    const p = await member(s.url);
    const q = await member(s.url);
    await reach(p, q, 'through the node with the bad name');
    expect(s.proc.exitCode).toBeNull();
  });

  it('peers with different mesh keys: each counts key_mismatch and its link\u2019s refusals, logs them without a key, and serves plain clients', async () => {
    const other = await meshKeyFile();
    const hex = [(await readFile(good, 'utf8')).trim(), other.hex];
    const { nodes } = await startRegion(2, [good, other.file]);
    procs.push(...nodes);
    const [r, d] = nodes as [MeshProc, MeshProc];
    try {
      for (const [self, peer] of [[r, d], [d, r]] as const) {
        await until(async () => (await metric(self, 'derp_mesh_auth_failures_total', { reason: 'key_mismatch' })) >= 1, 10_000, `:${self.port} counted the peer's key mismatch`);
        await until(async () => (await metric(self, 'derp_mesh_peer_refusals_total', { peer: `127.0.0.1:${peer.port}` })) >= 1, 10_000, `:${self.port} counted a refusal of its link`);
        await until(() => self.output().includes('ClientInfo carried a mesh key that is not ours') && self.output().includes('mesh peer refused our mesh key'), 10_000, `:${self.port} logged both`);
        expect(await metric(self, 'derp_mesh_peer_up', { peer: `127.0.0.1:${peer.port}` })).toBe(0);
        expect(await metric(self, 'derp_mesh_remote_keys')).toBe(0);
      }
      for (const p of [r, d]) {
        const text = `${p.output()}${await scrape(p)}`.toLowerCase();
        for (const h of hex) expect(text).not.toContain(h.toLowerCase());
        const x = await member(p.url);
        const y = await member(p.url);
        await reach(x, y, `plain clients on :${p.port}`);
        expect(p.proc.exitCode).toBeNull();
      }
    } finally {
      await removeDir(other.dir);
    }
  });
});


async function member(url: string): Promise<RegionMember> {
  const m = new RegionMember([url]);
  members.push(m);
  await m.start();
  return m;
}

