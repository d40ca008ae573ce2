/** The admission webhook through msw (a remote HTTPS endpoint): request shape, answers, errors, fail-open. */
import { http, HttpResponse } from 'msw';
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAdmission, type Admission } from '../../src/lib/admission/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { newKey, req, settings } from './helpers.js';

const URL_ = 'https://admit.example.com/derp/verify';
const requests: { body: string; contentType: string | null }[] = [];

const msw = setupServer(
  http.post(URL_, async ({ request }) => {
    const body = await request.text();
    requests.push({ body, contentType: request.headers.get('content-type') });
    const { NodePublic } = JSON.parse(body) as { NodePublic: string };
    return HttpResponse.json({ Allow: NodePublic.endsWith('a') || NodePublic.endsWith('b') });
  }),
  http.post('https://admit.example.com/error', () => HttpResponse.error()),
  http.post('https://admit.example.com/503', () => new HttpResponse('busy', { status: 503 })),
);
beforeAll(() => msw.listen({ onUnhandledFrame: 'error' }));
afterAll(() => msw.close());

let open: Admission[] = [];
afterEach(async () => {
  await Promise.all(open.map((a) => a.close()));
  open = [];
  requests.length = 0;
});

async function make(over: Parameters<typeof settings>[0]): Promise<Admission> {
  const a = await createAdmission(settings(over), { logger: new MemoryLogger() });
  open.push(a);
  return a;
}

function keyEnding(chars: string): ReturnType<typeof newKey> {
  for (;;) {
    const k = newKey();
    if (chars.includes(k.text.at(-1)!)) return k;
  }
}

describe('webhook via msw', () => {
  it('asks with the derper body and no Content-Type; the answer decides', async () => {
    const a = await make({ verifyClientUrl: URL_ });
    const yes = keyEnding('ab');
    const no = keyEnding('0123456789cdef');
    expect(await a.check(req(yes, '192.0.2.1:1000'))).toEqual({ allow: true, source: 'webhook', reason: 'webhook allowed' });
    expect(await a.check(req(no, '192.0.2.1:1000'))).toEqual({ allow: false, source: 'webhook', reason: 'webhook refused' });
    expect(requests[0]).toEqual({ body: `{"NodePublic":"${yes.text}","Source":"192.0.2.1"}`, contentType: null });
    expect(a.stats().decisions.webhook).toEqual({ allow: 1, deny: 1 });
  });

  it('a network error refuses unless fail-open; an HTTP error refuses even with fail-open', async () => {
    const closed = await make({ verifyClientUrl: 'https://admit.example.com/error' });
    expect(await closed.check(req(newKey()))).toMatchObject({ allow: false, source: 'webhook' });
    const opened = await make({ verifyClientUrl: 'https://admit.example.com/error', verifyClientUrlFailOpen: true });
    expect(await opened.check(req(newKey()))).toMatchObject({ allow: true, source: 'webhook' });
    expect(opened.stats().webhook?.failedOpen).toBe(1);
    const busy = await make({ verifyClientUrl: 'https://admit.example.com/503', verifyClientUrlFailOpen: true });
    expect(await busy.check(req(newKey()))).toEqual({ allow: false, source: 'webhook', reason: 'webhook answered HTTP 503' });
  });

  it('reload with the same webhook settings keeps the cache; changed settings start afresh', async () => {
    const s = settings({ verifyClientUrl: URL_ });
    const a = await make(s);
    const k = keyEnding('ab');
    await a.check(req(k));
    await a.reload({ ...s });
    expect((await a.check(req(k))).reason).toBe('webhook allowed (cached)');
    await a.reload({ ...s, cacheAllowSeconds: 30 });
    expect((await a.check(req(k))).reason).toBe('webhook allowed');
    expect(requests).toHaveLength(2);
  });
});
