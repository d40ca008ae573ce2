/** One line describing a resolved configuration (`derp config check`, start-up logs). */
import type { ServeConfig } from './resolve.js';

export function summarizeServeConfig(c: ServeConfig): string {
  const parts = [`listen ${c.addr}`];
  if (c.tls.certMode === 'none') parts.push(c.dev ? 'plain HTTP (dev)' : 'plain HTTP (insecureHttp)');
  else if (c.tls.certMode === 'acme') parts.push(`TLS acme for ${c.tls.hostname ?? '?'} (${c.tls.acme.directory})`);
  else if (c.tls.certMode === 'self-signed') parts.push(`TLS self-signed for ${c.tls.selfSigned ?? '?'}`);
  else parts.push(`TLS ${c.tls.certFile ?? '?'}`);
  if (c.httpPort >= 0) parts.push(`HTTP port ${c.httpPort}`);
  parts.push(c.stun.enabled ? `STUN ${c.stun.port}` : 'no STUN');
  parts.push(c.metrics.addr === null ? 'no metrics' : `metrics ${c.metrics.addr}`);
  if (c.derpMap !== null) {
    const regions = Object.values(c.derpMap.regions);
    const nodes = regions.reduce((n, r) => n + r.nodes.length, 0);
    parts.push(`/derpmap ${regions.length} region${regions.length === 1 ? '' : 's'}, ${nodes} node${nodes === 1 ? '' : 's'}`);
  }
  const a = c.admission;
  const who = [
    a.allowKeysFile !== null || a.allowKeys.length > 0 ? 'allow list' : '',
    a.denyKeysFile !== null || a.denyKeys.length > 0 ? 'deny list' : '',
    a.verifyClients ? 'tailscaled' : '',
    a.verifyTailnet !== null ? `tailnet (${a.verifyTailnet})` : '',
    a.verifyClientUrl !== null ? `webhook${a.verifyClientUrlFailOpen ? ' (fail-open)' : ''}` : '',
  ].filter((x) => x !== '');
  parts.push(who.length === 0 ? 'admits every key' : `admission: ${who.join(' + ')}`);
  const l = c.limits;
  const limits = [
    l.clientRate > 0 ? `client rate ${l.clientRate} B/s` : '',
    l.acceptRate > 0 ? `accept ${l.acceptRate}/s` : '',
    l.maxConnsPerIp > 0 ? `${l.maxConnsPerIp} per IP` : '',
    l.maxConns > 0 ? `${l.maxConns} in total` : '',
  ].filter((x) => x !== '');
  if (limits.length > 0) parts.push(`limits: ${limits.join(', ')}`);
  parts.push(c.abuse.ban ? 'abuse bans on' : 'abuse: warn only');
  return parts.join(', ');
}
