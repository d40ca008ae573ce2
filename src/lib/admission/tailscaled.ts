/**
 * derper's `--verify-clients`: ask the local tailscaled over its LocalAPI unix socket whether the key is
 * a peer (`derpserver.go: verifyClient` → `local.Client.WhoIsNodeKey`): `GET /localapi/v0/whois?addr=nodekey:…`
 * with Host `local-tailscaled.sock` and `Sec-Tailscale: localapi`; 200 = a peer, 404 = not a peer
 * (ErrPeerNotFound). Anything else, or no tailscaled, refuses (fail closed, as derper does).
 */
import { Agent, Dispatcher1Wrapper, type Dispatcher } from 'undici';
import { describeError } from '../errors.js';
import { LOCALAPI_HOST, TAILSCALED_CONCURRENCY, TAILSCALED_MAX_BODY_BYTES, TAILSCALED_TIMEOUT_MS } from './constants.js';
import type { AdmitRequest, Verifier, VerifierAnswer } from './types.js';
import { deadline, Gate, OverloadedError, readLimited } from './util.js';

export interface TailscaledOptions {
  socketPath: string;
  timeoutMs?: number;
  concurrency?: number;
  queue?: number;
}

export class TailscaledVerifier implements Verifier {
  readonly source = 'tailscaled' as const;
  private readonly dispatcher: Dispatcher;
  private readonly gate: Gate;
  private readonly inflight = new Map<string, Promise<VerifierAnswer>>();
  private readonly shutdown = new AbortController();
  private readonly timeoutMs: number;

  constructor(private readonly opts: TailscaledOptions) {
    const concurrency = opts.concurrency ?? TAILSCALED_CONCURRENCY;
    this.gate = new Gate(concurrency, opts.queue ?? concurrency * 32);
    this.timeoutMs = opts.timeoutMs ?? TAILSCALED_TIMEOUT_MS;
    this.dispatcher = new Dispatcher1Wrapper(new Agent({ connect: { socketPath: opts.socketPath }, connections: concurrency }));
  }

  get stats(): { inFlight: number; queued: number } {
    return { inFlight: this.gate.inFlight, queued: this.gate.queued };
  }

  check(req: AdmitRequest): Promise<VerifierAnswer> {
    const running = this.inflight.get(req.keyText);
    if (running !== undefined) return running;
    const p = this.gate
      .run(() => this.whois(req.keyText))
      .catch((err: unknown): VerifierAnswer => ({ allow: false, reason: err instanceof OverloadedError ? 'tailscaled overloaded: too many checks waiting' : `tailscaled check failed: ${describeError(err)}` }))
      .finally(() => this.inflight.delete(req.keyText));
    this.inflight.set(req.keyText, p);
    return p;
  }

  private async whois(keyText: string): Promise<VerifierAnswer> {
    const url = `http://${LOCALAPI_HOST}/localapi/v0/whois?addr=${encodeURIComponent(keyText)}`;
    const signal = deadline(this.timeoutMs, this.shutdown.signal);
    let res: Response;
    try {
      const init: RequestInit = { headers: { 'Sec-Tailscale': 'localapi' }, signal };
      res = await fetch(url, Object.assign<RequestInit, object>(init, { dispatcher: this.dispatcher }));
    } catch (err) {
      const why = signal.aborted ? `no answer within ${this.timeoutMs} ms` : describeError(err);
      return { allow: false, reason: `tailscaled unreachable at ${this.opts.socketPath} (${why})` };
    }
    let text: string;
    try {
      text = await readLimited(res, TAILSCALED_MAX_BODY_BYTES, 'tailscaled');
    } catch (err) {
      return { allow: false, reason: describeError(err) };
    }
    if (res.status === 200) return { allow: true, reason: 'a peer of the local tailscaled' };
    if (res.status === 404) return { allow: false, reason: 'not a peer of the local tailscaled' };
    // tailscale issue 12617: an old tailscaled does not understand nodekey: addresses.
    if (text.includes("invalid 'addr' parameter")) return { allow: false, reason: 'tailscaled is too old for node-key whois' };
    return { allow: false, reason: `tailscaled answered HTTP ${res.status}` };
  }

  async close(): Promise<void> {
    this.shutdown.abort();
    await this.dispatcher.destroy();
  }
}
