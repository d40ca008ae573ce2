/** --verify-clients against a unix-socket HTTP server that answers like tailscaled's LocalAPI. */
import { mkdtempSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAdmission, type Admission } from '../../src/lib/admission/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { newKey, req, settings } from './helpers.js';

const peers = new Set<string>();
let mode: 'normal' | 'old' | 'error' = 'normal';
const seen: { url: string; headers: IncomingMessage['headers'] }[] = [];
let server: Server;
let socketPath: string;

beforeAll(async () => {
  socketPath = join(mkdtempSync(join(tmpdir(), 'tsd-')), 'tailscaled.sock');
  server = createServer((rq, rs) => {
    seen.push({ url: rq.url ?? '', headers: rq.headers });
    // tailscaled refuses requests without its Host and CSRF header.
    if (rq.headers.host !== 'local-tailscaled.sock' || rq.headers['sec-tailscale'] !== 'localapi') {
      rs.statusCode = 403;
      rs.end('invalid localapi request');
      return;
    }
    const u = new URL(rq.url ?? '/', 'http://x');
    if (u.pathname !== '/localapi/v0/whois') {
      rs.statusCode = 404;
      rs.end();
      return;
    }
    const addr = u.searchParams.get('addr') ?? '';
    if (mode === 'old') {
      rs.statusCode = 400;
      rs.end("invalid 'addr' parameter\n");
    } else if (mode === 'error') {
      rs.statusCode = 500;
      rs.end('internal error\n');
    } else if (peers.has(addr)) {
      rs.setHeader('content-type', 'application/json');
      rs.end(JSON.stringify({ Node: { ID: 1, Key: addr, Name: 'laptop.tail1234.ts.net.' }, UserProfile: { LoginName: 'a@example.com' } }));
    } else {
      rs.statusCode = 404;
      rs.end('no match for IP:port\n');
    }
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

let open: Admission[] = [];
afterEach(async () => {
  await Promise.all(open.map((a) => a.close()));
  open = [];
  seen.length = 0;
  peers.clear();
  mode = 'normal';
});

async function make(path = socketPath): Promise<Admission> {
  const a = await createAdmission(settings({ verifyClients: true, tailscaledSocket: path }), { logger: new MemoryLogger() });
  open.push(a);
  return a;
}

describe('--verify-clients (tailscaled LocalAPI)', () => {
  it('admits a peer and refuses a stranger, asking whois?addr=nodekey:… with the LocalAPI headers', async () => {
    const peer = newKey();
    peers.add(peer.text);
    const a = await make();
    expect(await a.check(req(peer))).toEqual({ allow: true, source: 'tailscaled', reason: 'a peer of the local tailscaled' });
    expect(await a.check(req(newKey()))).toEqual({ allow: false, source: 'tailscaled', reason: 'not a peer of the local tailscaled' });
    expect(seen[0]!.url).toBe(`/localapi/v0/whois?addr=${encodeURIComponent(peer.text)}`);
    expect(seen[0]!.headers).toMatchObject({ host: 'local-tailscaled.sock', 'sec-tailscale': 'localapi' });
  });

  it('fails closed: an old tailscaled, an error, or no tailscaled at all refuse', async () => {
    const k = newKey();
    peers.add(k.text);
    const a = await make();
    mode = 'old';
    expect(await a.check(req(k))).toEqual({ allow: false, source: 'tailscaled', reason: 'tailscaled is too old for node-key whois' });
    mode = 'error';
    expect(await a.check(req(k))).toEqual({ allow: false, source: 'tailscaled', reason: 'tailscaled answered HTTP 500' });
    const missing = join(tmpdir(), 'no-such-dir-derp', 'tailscaled.sock');
    const none = await make(missing);
    const d = await none.check(req(k));
    expect(d.allow).toBe(false);
    expect(d.reason).toMatch(new RegExp(`^tailscaled unreachable at ${missing.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(.*ENOENT`));
  });

  it('runs after the lists: an allow-listed key is not asked about, a denied one refused first', async () => {
    const listed = newKey();
    const denied = newKey();
    peers.add(denied.text);
    const a = await createAdmission(settings({ verifyClients: true, tailscaledSocket: socketPath, allowKeys: [listed.text], denyKeys: [denied.text] }), { logger: new MemoryLogger() });
    open.push(a);
    expect(a.check(req(listed))).toMatchObject({ allow: true, source: 'allow-list' });
    expect(a.check(req(denied))).toMatchObject({ allow: false, source: 'deny-list' });
    expect(seen).toHaveLength(0);
  });
});
