/** Numbers that shape certificate handling, with where they come from. */

/** Quiet time after the last change in a watched directory before re-reading (editors and certbot write in several steps). */
export const WATCH_DEBOUNCE_MS = 250;

/** Renew once this fraction of the lifetime has passed (issue 6: two thirds; certbot and Let's Encrypt advise the same). */
export const RENEW_FRACTION = 2 / 3;

/** First retry after a failed issuance/renewal; doubles per failure up to RETRY_MAX_MS, each with ±50 % jitter. */
export const RETRY_BASE_MS = 60_000;
/** Cap of the retry backoff (certmagic retries hourly-ish after a while; 6 h keeps well inside Let's Encrypt's rate limits). */
export const RETRY_MAX_MS = 6 * 60 * 60 * 1000;

/** Node timers fire at once above 2^31-1 ms (~24.8 days): longer waits are chained. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** RFC 8737 §6.2: the ALPN protocol of TLS-ALPN-01 validation connections. */
export const ACME_TLS_ALPN = 'acme-tls/1';

/** A ClientHello bigger than this is not ours to parse (TLS allows 2^24, real ones are < 2 KiB; post-quantum ones ~1.8 KiB). */
export const CLIENT_HELLO_MAX = 16 * 1024;
/** How long a sniffed connection may take to send its full ClientHello. */
export const CLIENT_HELLO_TIMEOUT_MS = 10_000;

/** Let's Encrypt's RFC 8555 directories. */
export const LETS_ENCRYPT_PRODUCTION = 'https://acme-v02.api.letsencrypt.org/directory';
export const LETS_ENCRYPT_STAGING = 'https://acme-staging-v02.api.letsencrypt.org/directory';

/** Private files (keys, certificates) and their directory. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/** Per-request timeout for ACME HTTP calls (axios has none by default). */
export const ACME_HTTP_TIMEOUT_MS = 30_000;
/** Bound of the one connection made to explain a failed ACME request. */
export const ACME_PROBE_TIMEOUT_MS = 5_000;
