/** `derp keygen` end to end (npm test builds dist/ first). */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseKeyFile } from '../../src/lib/protocol/index.js';
import { flatCliText, runCli } from '../helpers/cli.js';

const run = (args: string[]) => runCli(['keygen', ...args]);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-keygen-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('derp keygen', () => {
  it('writes a derper key file (0600) whose public half it prints, and refuses to overwrite it', async () => {
    const file = join(dir, 'node.key');
    const first = await run(['--out', file]);
    expect(first.code).toBe(0);
    const key = parseKeyFile(await readFile(file, 'utf8'));
    expect(first.stdout.trim()).toBe(key.publicText());
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readFile(file, 'utf8')).toMatch(/^\{\n\t"PrivateKey": "privkey:[0-9a-f]{64}"\n\}\n$/);

    const again = await run(['--out', file]);
    expect(again.code).toBe(2);
    expect(flatCliText(again.stderr)).toContain(`${file}: already exists`);
    expect(parseKeyFile(await readFile(file, 'utf8')).publicText()).toBe(key.publicText());

    expect((await run(['--out', file, '--force'])).code).toBe(0);
  });

  it('prints both halves as JSON without --out', async () => {
    const r = await run(['--json']);
    expect(r.code).toBe(0);
    const o = JSON.parse(r.stdout) as { publicKey: string; privateKey: string };
    expect(o.publicKey).toMatch(/^nodekey:[0-9a-f]{64}$/);
    expect(o.privateKey).toMatch(/^privkey:[0-9a-f]{64}$/);
  });
});
