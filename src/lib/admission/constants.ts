/** Numbers that shape admission, each with where it comes from. */

/** derper's admission-URL timeout (`derpserver.go: verifyClient`, `context.WithTimeout(ctx, 5*time.Second)`). */
export const DEFAULT_VERIFY_URL_TIMEOUT_MS = 5_000;
/** derper reads at most 4 KiB of the admission answer (`io.LimitReader(res.Body, 4<<10)`). */
export const VERIFY_URL_MAX_BODY_BYTES = 4 << 10;
/** Webhook requests in flight at once; derper has no bound (one per connecting client). */
export const DEFAULT_VERIFY_URL_CONCURRENCY = 16;
/** Checks that may wait for a webhook slot; beyond this a check is refused as "overloaded". */
export const DEFAULT_VERIFY_URL_QUEUE = 256;
/** How long a webhook "Allow: true" is reused for the same key (ours; derper asks every time). */
export const DEFAULT_CACHE_ALLOW_SECONDS = 60;
/** How long a webhook "Allow: false" (or non-200) is reused for the same key; short, so a fix takes effect soon. */
export const DEFAULT_CACHE_DENY_SECONDS = 10;
/** Keys remembered per cache; the oldest entry is dropped first (bounds memory under a key-churn flood). */
export const MAX_CACHE_ENTRIES = 10_000;

/** tailscaled's LocalAPI socket on Linux (`paths.DefaultTailscaledSocket`). */
export const DEFAULT_TAILSCALED_SOCKET = '/var/run/tailscale/tailscaled.sock';
/** The Host tailscaled's LocalAPI expects (`client/local: apitype.LocalAPIHost`). */
export const LOCALAPI_HOST = 'local-tailscaled.sock';
/** LocalAPI whois calls in flight at once. */
export const TAILSCALED_CONCURRENCY = 8;
/** LocalAPI call timeout: a local socket answers in milliseconds; 5 s as for the webhook. */
export const TAILSCALED_TIMEOUT_MS = 5_000;
/** LocalAPI answers read at most this much (a whois answer is a few KiB). */
export const TAILSCALED_MAX_BODY_BYTES = 1 << 20;

export const TAILSCALE_API_BASE = 'https://api.tailscale.com';
/** The OAuth scope that allows listing devices (Tailscale "trust credentials" scopes). */
export const TAILSCALE_DEVICES_SCOPE = 'devices:core:read';
/** Device list refresh period. */
export const DEFAULT_REFRESH_SECONDS = 60;
/** The last good device list is used for at most this long while the API fails; then admission fails closed. */
export const DEFAULT_MAX_STALE_SECONDS = 15 * 60;
/** A key not in the device list triggers a refresh at most this often (a new device is admitted within this). */
export const MISS_REFRESH_MIN_SECONDS = 10;
/** Device-list and token requests time out after this long. */
export const TAILNET_TIMEOUT_MS = 10_000;
/** Device-list answers larger than this are refused (≈ 100,000 devices with fields=all would not fit; fine). */
export const TAILNET_MAX_BODY_BYTES = 64 << 20;
/** An OAuth access token is renewed this long before it expires (Tailscale tokens live one hour). */
export const TOKEN_RENEW_MARGIN_SECONDS = 60;

/** Debounce for re-reading key files after fs.watch events (editors write in several steps). */
export const LIST_WATCH_DEBOUNCE_MS = 200;
/** A key list file larger than this is refused (≈ 14,000 keys per MiB). */
export const MAX_KEY_LIST_BYTES = 16 << 20;
