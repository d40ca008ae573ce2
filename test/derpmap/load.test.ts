/** loadDerpMap from URLs (msw intercepts global fetch; one loopback server checks the real dispatcher), files and stdin. */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { http, HttpResponse } from 'msw';
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadDerpMap, MapFetchError, MapValidationError, MAX_MAP_BYTES } from '../../src/lib/derpmap/index.js';

const FIX = resolve(import.meta.dirname, '../fixtures/derpmap');
const TS_MAP = readFileSync(join(FIX, 'tailscale.json'), 'utf8');
const BASE = 'https://maps.test';

const msw = setupServer(
  http.get(`${BASE}/ok`, () => new HttpResponse(TS_MAP, { headers: { 'content-type': 'application/json' } })),
  http.get(`${BASE}/missing`, () => new HttpResponse('no', { status: 404, statusText: 'Not Found' })),
  http.get(`${BASE}/error`, () => new HttpResponse('boom', { status: 500 })),
  http.get(`${BASE}/moved`, () => new HttpResponse(null, { status: 302, headers: { location: '/ok' } })),
  http.get(`${BASE}/loop`, () => new HttpResponse(null, { status: 301, headers: { location: '/loop' } })),
  http.get(`${BASE}/huge`, () => new HttpResponse(`{"Regions": {}, "x": "${'a'.repeat(MAX_MAP_BYTES)}"}`)),
  http.get(`${BASE}/html`, () => new HttpResponse('<!doctype html><html><body>Log in</body></html>', { headers: { 'content-type': 'text/html' } })),
  http.get(`${BASE}/yaml`, () => new HttpResponse(readFileSync(join(FIX, 'seed.yaml'), 'utf8'), { headers: { 'content-type': 'application/yaml' } })),
  // Never answers: resolves only when the request is aborted (the loader's timeout).
  http.get(`${BASE}/slow`, ({ request }) => new Promise<Response>((res) => request.signal.addEventListener('abort', () => res(new HttpResponse('late'))))),
);

beforeAll(() => msw.listen({ onUnhandledFrame: 'error' }));
afterEach(() => msw.resetHandlers());
afterAll(() => msw.close());

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
}

describe('loadDerpMap from a URL', () => {
  it('fetches and parses a 200 response', async () => {
    const r = await loadDerpMap(`${BASE}/ok`);
    expect(r.source).toBe(`${BASE}/ok`);
    expect(r.format).toBe('tailscale');
    expect(Object.keys(r.map.regions)).toEqual(['1', '4', '900']);
  });

  it('follows redirects, boundedly', async () => {
    expect((await loadDerpMap(`${BASE}/moved`)).format).toBe('tailscale');
    const err = await rejection(loadDerpMap(`${BASE}/loop`, { maxRedirects: 3 }));
    expect(err).toBeInstanceOf(MapFetchError);
    expect((err as Error).message).toBe(`${BASE}/loop: too many redirects (more than 3)`);
  });

  it('names the URL and the status for non-200 answers', async () => {
    const e404 = await rejection(loadDerpMap(`${BASE}/missing`));
    expect(e404).toBeInstanceOf(MapFetchError);
    expect((e404 as MapFetchError).status).toBe(404);
    expect((e404 as Error).message).toBe(`${BASE}/missing: HTTP 404 Not Found; expected 200`);
    expect(((await rejection(loadDerpMap(`${BASE}/error`))) as MapFetchError).status).toBe(500);
  });

  it('stops at the body limit', async () => {
    const err = await rejection(loadDerpMap(`${BASE}/huge`));
    expect(err).toBeInstanceOf(MapFetchError);
    expect((err as Error).message).toContain(`larger than ${MAX_MAP_BYTES} bytes`);
  });

  it('times out', async () => {
    const err = await rejection(loadDerpMap(`${BASE}/slow`, { timeoutMs: 50 }));
    expect(err).toBeInstanceOf(MapFetchError);
    expect((err as Error).message).toBe(`${BASE}/slow: timed out after 50 ms`);
  });

  it('rethrows the caller’s abort reason', async () => {
    const ac = new AbortController();
    const p = rejection(loadDerpMap(`${BASE}/slow`, { signal: ac.signal }));
    const reason = new Error('stop');
    ac.abort(reason);
    expect(await p).toBe(reason);
  });

  it('says what came back when it is not a map', async () => {
    const err = await rejection(loadDerpMap(`${BASE}/html`));
    expect(err).toBeInstanceOf(MapValidationError);
    expect((err as MapValidationError).issues.map((i) => i.message).join('\n')).toContain('Content-Type "text/html"');
  });

  it('auto-detects YAML from a URL too', async () => {
    expect((await loadDerpMap(`${BASE}/yaml`)).format).toBe('yaml');
  });
});

describe('loadDerpMap over a real loopback socket (the undici dispatcher with global fetch)', () => {
  let server: Server;
  let url: string;
  beforeAll(async () => {
    msw.close(); // let this request reach the socket
    server = createServer((req, res) => {
      if (req.url === '/r') res.writeHead(307, { location: '/map' }).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end(TS_MAP);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    msw.listen({ onUnhandledFrame: 'error' });
  });

  it('fetches through a redirect', async () => {
    const r = await loadDerpMap(`${url}/r`);
    expect(r.map.regions[900]!.nodes).toHaveLength(3);
  });
});

describe('loadDerpMap from files and stdin', () => {
  it('reads a path and a file: URL', async () => {
    const p = join(FIX, 'seed.json');
    expect((await loadDerpMap(p)).source).toBe(p);
    expect((await loadDerpMap(pathToFileURL(p).href)).format).toBe('seed');
  });

  it('reads stdin ("-")', async () => {
    const r = await loadDerpMap('-', { stdin: Readable.from([Buffer.from(TS_MAP)]) });
    expect(r.source).toBe('stdin');
    const err = await rejection(loadDerpMap('-', { stdin: Readable.from(['{']) }));
    expect((err as MapValidationError).issues[0]).toMatchObject({ source: 'stdin', line: 1, column: 2 });
  });

  it('missing files, unsupported schemes, oversized input and bad UTF-8 are typed errors', async () => {
    const missing = await rejection(loadDerpMap(join(FIX, 'nope.json')));
    expect(missing).toBeInstanceOf(MapFetchError);
    expect((missing as Error).message).toContain('ENOENT');
    expect(await rejection(loadDerpMap('ftp://x/y'))).toBeInstanceOf(MapFetchError);
    const big = await rejection(loadDerpMap('-', { stdin: Readable.from([Buffer.alloc(64, 0x20)]), maxBytes: 32 }));
    expect(big).toBeInstanceOf(MapFetchError);
    const bad = await rejection(loadDerpMap('-', { stdin: Readable.from([Buffer.from([0x7b, 0xff, 0x7d])]) }));
    expect((bad as MapValidationError).issues[0]!.message).toContain('UTF-8');
  });

  it('honours a forced format', async () => {
    const err = await rejection(loadDerpMap(join(FIX, 'seed.json'), { format: 'tailscale' }));
    expect(err).toBeInstanceOf(MapValidationError);
  });
});
