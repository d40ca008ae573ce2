/** The defences as `derp serve` wires them: admission lists with reloads, abuse bans, their metrics. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfigFile, reloadServeConfig, resolveServeConfig } from '../../src/lib/config/index.js';
import { RelayNode } from '../../src/lib/node/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RawClient } from '../helpers/rawclient.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startFromFile(yaml: string): Promise<{ node: RelayNode; file: string; logger: MemoryLogger; port: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'derp-defence-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'derp.yaml');
  await writeFile(file, yaml);
  const logger = new MemoryLogger();
  const node = await RelayNode.start({ config: resolveServeConfig(await loadConfigFile(file)), logger, loadConfig: async () => (await reloadServeConfig(file, {})).config });
  cleanups.push(() => node.stop());
  return { node, file, logger, port: node.relay.port };
}

/** True when the relay answered ClientInfo with ServerInfo; false when it closed the connection instead. */
async function admitted(port: number, key: NodePrivateKey): Promise<boolean> {
  const c = await RawClient.open({ port, key });
  try {
    await c.handshake();
    return true;
  } catch {
    await c.closedPromise;
    return false;
  } finally {
    c.destroy();
  }
}

const BASE = 'dev: true\naddr: "127.0.0.1:0"\nstun:\n  enabled: false\n';

describe('admission through the node', () => {
  it('admits only the allow list, and a reload that denies a key keeps the admitted connections', async () => {
    const [good, other] = [NodePrivateKey.generate(), NodePrivateKey.generate()];
    const allow = (keys: NodePrivateKey[], deny: NodePrivateKey[] = []) =>
      `${BASE}admission:\n  allowKeys: [${keys.map((k) => `"${k.publicText()}"`).join(', ')}]\n  denyKeys: [${deny.map((k) => `"${k.publicText()}"`).join(', ')}]\n`;
    const { node, file, port } = await startFromFile(allow([good]));
    const a = await RawClient.connect({ port, key: good });
    cleanups.push(async () => a.destroy());
    expect(await admitted(port, other)).toBe(false);

    await writeFile(file, allow([good, other], [good]));
    expect((await node.reload()).ok).toBe(true);
    // Already admitted: still relaying. New connections follow the new lists (deny wins).
    await a.ping();
    expect(await admitted(port, other)).toBe(true);
    expect(await admitted(port, good)).toBe(false);

    const metrics = await (await fetch(node.metricsServer!.url)).text();
    expect(metrics).toMatch(/^derp_admission_decisions_total\{source="allow-list",result="allow"\} [2-9]/m);
    expect(metrics).toMatch(/^derp_admission_decisions_total\{source="deny-list",result="deny"\} 1$/m);
    expect(metrics).toMatch(/^derp_admission_decisions_total\{source="allow-list",result="deny"\} 1$/m);
  });
});

describe('abuse bans through the node', () => {
  it('bans a key that floods absent peers, disconnects it, shows it on /debug/bans, and lifts it on reload', async () => {
    const yaml = (lift: string[]) => `${BASE}abuse:\n  ban: true\n  thresholds:\n    absentPeer: 50\n  lift: [${lift.map((x) => `"${x}"`).join(', ')}]\n`;
    const { node, file, port, logger } = await startFromFile(yaml([]));
    const key = NodePrivateKey.generate();
    const bystander = await RawClient.connect({ port });
    cleanups.push(async () => bystander.destroy());
    const a = await RawClient.connect({ port, key });
    for (let i = 0; i < 60; i++) a.sendPacket(NodePrivateKey.generate().publicKey, Buffer.alloc(8));
    await a.closedPromise;
    expect(logger.entries.some((e) => e.msg === 'closed connections of a banned identity')).toBe(true);

    const bans = (await (await fetch(`http://127.0.0.1:${port}/debug/bans`)).json()) as { bans: { identity: string; kind: string }[] };
    expect(bans.bans).toEqual([expect.objectContaining({ identity: key.publicText(), kind: 'absent_peer' })]);
    expect(await admitted(port, key)).toBe(false);
    // Others are unaffected.
    await bystander.ping();

    await writeFile(file, yaml([key.publicText()]));
    expect((await node.reload()).ok).toBe(true);
    expect(await admitted(port, key)).toBe(true);
    const metrics = await (await fetch(node.metricsServer!.url)).text();
    expect(metrics).toMatch(/^derp_abuse_/m);
  });
});

describe('bad defence settings on reload', () => {
  it('a bad key list file is refused with its file and line, and the running lists stay', async () => {
    const good = NodePrivateKey.generate();
    const dir = await mkdtemp(join(tmpdir(), 'derp-defence-list-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const list = join(dir, 'allow-keys');
    await writeFile(list, `# admitted\n${good.publicText()}\n`);
    const { node, port } = await startFromFile(`${BASE}admission:\n  allowKeysFile: ${list}\n`);
    expect(await admitted(port, good)).toBe(true);

    await writeFile(list, `${good.publicText()}\nnodekey:not-hex\n`);
    const r = await node.reload();
    expect(r.ok).toBe(false);
    expect(r.problems.join('\n')).toContain(`${list}:2`);
    expect(await admitted(port, good)).toBe(true);
    expect(await admitted(port, NodePrivateKey.generate())).toBe(false);
  });
});
