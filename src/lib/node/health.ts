/**
 * `/healthz`: 200 while the node serves; 503 while draining, when a listener is down, or when the
 * certificate is inside its margin (or not issued yet) — the body names each problem, one per line.
 */
import type * as http from 'node:http';
import type { CertMaterial } from '../certs/index.js';

const DAY_MS = 86_400_000;

export interface HealthInputs {
  draining: boolean;
  /** Listener name → listening now. */
  listeners: Record<string, boolean>;
  /** The serving certificate, or null without TLS. */
  certificate: CertMaterial | null;
  marginDays: number;
  now: number;
}

export interface HealthStatus {
  ok: boolean;
  problems: string[];
}

export function assessHealth(h: HealthInputs): HealthStatus {
  const problems: string[] = [];
  if (h.draining) problems.push('draining: stopping after SIGTERM');
  for (const [name, up] of Object.entries(h.listeners)) if (!up) problems.push(`${name} listener down`);
  const c = h.certificate;
  if (c !== null) {
    if (c.origin === 'placeholder') problems.push('certificate: waiting for the first ACME certificate');
    else {
      const daysLeft = (c.notAfter.getTime() - h.now) / DAY_MS;
      if (daysLeft <= 0) problems.push(`certificate expired at ${c.notAfter.toISOString()}`);
      else if (daysLeft < h.marginDays) problems.push(`certificate expires in ${daysLeft.toFixed(1)} days (margin ${h.marginDays} days), at ${c.notAfter.toISOString()}`);
    }
  }
  return { ok: problems.length === 0, problems };
}

/** The HTTP side: plain text, never cached. */
export function healthHandler(status: () => HealthStatus): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => {
    const s = status();
    const body = s.ok ? 'ok\n' : `unhealthy\n${s.problems.map((p) => `${p}\n`).join('')}`;
    res.writeHead(s.ok ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}
