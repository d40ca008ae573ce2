/**
 * Who may connect. One check, in a fixed order (README "Admission"):
 *   1. mesh peers (right mesh key) → admitted;
 *   2. deny list → refused (deny wins over everything but mesh);
 *   3. allow list → admitted without asking anyone;
 *   4. the verifiers configured, in the order tailscaled → tailnet → webhook: each must admit (as in
 *      derper, where tailscaled and the URL must both pass); the first refusal decides;
 *   5. nothing decided: refused when an allow list is present (it is then the only way in), else admitted.
 * Every decision is counted by source and result and logged with the short key and the remote address.
 */
import type { Dispatcher } from 'undici';
import { ConfigError, describeError } from '../errors.js';
import { shortKey } from '../protocol/keys.js';
import type { Logger } from '../util/logger.js';
import { canonicalKey } from './keylist.js';
import { StaticLists } from './lists.js';
import { TailnetVerifier } from './tailnet.js';
import { TailscaledVerifier } from './tailscaled.js';
import { ADMIT_SOURCES, type AdmissionSettings, type AdmissionStats, type AdmitDecision, type AdmitRequest, type DecisionCounts, type Verifier } from './types.js';
import { WebhookVerifier } from './webhook.js';

export interface AdmissionDeps {
  logger: Logger;
  now?: () => number;
  /** Tests: the HTTP dispatcher for the webhook and the tailnet API (default: an undici Agent each). */
  dispatcher?: Dispatcher;
  /** Tests or a proxy: the Tailscale API base URL (default https://api.tailscale.com). */
  tailscaleApiBase?: string;
}

type Slot = 'tailscaled' | 'tailnet' | 'webhook';
const SLOTS: readonly Slot[] = ['tailscaled', 'tailnet', 'webhook'];

interface Installed {
  signature: string;
  verifier: Verifier;
}

/** Settings problems a hand-built AdmissionSettings could have (the config resolver reports them per field). */
export function admissionSettingsProblems(s: AdmissionSettings): string[] {
  const p: string[] = [];
  if (s.verifyTailnet === 'tailscale') {
    if (!s.tailnet) p.push('verifyTailnet tailscale needs tailnet');
    if ((s.apiKeyFile === null) === (s.oauthClientFile === null)) p.push('verifyTailnet tailscale needs exactly one of apiKeyFile, oauthClientFile');
  }
  if (s.verifyTailnet === 'headscale') {
    if (!s.headscaleUrl) p.push('verifyTailnet headscale needs headscaleUrl');
    if (s.apiKeyFile === null) p.push('verifyTailnet headscale needs apiKeyFile');
  }
  return p;
}

function emptyCounts(): DecisionCounts {
  const c = {} as DecisionCounts;
  for (const s of ADMIT_SOURCES) c[s] = { allow: 0, deny: 0 };
  return c;
}

export class Admission {
  private readonly counts = emptyCounts();
  private verifiers: Partial<Record<Slot, Installed>> = {};
  private chain: Verifier[] = [];
  private closed = false;

  private constructor(
    private lists: StaticLists,
    private readonly deps: AdmissionDeps & { now: () => number },
  ) {}

  /** Builds the sources (reads the key files, fetches the tailnet list once); throws KeyListError / ConfigError. */
  static async create(settings: AdmissionSettings, deps: AdmissionDeps): Promise<Admission> {
    const problems = admissionSettingsProblems(settings);
    if (problems.length > 0) throw new ConfigError(`admission: ${problems.join('; ')}`);
    const a = new Admission(await StaticLists.load(settings, deps.logger), { ...deps, now: deps.now ?? Date.now });
    await a.installVerifiers(settings);
    return a;
  }

  private signatureOf(slot: Slot, s: AdmissionSettings): string | null {
    switch (slot) {
      case 'tailscaled':
        return s.verifyClients ? JSON.stringify([s.tailscaledSocket]) : null;
      case 'tailnet':
        return s.verifyTailnet === null ? null : JSON.stringify([s.verifyTailnet, s.tailnet, s.apiKeyFile, s.oauthClientFile, s.headscaleUrl, s.refreshSeconds, s.maxStaleSeconds]);
      case 'webhook':
        return s.verifyClientUrl === null
          ? null
          : JSON.stringify([s.verifyClientUrl, s.verifyClientUrlFailOpen, s.verifyClientUrlTimeoutMs, s.cacheAllowSeconds, s.cacheDenySeconds]);
    }
  }

  private async build(slot: Slot, s: AdmissionSettings): Promise<Verifier> {
    const { logger, now, dispatcher } = this.deps;
    switch (slot) {
      case 'tailscaled':
        return new TailscaledVerifier({ socketPath: s.tailscaledSocket });
      case 'tailnet': {
        const t = new TailnetVerifier({
          kind: s.verifyTailnet ?? 'tailscale', tailnet: s.tailnet, apiKeyFile: s.apiKeyFile, oauthClientFile: s.oauthClientFile, headscaleUrl: s.headscaleUrl,
          refreshMs: s.refreshSeconds * 1000, maxStaleMs: s.maxStaleSeconds * 1000, now, logger, dispatcher, apiBase: this.deps.tailscaleApiBase,
        });
        await t.start();
        return t;
      }
      case 'webhook':
        return new WebhookVerifier({
          url: s.verifyClientUrl ?? '', failOpen: s.verifyClientUrlFailOpen, timeoutMs: s.verifyClientUrlTimeoutMs,
          cacheAllowMs: s.cacheAllowSeconds * 1000, cacheDenyMs: s.cacheDenySeconds * 1000, now, dispatcher,
        });
    }
  }

  /** Keeps a verifier whose settings did not change (its cache and device list survive a reload). */
  private async installVerifiers(s: AdmissionSettings): Promise<void> {
    const next: Partial<Record<Slot, Installed>> = {};
    const retired: Verifier[] = [];
    for (const slot of SLOTS) {
      const sig = this.signatureOf(slot, s);
      const cur = this.verifiers[slot];
      if (cur !== undefined && cur.signature === sig) next[slot] = cur;
      else {
        if (cur !== undefined) retired.push(cur.verifier);
        if (sig !== null) next[slot] = { signature: sig, verifier: await this.build(slot, s) };
      }
    }
    this.verifiers = next;
    this.chain = SLOTS.flatMap((slot) => (next[slot] === undefined ? [] : [next[slot].verifier]));
    await Promise.all(retired.map((v) => v.close().catch((err: unknown) => this.deps.logger.log('warn', 'closing an admission source failed', { source: v.source, reason: describeError(err) }))));
  }

  /** The decision for one connecting client: synchronous when the lists decide, else a promise. Never rejects. */
  check(req: AdmitRequest): AdmitDecision | Promise<AdmitDecision> {
    if (this.closed) return this.decide(req, { allow: false, source: 'default', reason: 'admission closed' });
    if (req.mesh) return this.decide(req, { allow: true, source: 'mesh', reason: 'mesh peer' });
    const key = canonicalKey(req.keyText);
    if (this.lists.isDenied(key)) return this.decide(req, { allow: false, source: 'deny-list', reason: 'on the deny list' });
    if (this.lists.isAllowed(key)) return this.decide(req, { allow: true, source: 'allow-list', reason: 'on the allow list' });
    if (this.chain.length === 0) {
      return this.lists.allowListPresent
        ? this.decide(req, { allow: false, source: 'allow-list', reason: 'not on the allow list' })
        : this.decide(req, { allow: true, source: 'default', reason: 'no admission checks configured' });
    }
    return this.verify(key === req.keyText ? req : { ...req, keyText: key });
  }

  private async verify(req: AdmitRequest): Promise<AdmitDecision> {
    const chain = this.chain;
    let last: AdmitDecision = { allow: false, source: 'default', reason: 'no verifier answered' };
    for (const v of chain) {
      let d: AdmitDecision;
      try {
        const a = await v.check(req);
        d = { allow: a.allow, source: v.source, reason: a.reason };
      } catch (err) {
        d = { allow: false, source: v.source, reason: `check failed: ${describeError(err)}` };
      }
      if (!d.allow) return this.decide(req, d);
      last = d;
    }
    return this.decide(req, last);
  }

  private decide(req: AdmitRequest, d: AdmitDecision): AdmitDecision {
    this.counts[d.source][d.allow ? 'allow' : 'deny']++;
    // Admissions are per-client events (debug, like "client connected"): at info every handshake wrote a
    // line. Refusals are warnings, and the logger counts repeats instead of writing them.
    this.deps.logger.log(d.allow ? 'debug' : 'warn', d.allow ? 'client admitted' : 'client refused', {
      key: shortKey(req.key), remote: req.remoteAddress, source: d.source, reason: d.reason,
    });
    return d;
  }

  /**
   * New settings (SIGHUP): lists re-read, verifiers whose settings changed rebuilt. On a bad list this
   * throws (KeyListError) and nothing changes. Clients already admitted are not re-checked.
   */
  async reload(settings: AdmissionSettings): Promise<void> {
    const problems = admissionSettingsProblems(settings);
    if (problems.length > 0) throw new ConfigError(`admission: ${problems.join('; ')}`);
    await this.lists.reload(settings);
    await this.installVerifiers(settings);
  }

  /** Counters since start (never reset by reloads) and the sources' state. */
  stats(): AdmissionStats {
    const w = this.verifiers.webhook?.verifier;
    const ts = this.verifiers.tailscaled?.verifier;
    const tn = this.verifiers.tailnet?.verifier;
    const decisions = {} as DecisionCounts;
    for (const s of ADMIT_SOURCES) decisions[s] = { ...this.counts[s] };
    return {
      decisions,
      lists: { ...this.lists.sizes, allowListPresent: this.lists.allowListPresent },
      webhook: w instanceof WebhookVerifier ? w.stats : null,
      tailscaled: ts instanceof TailscaledVerifier ? ts.stats : null,
      tailnet: tn instanceof TailnetVerifier ? tn.stats : null,
    };
  }

  /** For tests: the static lists (change listener). */
  get staticLists(): StaticLists {
    return this.lists;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lists.close();
    const all = this.chain;
    this.chain = [];
    this.verifiers = {};
    await Promise.all(all.map((v) => v.close()));
  }
}

/** Builds the admission check from the `admission` config group. */
export function createAdmission(settings: AdmissionSettings, deps: AdmissionDeps): Promise<Admission> {
  return Admission.create(settings, deps);
}
