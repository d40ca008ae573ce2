/** The admission interface the relay calls after ClientInfo and before ServerInfo. */

export interface AdmitRequest {
  /** The client's 32-byte node public key. */
  key: Buffer;
  /** The same key as `nodekey:<64 hex>`. */
  keyText: string;
  /** The client's address: `ip`, `ip:port` or `[ipv6]:port`. */
  remoteAddress: string;
  /** The client presented the right mesh key (a mesh peer: always admitted). */
  mesh: boolean;
}

export const ADMIT_SOURCES = ['mesh', 'deny-list', 'allow-list', 'tailscaled', 'tailnet', 'webhook', 'default'] as const;
export type AdmitSource = (typeof ADMIT_SOURCES)[number];

export interface AdmitDecision {
  allow: boolean;
  /** Which check decided. */
  source: AdmitSource;
  /** Why, in a few words (logged; never a credential). */
  reason: string;
}

export const TAILNET_KINDS = ['tailscale', 'headscale'] as const;
export type TailnetKind = (typeof TAILNET_KINDS)[number];

/** The `admission.*` config group, fully defaulted (ServeConfig['admission']). */
export interface AdmissionSettings {
  /** `nodekey:` per line; null = none. */
  allowKeysFile: string | null;
  denyKeysFile: string | null;
  /** Inline lists from the config file (`nodekey:<64 hex>` each). */
  allowKeys: string[];
  denyKeys: string[];
  /** derper-compatible admission webhook; null = none. */
  verifyClientUrl: string | null;
  /** Admit when the webhook cannot be reached or times out (derper's flag; here default false). */
  verifyClientUrlFailOpen: boolean;
  verifyClientUrlTimeoutMs: number;
  cacheAllowSeconds: number;
  cacheDenySeconds: number;
  /** Ask the local tailscaled whether the key is a peer. */
  verifyClients: boolean;
  tailscaledSocket: string;
  /** Admit the node keys of a tailnet (Tailscale API or Headscale); null = off. */
  verifyTailnet: TailnetKind | null;
  /** Tailscale: the tailnet name ("-" = the credential's own tailnet). */
  tailnet: string | null;
  /** File holding a Tailscale API access token or a Headscale API key. */
  apiKeyFile: string | null;
  /** File holding Tailscale OAuth client credentials (JSON `{"clientId","clientSecret"}`). */
  oauthClientFile: string | null;
  /** Headscale server base URL. */
  headscaleUrl: string | null;
  refreshSeconds: number;
  maxStaleSeconds: number;
}

/** Decisions by source and result, for `derp_admission_decisions_total{source,result}`. */
export type DecisionCounts = Record<AdmitSource, { allow: number; deny: number }>;

export interface AdmissionStats {
  decisions: DecisionCounts;
  lists: { allowKeys: number; denyKeys: number; allowListPresent: boolean };
  webhook: { cached: number; inFlight: number; queued: number; overloaded: number; failedOpen: number } | null;
  tailscaled: { inFlight: number; queued: number } | null;
  tailnet: { keys: number; lastSuccess: number | null; lastError: string | null; stale: boolean; refreshes: number; failures: number } | null;
}

/** What one verifier (tailscaled, tailnet, webhook) answers. */
export interface VerifierAnswer {
  allow: boolean;
  reason: string;
}

export interface Verifier {
  readonly source: 'tailscaled' | 'tailnet' | 'webhook';
  check(req: AdmitRequest): Promise<VerifierAnswer>;
  close(): Promise<void>;
}
