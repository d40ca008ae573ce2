/** The admission webhook against a real local HTTP server: wire format, each failure mode, cache, concurrency. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebhookVerifier, type WebhookOptions } from '../../src/lib/admission/index.js';
import { newKey, req, until } from './helpers.js';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

let server: Server;
let base: string;
const seen: Seen[] = [];
/** Requests held open by the /hold route, released by the test. */
const held: ServerResponse[] = [];

function reply(path: string, rs: ServerResponse, body: string): void {
  const k = (JSON.parse(body) as { NodePublic: string }).NodePublic;
  switch (path) {
    case '/allow':
      rs.end('{"Allow":true}');
      return;
    case '/deny':
      rs.end('{"Allow":false}');
      return;
    case '/lower':
      rs.end('{"allow":true,"extra":1}');
      return;
    case '/empty-object':
      rs.end('{}');
      return;
    case '/garbage':
      rs.end('<html>oops');
      return;
    case '/string':
      rs.end('{"Allow":"true"}');
      return;
    case '/huge':
      rs.end(`{"Allow":true,"pad":"${'x'.repeat(5000)}"}`);
      return;
    case '/500':
      rs.statusCode = 500;
      rs.end('{"Allow":true}');
      return;
    case '/201':
      rs.statusCode = 201;
      rs.end('{"Allow":true}');
      return;
    case '/redirect':
      rs.statusCode = 302;
      rs.setHeader('location', '/allow');
      rs.end();
      return;
    case '/slow':
      return; // never answers; the client's timeout ends it
    case '/hold':
      held.push(rs);
      return;
    case '/by-key':
      rs.end(JSON.stringify({ Allow: k.endsWith('0') }));
      return;
    default:
      rs.statusCode = 404;
      rs.end();
  }
}

beforeAll(async () => {
  server = createServer((rq, rs) => {
    let body = '';
    rq.on('data', (d: Buffer) => (body += d.toString()));
    rq.on('end', () => {
      seen.push({ method: rq.method ?? '', url: rq.url ?? '', headers: rq.headers, body });
      reply(rq.url ?? '', rs, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

let open: WebhookVerifier[] = [];
afterEach(async () => {
  for (const rs of held.splice(0)) rs.end('{"Allow":true}');
  await Promise.all(open.map((v) => v.close()));
  open = [];
  seen.length = 0;
});

function verifier(path: string, over: Partial<WebhookOptions> = {}): WebhookVerifier {
  const v = new WebhookVerifier({ url: `${base}${path}`, failOpen: false, timeoutMs: 2000, cacheAllowMs: 60_000, cacheDenyMs: 10_000, now: Date.now, ...over });
  open.push(v);
  return v;
}

/** A port nothing listens on: bind, read the port, close. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('wire format (derper compatible)', () => {
  it('POSTs {"NodePublic","Source"} with no Content-Type and admits on 200 {"Allow":true}', async () => {
    const k = newKey();
    const a = await verifier('/allow').check(req(k, '203.0.113.7:41641'));
    expect(a).toEqual({ allow: true, reason: 'webhook allowed' });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.method).toBe('POST');
    expect(seen[0]!.body).toBe(`{"NodePublic":"${k.text}","Source":"203.0.113.7"}`);
    expect(seen[0]!.headers['content-type']).toBeUndefined();
  });

  it('sends Source as a bare IP: IPv6 without brackets, IPv4-mapped as IPv4, "" when unknown', async () => {
    const v = verifier('/allow');
    await v.check(req(newKey(), '[2001:db8::5]:443'));
    await v.check(req(newKey(), '::ffff:192.0.2.9'));
    await v.check(req(newKey(), 'somewhere'));
    expect(seen.map((s) => (JSON.parse(s.body) as { Source: string }).Source)).toEqual(['2001:db8::5', '192.0.2.9', '']);
  });

  it('matches "Allow" case-insensitively like Go, ignores unknown keys', async () => {
    expect((await verifier('/lower').check(req(newKey()))).allow).toBe(true);
  });
});

describe('refusals and failure modes', () => {
  it.each([
    ['/deny', 'webhook refused'],
    ['/empty-object', 'webhook refused'],
    ['/500', 'webhook answered HTTP 500'],
    ['/201', 'webhook answered HTTP 201'],
    ['/redirect', 'webhook answered HTTP 302'],
    ['/garbage', 'answer is not {"Allow":bool} JSON'],
    ['/string', '"Allow" is not a boolean'],
    ['/huge', 'webhook: answer larger than 4096 bytes'],
  ])('%s refuses (%s), also with fail-open', async (path, reason) => {
    for (const failOpen of [false, true]) {
      const a = await verifier(path, { failOpen }).check(req(newKey()));
      expect(a.allow).toBe(false);
      expect(a.reason).toContain(reason);
    }
  });

  it('a slow webhook times out: refused by default, admitted with fail-open', async () => {
    const closed = await verifier('/slow', { timeoutMs: 200 }).check(req(newKey()));
    expect(closed).toEqual({ allow: false, reason: 'webhook unreachable (no answer within 200 ms); fail-closed' });
    const v = verifier('/slow', { timeoutMs: 200, failOpen: true });
    const opened = await v.check(req(newKey()));
    expect(opened).toEqual({ allow: true, reason: 'webhook unreachable (no answer within 200 ms); fail-open admits' });
    expect(v.stats.failedOpen).toBe(1);
  });

  it('a webhook that is down: refused by default, admitted with fail-open', async () => {
    const port = await deadPort();
    const url = `http://127.0.0.1:${port}/admit`;
    const closed = await verifier('', { url }).check(req(newKey()));
    expect(closed.allow).toBe(false);
    expect(closed.reason).toMatch(/^webhook unreachable \(.*ECONNREFUSED.*\); fail-closed$/);
    expect((await verifier('', { url, failOpen: true }).check(req(newKey()))).allow).toBe(true);
  });
});

describe('cache', () => {
  it('reuses an allow for cacheAllowMs and a refusal for cacheDenyMs, per key', async () => {
    let now = 1_000_000;
    const v = verifier('/by-key', { now: () => now, cacheAllowMs: 60_000, cacheDenyMs: 10_000 });
    let yes = newKey();
    while (!yes.text.endsWith('0')) yes = newKey();
    let no = newKey();
    while (no.text.endsWith('0')) no = newKey();
    expect((await v.check(req(yes))).allow).toBe(true);
    expect((await v.check(req(no))).allow).toBe(false);
    expect(seen).toHaveLength(2);
    now += 9_000;
    expect(await v.check(req(yes))).toEqual({ allow: true, reason: 'webhook allowed (cached)' });
    expect(await v.check(req(no))).toEqual({ allow: false, reason: 'webhook refused (cached)' });
    expect(seen).toHaveLength(2);
    now += 2_000; // the refusal expired, the allow did not
    await v.check(req(yes));
    await v.check(req(no));
    expect(seen).toHaveLength(3);
    now += 60_000;
    await v.check(req(yes));
    expect(seen).toHaveLength(4);
  });

  it('does not cache errors: the next check asks again', async () => {
    const v = verifier('/500');
    const k = newKey();
    await v.check(req(k));
    await v.check(req(k));
    expect(seen).toHaveLength(2);
  });
});

describe('bounded concurrency', () => {
  it('runs at most `concurrency` requests, queues `queue` more, refuses the rest as overloaded', async () => {
    const v = verifier('/hold', { concurrency: 2, queue: 3, timeoutMs: 10_000 });
    const checks = Array.from({ length: 7 }, () => v.check(req(newKey())));
    // Two requests reach the server, three wait, two are refused at once.
    await until(() => held.length === 2 && v.stats.queued === 3);
    const early = await Promise.all(checks.slice(5));
    expect(early).toEqual([
      { allow: false, reason: 'webhook overloaded: too many checks waiting' },
      { allow: false, reason: 'webhook overloaded: too many checks waiting' },
    ]);
    expect(v.stats).toMatchObject({ inFlight: 2, queued: 3, overloaded: 2 });
    // Releasing the held answers lets the queue through, two at a time.
    while (seen.length < 5 || held.length > 0) {
      await until(() => held.length > 0);
      for (const rs of held.splice(0)) rs.end('{"Allow":true}');
    }
    const rest = await Promise.all(checks.slice(0, 5));
    expect(rest.every((a) => a.allow)).toBe(true);
    expect(seen).toHaveLength(5);
    expect(v.stats).toMatchObject({ inFlight: 0, queued: 0 });
  });

  it('close() ends a check in flight with a refusal (also with fail-open), never a hang', async () => {
    const v = new WebhookVerifier({ url: `${base}/hold`, failOpen: true, timeoutMs: 10_000, cacheAllowMs: 0, cacheDenyMs: 0, now: Date.now });
    const pending = v.check(req(newKey()));
    await until(() => held.length === 1);
    await v.close();
    expect((await pending).allow).toBe(false);
    expect(v.stats.failedOpen).toBe(0);
  });

  it('coalesces concurrent checks of the same key into one request', async () => {
    const v = verifier('/hold');
    const k = newKey();
    const both = [v.check(req(k)), v.check(req(k))];
    await until(() => held.length === 1);
    held.splice(0)[0]!.end('{"Allow":true}');
    expect((await Promise.all(both)).map((a) => a.allow)).toEqual([true, true]);
    expect(seen).toHaveLength(1);
  });
});
