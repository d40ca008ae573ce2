/**
 * derper's `--verify-client-url`, wire-compatible (spec §11, `derpserver.go: verifyClient`,
 * `tailcfg.DERPAdmitClientRequest/Response`): `POST <url>` with `{"NodePublic":"nodekey:…","Source":"<ip>"}`
 * and no Content-Type; only HTTP 200 with `{"Allow":true}` admits. Added here: a timeout, bounded
 * concurrency with a bounded wait queue, a short positive and negative cache, and fail-closed by default
 * (`failOpen` admits only when the webhook cannot be reached or times out, as derper's flag does).
 */
import { Agent, Dispatcher1Wrapper, type Dispatcher } from 'undici';
import { AdmissionError, describeError } from '../errors.js';
import {
  DEFAULT_VERIFY_URL_CONCURRENCY, DEFAULT_VERIFY_URL_QUEUE, MAX_CACHE_ENTRIES, VERIFY_URL_MAX_BODY_BYTES,
} from './constants.js';
import type { AdmitRequest, Verifier, VerifierAnswer } from './types.js';
import { deadline, Gate, OverloadedError, readLimited, sourceIp, TtlCache } from './util.js';

export interface WebhookOptions {
  url: string;
  failOpen: boolean;
  timeoutMs: number;
  cacheAllowMs: number;
  cacheDenyMs: number;
  concurrency?: number;
  queue?: number;
  now: () => number;
  /** Default: an undici Agent owned (and closed) by the verifier. */
  dispatcher?: Dispatcher;
}

/** Go's encoding/json matches keys case-insensitively; `Allow` must be a JSON boolean. */
export function parseAdmitResponse(text: string): boolean {
  const v: unknown = JSON.parse(text);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TypeError('not a JSON object');
  let allow: unknown;
  for (const [k, x] of Object.entries(v)) if (k.toLowerCase() === 'allow') allow = x;
  if (allow === undefined || allow === null) return false;
  if (typeof allow !== 'boolean') throw new TypeError('"Allow" is not a boolean');
  return allow;
}

export class WebhookVerifier implements Verifier {
  readonly source = 'webhook' as const;
  private readonly cache: TtlCache<VerifierAnswer>;
  private readonly inflight = new Map<string, Promise<VerifierAnswer>>();
  private readonly gate: Gate;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly shutdown = new AbortController();
  /** Checks refused because the wait queue was full. */
  overloaded = 0;
  /** Checks admitted because the webhook could not be reached (fail-open). */
  failedOpen = 0;

  constructor(private readonly opts: WebhookOptions) {
    this.cache = new TtlCache(MAX_CACHE_ENTRIES, opts.now);
    this.gate = new Gate(opts.concurrency ?? DEFAULT_VERIFY_URL_CONCURRENCY, opts.queue ?? DEFAULT_VERIFY_URL_QUEUE);
    this.ownsDispatcher = opts.dispatcher === undefined;
    // Node's global fetch speaks undici's v1 handler API; undici 8 dispatchers need the adapter.
    this.dispatcher = opts.dispatcher ?? new Dispatcher1Wrapper(new Agent({ connections: opts.concurrency ?? DEFAULT_VERIFY_URL_CONCURRENCY }));
  }

  get stats(): { cached: number; inFlight: number; queued: number; overloaded: number; failedOpen: number } {
    return { cached: this.cache.size, inFlight: this.gate.inFlight, queued: this.gate.queued, overloaded: this.overloaded, failedOpen: this.failedOpen };
  }

  check(req: AdmitRequest): Promise<VerifierAnswer> {
    const ip = sourceIp(req.remoteAddress);
    // The webhook sees the source IP and may decide by it, so answers are per key and IP.
    const id = `${req.keyText} ${ip}`;
    const hit = this.cache.get(id);
    if (hit !== undefined) return Promise.resolve({ allow: hit.allow, reason: `${hit.reason} (cached)` });
    const running = this.inflight.get(id);
    if (running !== undefined) return running;
    const p = this.gate
      .run(() => this.ask(req.keyText, ip))
      .catch((err: unknown): VerifierAnswer => {
        if (err instanceof OverloadedError) {
          this.overloaded++;
          return { allow: false, reason: 'webhook overloaded: too many checks waiting' };
        }
        return { allow: false, reason: `webhook check failed: ${describeError(err)}` };
      })
      .finally(() => this.inflight.delete(id));
    this.inflight.set(id, p);
    return p;
  }

  private async ask(keyText: string, ip: string): Promise<VerifierAnswer> {
    if (this.shutdown.signal.aborted) return { allow: false, reason: 'admission closed' };
    // A Buffer body: fetch adds no Content-Type (derper sends none; a string body would get text/plain).
    const body = Buffer.from(JSON.stringify({ NodePublic: keyText, Source: ip }));
    let res: Response;
    const signal = deadline(this.opts.timeoutMs, this.shutdown.signal);
    try {
      // `dispatcher` is undici's RequestInit extension; Node's typings pin an older undici Dispatcher type.
      res = await fetch(this.opts.url, Object.assign<RequestInit, object>({ method: 'POST', body, signal, redirect: 'manual' }, { dispatcher: this.dispatcher }));
    } catch (err) {
      const why = signal.aborted && !this.shutdown.signal.aborted ? `no answer within ${this.opts.timeoutMs} ms` : describeError(err);
      if (this.opts.failOpen && !this.shutdown.signal.aborted) {
        this.failedOpen++;
        return { allow: true, reason: `webhook unreachable (${why}); fail-open admits` };
      }
      return { allow: false, reason: `webhook unreachable (${why}); fail-closed` };
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined); // the body of a refusal is not needed
      return { allow: false, reason: `webhook answered HTTP ${res.status}` };
    }
    let allow: boolean;
    try {
      allow = parseAdmitResponse(await readLimited(res, VERIFY_URL_MAX_BODY_BYTES, 'webhook'));
    } catch (err) {
      const why = err instanceof AdmissionError ? err.message : `answer is not {"Allow":bool} JSON (${describeError(err)})`;
      return { allow: false, reason: why };
    }
    const answer: VerifierAnswer = allow ? { allow: true, reason: 'webhook allowed' } : { allow: false, reason: 'webhook refused' };
    this.cache.set(`${keyText} ${ip}`, answer, allow ? this.opts.cacheAllowMs : this.opts.cacheDenyMs);
    return answer;
  }

  async close(): Promise<void> {
    this.shutdown.abort();
    this.cache.clear();
    if (this.ownsDispatcher) await this.dispatcher.destroy();
  }
}
