/** The HTTP/1.1 text around the DERP upgrade (spec §3.4–3.5). Pure string builders. */
import { Headers, PROTOCOL_VERSION } from './constants.js';

export interface UpgradeRequestOptions {
  host: string;
  path?: string;
  fastStart?: boolean;
  idealNode?: string;
}

export function buildUpgradeRequest(o: UpgradeRequestOptions): string {
  let s = `GET ${o.path ?? '/derp'} HTTP/1.1\r\nHost: ${o.host}\r\nUser-Agent: derp-ts\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n`;
  if (o.fastStart) s += 'Derp-Fast-Start: 1\r\n';
  if (o.idealNode) s += `Ideal-Node: ${o.idealNode}\r\n`;
  return `${s}\r\n`;
}

/** Exactly what derper writes before the ServerKey frame. */
export function buildUpgradeResponse(serverPublic: Uint8Array): string {
  return (
    'HTTP/1.1 101 Switching Protocols\r\n' +
    'Upgrade: DERP\r\n' +
    'Connection: Upgrade\r\n' +
    `${Headers.Version}: ${PROTOCOL_VERSION}\r\n` +
    `${Headers.PublicKey}: ${Buffer.from(serverPublic).toString('hex')}\r\n` +
    '\r\n'
  );
}

/** `/generate_204` challenge rule: ≤ 64 chars of [A-Za-z0-9._:-] (derpserver/handler.go: isChallengeChar). */
export function isValidChallenge(c: string): boolean {
  return c.length <= 64 && /^[A-Za-z0-9._:-]*$/.test(c);
}

/** `/derp` URL for a node (derphttp_client.go: urlString): port only when set and not 443. */
export function derpUrl(host: string, derpPort?: number, scheme: 'https' | 'http' = 'https'): string {
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const port = derpPort && derpPort !== 443 ? `:${derpPort}` : '';
  return `${scheme}://${h}${port}/derp`;
}
