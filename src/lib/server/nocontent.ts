/** `/generate_204` as derper serves it on both its listeners (derpserver/handler.go: ServeNoContent). */
import type * as http from 'node:http';
import { Headers } from '../protocol/constants.js';
import { isValidChallenge } from '../protocol/http.js';

const NO_CONTENT_CACHE_CONTROL = 'no-cache, no-store, must-revalidate, no-transform, max-age=0';

/** 204 with the `X-Tailscale-Challenge` → `X-Tailscale-Response` echo (captive-portal detection). */
export function serveNoContent(req: http.IncomingMessage, res: http.ServerResponse): void {
  res.setHeader('Cache-Control', NO_CONTENT_CACHE_CONTROL);
  const c = req.headers[Headers.Challenge];
  if (typeof c === 'string' && c !== '' && isValidChallenge(c)) res.setHeader(Headers.ChallengeResponse, `response ${c}`);
  res.writeHead(204).end();
}
