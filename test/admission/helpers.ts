/** Shared pieces of the admission tests: keys, requests, default settings. */
import { randomBytes } from 'node:crypto';
import type { AdmissionSettings, AdmitRequest } from '../../src/lib/admission/index.js';
import { DEFAULT_CACHE_ALLOW_SECONDS, DEFAULT_CACHE_DENY_SECONDS, DEFAULT_MAX_STALE_SECONDS, DEFAULT_REFRESH_SECONDS, DEFAULT_VERIFY_URL_TIMEOUT_MS, DEFAULT_TAILSCALED_SOCKET } from '../../src/lib/admission/index.js';
import { formatNodePublic } from '../../src/lib/protocol/keys.js';

export interface TestKey {
  key: Buffer;
  text: string;
}

export function newKey(): TestKey {
  const key = randomBytes(32);
  return { key, text: formatNodePublic(key) };
}

export function req(k: TestKey, remoteAddress = '198.51.100.7:41641', mesh = false): AdmitRequest {
  return { key: k.key, keyText: k.text, remoteAddress, mesh };
}

export function settings(over: Partial<AdmissionSettings> = {}): AdmissionSettings {
  return {
    allowKeysFile: null, denyKeysFile: null, allowKeys: [], denyKeys: [],
    verifyClientUrl: null, verifyClientUrlFailOpen: false, verifyClientUrlTimeoutMs: DEFAULT_VERIFY_URL_TIMEOUT_MS,
    cacheAllowSeconds: DEFAULT_CACHE_ALLOW_SECONDS, cacheDenySeconds: DEFAULT_CACHE_DENY_SECONDS,
    verifyClients: false, tailscaledSocket: DEFAULT_TAILSCALED_SOCKET,
    verifyTailnet: null, tailnet: null, apiKeyFile: null, oauthClientFile: null, headscaleUrl: null,
    refreshSeconds: DEFAULT_REFRESH_SECONDS, maxStaleSeconds: DEFAULT_MAX_STALE_SECONDS,
    ...over,
  };
}

/** Polls `cond` every 10 ms until true or `ms` passed (a bound, not a sleep for synchronisation). */
export async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
