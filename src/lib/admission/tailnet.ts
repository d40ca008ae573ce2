/**
 * `--verify-tailnet`: admit the node keys of a tailnet without running tailscaled, from the device list
 * of the Tailscale API or of a Headscale server. The list is refreshed periodically and on a cache miss
 * (at most once per MISS_REFRESH_MIN_SECONDS); the last good list is used while the API fails, for at
 * most `maxStaleMs`; after that, and before the first good list, every key is refused (fail closed).
 *
 * Calls (exactly these):
 * - Tailscale, API access token: `GET {base}/api/v2/tailnet/{tailnet}/devices?fields=all`, `Authorization: Bearer <token>`.
 * - Tailscale, OAuth client: `POST {base}/api/v2/oauth/token` (form: grant_type=client_credentials,
 *   client_id, client_secret, scope=devices:core:read) → `access_token` (renewed before `expires_in`),
 *   then the devices call with it.
 * - Headscale: `GET {url}/api/v1/node`, `Authorization: Bearer <api key>`.
 * Credentials are read from their files at every refresh (rotation needs no restart) and never logged.
 */
import { readFile } from 'node:fs/promises';
import { Agent, Dispatcher1Wrapper, type Dispatcher } from 'undici';
import { AdmissionError, describeError } from '../errors.js';
import type { Logger } from '../util/logger.js';
import {
  MISS_REFRESH_MIN_SECONDS, TAILNET_MAX_BODY_BYTES, TAILNET_TIMEOUT_MS, TAILSCALE_API_BASE, TAILSCALE_DEVICES_SCOPE, TOKEN_RENEW_MARGIN_SECONDS,
} from './constants.js';
import { canonicalKey, nodeKeyProblem } from './keylist.js';
import type { AdmitRequest, TailnetKind, Verifier, VerifierAnswer } from './types.js';
import { deadline, readLimited } from './util.js';

export interface TailnetOptions {
  kind: TailnetKind;
  /** Tailscale: tailnet name ("-" = the credential's own). */
  tailnet?: string | null;
  apiKeyFile?: string | null;
  oauthClientFile?: string | null;
  headscaleUrl?: string | null;
  refreshMs: number;
  maxStaleMs: number;
  missRefreshMinMs?: number;
  timeoutMs?: number;
  /** Tailscale API base (tests, or a proxy); default https://api.tailscale.com. */
  apiBase?: string;
  now: () => number;
  logger: Logger;
  dispatcher?: Dispatcher;
}

interface OAuthClient {
  clientId: string;
  clientSecret: string;
}

async function readSecret(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = (await readFile(file, 'utf8')).trim();
  } catch (err) {
    throw new AdmissionError('tailnet', `cannot read the ${what} file ${file}: ${describeError(err)}`, { cause: err });
  }
  if (text === '') throw new AdmissionError('tailnet', `the ${what} file ${file} is empty`);
  return text;
}

/** `{"clientId","clientSecret"}` (or client_id/client_secret). */
export function parseOAuthClient(text: string, file: string): OAuthClient {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new AdmissionError('tailnet', `${file}: OAuth client file is not JSON ({"clientId": "…", "clientSecret": "…"})`);
  }
  const o = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  const clientId = o.clientId ?? o.client_id;
  const clientSecret = o.clientSecret ?? o.client_secret;
  if (typeof clientId !== 'string' || clientId === '' || typeof clientSecret !== 'string' || clientSecret === '') {
    throw new AdmissionError('tailnet', `${file}: OAuth client file needs string fields "clientId" and "clientSecret"`);
  }
  return { clientId, clientSecret };
}

/** Node keys from a device list answer; devices not authorized (`authorized: false`) are left out. */
export function keysOfDevices(kind: TailnetKind, body: unknown): { keys: Set<string>; skipped: number } {
  const listName = kind === 'tailscale' ? 'devices' : 'nodes';
  const list = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[listName] : undefined;
  if (!Array.isArray(list)) throw new AdmissionError('tailnet', `${kind} answer has no "${listName}" list`);
  const keys = new Set<string>();
  let skipped = 0;
  for (const d of list as unknown[]) {
    const o = (typeof d === 'object' && d !== null ? d : {}) as Record<string, unknown>;
    // Tailscale: `nodeKey`; Headscale's REST gateway uses proto names (`node_key`), some versions `nodeKey`.
    const k = o.nodeKey ?? o.node_key;
    if (typeof k !== 'string' || nodeKeyProblem(k) !== null || o.authorized === false) {
      skipped++;
      continue;
    }
    keys.add(canonicalKey(k));
  }
  return { keys, skipped };
}

export class TailnetVerifier implements Verifier {
  readonly source = 'tailnet' as const;
  private keys = new Set<string>();
  private lastSuccess: number | null = null;
  private lastAttempt = -Infinity;
  private lastError: string | null = null;
  private refreshing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private token: { value: string; until: number } | null = null;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly shutdown = new AbortController();
  refreshes = 0;
  failures = 0;

  constructor(private readonly opts: TailnetOptions) {
    this.ownsDispatcher = opts.dispatcher === undefined;
    this.dispatcher = opts.dispatcher ?? new Dispatcher1Wrapper(new Agent());
  }

  /** First fetch (awaited) and the refresh timer. A failed first fetch is logged, not thrown: admission fails closed. */
  async start(): Promise<void> {
    this.timer = setInterval(() => void this.refresh(), this.opts.refreshMs);
    this.timer.unref();
    await this.refresh();
  }

  get stats(): { keys: number; lastSuccess: number | null; lastError: string | null; stale: boolean; refreshes: number; failures: number } {
    return { keys: this.keys.size, lastSuccess: this.lastSuccess, lastError: this.lastError, stale: !this.fresh(), refreshes: this.refreshes, failures: this.failures };
  }

  private fresh(): boolean {
    return this.lastSuccess !== null && this.opts.now() - this.lastSuccess <= this.opts.maxStaleMs;
  }

  async check(req: AdmitRequest): Promise<VerifierAnswer> {
    if (this.fresh() && this.keys.has(req.keyText)) return { allow: true, reason: `in the ${this.opts.kind} device list` };
    // A miss (or no usable list): refresh, boundedly, and look again — a device that just joined gets in.
    const minGap = this.opts.missRefreshMinMs ?? MISS_REFRESH_MIN_SECONDS * 1000;
    if (this.refreshing !== null) await this.refreshing;
    else if (this.opts.now() - this.lastAttempt >= minGap) await this.refresh();
    if (!this.fresh()) {
      const why = this.lastSuccess === null
        ? `no ${this.opts.kind} device list yet${this.lastError === null ? '' : ` (${this.lastError})`}`
        : `${this.opts.kind} device list is stale (last good ${Math.round((this.opts.now() - this.lastSuccess) / 1000)} s ago)`;
      return { allow: false, reason: `${why}; fail-closed` };
    }
    return this.keys.has(req.keyText) ? { allow: true, reason: `in the ${this.opts.kind} device list` } : { allow: false, reason: `not in the ${this.opts.kind} device list` };
  }

  /** Fetches the list now (coalesced with a running fetch). Never throws; failures keep the old list. */
  refresh(): Promise<void> {
    if (this.refreshing !== null) return this.refreshing;
    this.lastAttempt = this.opts.now();
    const p = this.fetchKeys()
      .then(({ keys, skipped }) => {
        const before = this.keys.size;
        this.keys = keys;
        this.lastSuccess = this.opts.now();
        this.lastError = null;
        this.refreshes++;
        if (keys.size !== before || this.refreshes === 1) this.opts.logger.log('info', 'tailnet device list loaded', { kind: this.opts.kind, keys: keys.size, skipped });
      })
      .catch((err: unknown) => {
        this.failures++;
        this.lastError = describeError(err);
        this.opts.logger.log('warn', 'tailnet device list refresh failed, keeping the last good list', {
          kind: this.opts.kind, reason: this.lastError, keys: this.keys.size, stale: !this.fresh(),
        });
      })
      .finally(() => {
        this.refreshing = null;
      });
    this.refreshing = p;
    return p;
  }

  private async getJson(url: string, init: RequestInit, what: string): Promise<unknown> {
    const timeoutMs = this.opts.timeoutMs ?? TAILNET_TIMEOUT_MS;
    const signal = deadline(timeoutMs, this.shutdown.signal);
    let res: Response;
    try {
      res = await fetch(url, Object.assign<RequestInit, object>({ ...init, signal, redirect: 'manual' }, { dispatcher: this.dispatcher }));
    } catch (err) {
      throw new AdmissionError('tailnet', `${what}: ${signal.aborted ? `no answer within ${timeoutMs} ms` : describeError(err)}`, { cause: err });
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined); // an error body may echo request details; not read
      if (res.status === 401 || res.status === 403) this.token = null;
      throw new AdmissionError('tailnet', `${what}: HTTP ${res.status}${res.status === 401 || res.status === 403 ? ' (check the credential and its scope)' : ''}`, { status: res.status });
    }
    const text = await readLimited(res, TAILNET_MAX_BODY_BYTES, 'tailnet');
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new AdmissionError('tailnet', `${what}: answer is not JSON`, { cause: err });
    }
  }

  private async fetchKeys(): Promise<{ keys: Set<string>; skipped: number }> {
    const o = this.opts;
    if (o.kind === 'headscale') {
      const key = await readSecret(o.apiKeyFile ?? '', 'Headscale API key');
      const base = (o.headscaleUrl ?? '').replace(/\/+$/, '');
      const body = await this.getJson(`${base}/api/v1/node`, { headers: { authorization: `Bearer ${key}`, accept: 'application/json' } }, 'Headscale GET /api/v1/node');
      return keysOfDevices('headscale', body);
    }
    const base = (o.apiBase ?? TAILSCALE_API_BASE).replace(/\/+$/, '');
    const token = await this.bearer(base);
    const path = `/api/v2/tailnet/${encodeURIComponent(o.tailnet ?? '-')}/devices?fields=all`;
    const body = await this.getJson(`${base}${path}`, { headers: { authorization: `Bearer ${token}`, accept: 'application/json' } }, `Tailscale GET ${path}`);
    return keysOfDevices('tailscale', body);
  }

  private async bearer(base: string): Promise<string> {
    const o = this.opts;
    if (o.apiKeyFile) return readSecret(o.apiKeyFile, 'Tailscale API access token');
    if (this.token !== null && this.token.until > o.now()) return this.token.value;
    const file = o.oauthClientFile ?? '';
    const client = parseOAuthClient(await readSecret(file, 'OAuth client'), file);
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret, scope: TAILSCALE_DEVICES_SCOPE });
    const body = await this.getJson(`${base}/api/v2/oauth/token`, { method: 'POST', body: form, headers: { accept: 'application/json' } }, 'Tailscale POST /api/v2/oauth/token');
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    if (typeof b.access_token !== 'string' || b.access_token === '') throw new AdmissionError('tailnet', 'OAuth token answer has no access_token');
    const expiresIn = typeof b.expires_in === 'number' && b.expires_in > 0 ? b.expires_in : 3600;
    this.token = { value: b.access_token, until: o.now() + Math.max(0, expiresIn - TOKEN_RENEW_MARGIN_SECONDS) * 1000 };
    return this.token.value;
  }

  async close(): Promise<void> {
    this.shutdown.abort();
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.refreshing;
    if (this.ownsDispatcher) await this.dispatcher.destroy();
  }
}
