/**
 * A deliberately narrow HTTP/1.1 request-head recogniser for the one request a DERP relay serves
 * thousands of times a second: `GET /derp` with `Upgrade: DERP`. Anything it is not sure about returns
 * null and the connection goes to Node's HTTP server exactly as before, so every other request, every
 * malformed one and every error response keeps Node's behaviour. It only has to be right when it says yes.
 */
import { WS_SUBPROTOCOL } from '../protocol/constants.js';

/** Heads longer than this go to Node's parser (Go's client sends ≈150 bytes; Node's own limit is 16 KiB). */
export const FAST_HEAD_MAX_BYTES = 8 << 10;

export interface DerpUpgradeHead {
  /** `Derp-Fast-Start: 1`: no 101 response, ServerKey straight away (spec §3.4). */
  fastStart: boolean;
  /** Offset of the first byte after the blank line (pipelined DERP frames start here). */
  end: number;
  /** Every X-Forwarded-For value, comma-joined in order (as Node joins them); only when asked for. */
  forwardedFor?: string;
}

const CRLF2 = Buffer.from('\r\n\r\n', 'latin1');
const REQUEST_LINE = /^GET \/derp(?:\?[\w\-.~%!$&'()*+,;=:@/?]*)? HTTP\/1\.1$/;
/** A token name, optional leading OWS, a value of visible ASCII/SP/HTAB with no trailing whitespace. */
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?)$/;
/** Headers whose value we look at (or whose presence means "not ours"): a repeat of any means fallback. */
const WATCHED = new Set(['upgrade', 'derp-fast-start', 'sec-websocket-protocol', 'content-length', 'transfer-encoding']);

/**
 * Recognises a raw DERP upgrade (what RelayServer's 'upgrade' handler would serve as raw DERP) in the
 * first `n` bytes of `buf`; null means "let Node's HTTP server handle this connection".
 * `wantForwardedFor` (a trusted proxy is connected) also collects X-Forwarded-For.
 */
export function parseDerpUpgradeHead(buf: Buffer, n: number, wantForwardedFor = false): DerpUpgradeHead | null {
  const at = buf.subarray(0, Math.min(n, FAST_HEAD_MAX_BYTES)).indexOf(CRLF2);
  if (at < 0) return null;
  const lines = buf.toString('latin1', 0, at).split('\r\n');
  if (!REQUEST_LINE.test(lines[0]!)) return null;
  const seen = new Map<string, string>();
  let forwardedFor: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const m = HEADER_LINE.exec(lines[i]!);
    if (m === null) return null;
    const name = m[1]!.toLowerCase();
    if (!WATCHED.has(name)) {
      if (wantForwardedFor && name === 'x-forwarded-for') forwardedFor = forwardedFor === undefined ? m[2]! : `${forwardedFor}, ${m[2]!}`;
      continue;
    }
    if (seen.has(name)) return null;
    seen.set(name, m[2]!);
  }
  if (seen.has('content-length') || seen.has('transfer-encoding')) return null;
  // Like derper (derpserver/handler.go), only the Upgrade header counts: `Connection: upgrade` is not
  // required here, though Node's own parser (the fallback for split heads) insists on it.
  const upgrade = seen.get('upgrade')?.toLowerCase();
  // WebSocket with the derp subprotocol is the ws library's job; `websocket` without it is legacy raw DERP.
  if (upgrade === 'websocket' ? (seen.get('sec-websocket-protocol') ?? '').includes(WS_SUBPROTOCOL) : upgrade !== 'derp') return null;
  const head: DerpUpgradeHead = { fastStart: seen.get('derp-fast-start') === '1', end: at + CRLF2.length };
  if (forwardedFor !== undefined) head.forwardedFor = forwardedFor;
  return head;
}
