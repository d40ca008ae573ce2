/** The admission order, the static lists (files watched, reload keeps the old list on error), counting and logging. */
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAdmission, type Admission, type AdmitDecision } from '../../src/lib/admission/index.js';
import { KeyListError } from '../../src/lib/errors.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { newKey, req, settings } from './helpers.js';

/** A webhook that admits exactly the keys in `allowed` and records what it was asked. */
let hook: Server;
let hookUrl: string;
const allowed = new Set<string>();
const asked: string[] = [];

beforeAll(async () => {
  hook = createServer((rq, rs) => {
    let body = '';
    rq.on('data', (d: Buffer) => (body += d.toString()));
    rq.on('end', () => {
      const { NodePublic } = JSON.parse(body) as { NodePublic: string };
      asked.push(NodePublic);
      rs.end(JSON.stringify({ Allow: allowed.has(NodePublic) }));
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/admit`;
});
afterAll(() => new Promise<void>((r) => hook.close(() => r())));

let open: Admission[] = [];
afterEach(async () => {
  await Promise.all(open.map((a) => a.close()));
  open = [];
  asked.length = 0;
  allowed.clear();
});

async function make(...args: Parameters<typeof createAdmission>): Promise<Admission> {
  const a = await createAdmission(...args);
  open.push(a);
  return a;
}

/** A decision the lists made: synchronous (a promise here fails the test). */
function now(d: AdmitDecision | Promise<AdmitDecision>): AdmitDecision {
  if (d instanceof Promise) throw new Error('expected a synchronous decision');
  return d;
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'admission-'));
}

describe('admission order: mesh → deny → allow → verifiers → default', () => {
  it('admits everyone when nothing is configured, synchronously', async () => {
    const a = await make(settings(), { logger: new MemoryLogger() });
    const d = a.check(req(newKey()));
    expect(d).toEqual({ allow: true, source: 'default', reason: 'no admission checks configured' });
  });

  it('with only an allow list, it is the only way in', async () => {
    const ok = newKey();
    const a = await make(settings({ allowKeys: [ok.text] }), { logger: new MemoryLogger() });
    expect(a.check(req(ok))).toMatchObject({ allow: true, source: 'allow-list' });
    expect(a.check(req(newKey()))).toEqual({ allow: false, source: 'allow-list', reason: 'not on the allow list' });
  });

  it('an allow-list file that is empty admits nobody (the list is present)', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'allow'), '# nobody yet\n');
    const a = await make(settings({ allowKeysFile: join(dir, 'allow') }), { logger: new MemoryLogger() });
    expect(a.check(req(newKey()))).toMatchObject({ allow: false, source: 'allow-list' });
    expect(a.stats().lists).toEqual({ allowKeys: 0, denyKeys: 0, allowListPresent: true });
  });

  it('deny wins over allow; mesh peers are admitted even when denied', async () => {
    const k = newKey();
    const a = await make(settings({ allowKeys: [k.text], denyKeys: [k.text] }), { logger: new MemoryLogger() });
    expect(a.check(req(k))).toEqual({ allow: false, source: 'deny-list', reason: 'on the deny list' });
    expect(a.check(req(k, '10.0.0.2:443', true))).toEqual({ allow: true, source: 'mesh', reason: 'mesh peer' });
  });

  it('with a verifier, the allow list admits without asking and the verifier decides the rest', async () => {
    const listed = newKey();
    const approved = newKey();
    const stranger = newKey();
    const denied = newKey();
    allowed.add(approved.text).add(denied.text);
    const a = await make(settings({ allowKeys: [listed.text], denyKeys: [denied.text], verifyClientUrl: hookUrl }), { logger: new MemoryLogger() });
    expect(a.check(req(listed))).toMatchObject({ allow: true, source: 'allow-list' });
    expect(await a.check(req(approved))).toMatchObject({ allow: true, source: 'webhook', reason: 'webhook allowed' });
    expect(await a.check(req(stranger))).toMatchObject({ allow: false, source: 'webhook', reason: 'webhook refused' });
    expect(a.check(req(denied))).toMatchObject({ allow: false, source: 'deny-list' });
    // Neither the allow-listed nor the denied key reached the webhook.
    expect(asked.sort()).toEqual([approved.text, stranger.text].sort());
  });

  it('counts every decision by source and result and logs key (short) and remote', async () => {
    const ok = newKey();
    const logger = new MemoryLogger();
    const a = await make(settings({ allowKeys: [ok.text] }), { logger });
    a.check(req(ok));
    a.check(req(ok));
    a.check(req(newKey(), '[2001:db8::1]:5'));
    a.check(req(newKey(), '10.1.1.1:1', true));
    const s = a.stats().decisions;
    expect(s['allow-list']).toEqual({ allow: 2, deny: 1 });
    expect(s.mesh).toEqual({ allow: 1, deny: 0 });
    expect(s.webhook).toEqual({ allow: 0, deny: 0 });
    const refused = logger.entries.find((e) => e.msg === 'client refused');
    expect(refused?.level).toBe('warn');
    expect(refused?.fields).toMatchObject({ remote: '[2001:db8::1]:5', source: 'allow-list', reason: 'not on the allow list' });
    expect(String(refused?.fields.key)).toMatch(/^\[[A-Za-z0-9+/]{5}\]$/);
    expect(logger.entries.filter((e) => e.msg === 'client admitted' && e.level === 'debug')).toHaveLength(3);
  });
});

describe('list files', () => {
  it('refuses a bad file at start with file:line', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'deny'), `${newKey().text}\nnodekey:12\n`);
    await expect(createAdmission(settings({ denyKeysFile: join(dir, 'deny') }), { logger: new MemoryLogger() })).rejects.toThrow(
      new RegExp(`^${join(dir, 'deny').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:2: expected 64 hex digits`),
    );
  });

  it('re-reads a changed file (atomic replace) and keeps the old list when the new one is bad', async () => {
    const dir = tmp();
    const file = join(dir, 'deny');
    const first = newKey();
    const second = newKey();
    writeFileSync(file, `${first.text}\n`);
    const logger = new MemoryLogger();
    const a = await make(settings({ denyKeysFile: file }), { logger });
    expect(now(a.check(req(first))).allow).toBe(false);
    expect(now(a.check(req(second))).allow).toBe(true);

    const changed = (ok: boolean) => new Promise<void>((resolve) => a.staticLists.setChangeListener((_w, good) => good === ok && resolve()));
    let done = changed(true);
    writeFileSync(join(dir, 'deny.new'), `${second.text}\n`);
    renameSync(join(dir, 'deny.new'), file);
    await done;
    expect(now(a.check(req(first))).allow).toBe(true);
    expect(now(a.check(req(second))).allow).toBe(false);

    done = changed(false);
    writeFileSync(join(dir, 'deny.new'), 'garbage\n');
    renameSync(join(dir, 'deny.new'), file);
    await done;
    // The refused file changed nothing.
    expect(now(a.check(req(second))).allow).toBe(false);
    expect(logger.entries.some((e) => e.msg === 'deny list refused, keeping the one in use' && String(e.fields.reason).includes(`${file}:1`))).toBe(true);
  });

  it('reload re-reads the files; a bad file throws and the old lists stay', async () => {
    const dir = tmp();
    const file = join(dir, 'allow');
    const k1 = newKey();
    const k2 = newKey();
    writeFileSync(file, `${k1.text}\n`);
    const a = await make(settings({ allowKeysFile: file }), { logger: new MemoryLogger() });
    a.staticLists.setChangeListener(undefined);
    const other = join(dir, 'allow2');
    writeFileSync(other, `${k2.text}\n`);
    await a.reload(settings({ allowKeysFile: other }));
    expect(now(a.check(req(k1))).allow).toBe(false);
    expect(now(a.check(req(k2))).allow).toBe(true);

    const bad = join(dir, 'bad');
    writeFileSync(bad, `${k1.text}\n${k1.text}x\n`);
    const err = await a.reload(settings({ allowKeysFile: bad, verifyClientUrl: hookUrl })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeyListError);
    expect((err as Error).message).toBe(`${bad}:2: expected 64 hex digits after "nodekey:", found 65 characters (not all hex): "${k1.text}x"`);
    expect(now(a.check(req(k2))).allow).toBe(true);
    // No webhook was installed by the refused reload: the decision stayed synchronous.
    const d = a.check(req(newKey())) as AdmitDecision;
    expect(d).toMatchObject({ allow: false, source: 'allow-list' });
    expect(a.stats().webhook).toBeNull();
  });
});
