// The built-in offline default the README's first command runs.
import { describe, expect, it } from 'vitest';
import { runLoopbackDemo } from '../src/lib/demo/loopback.js';

describe('loopback demo', () => {
  for (const transport of ['derp', 'websocket'] as const) {
    it(`relays every packet both ways over ${transport} with TLS pinning`, async () => {
      const steps: string[] = [];
      const r = await runLoopbackDemo({ packets: 2000, packetSize: 1200, transport, tls: true, onStep: (s) => steps.push(s) });
      expect(r.delivered).toEqual({ aToB: 2000, bToA: 2000 });
      expect(r.certName).toMatch(/^sha256-raw:[0-9a-f]{64}$/);
      expect(r.relayUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/derp$/);
      expect(r.pingMs.a).toBeGreaterThan(0);
      expect(r.netcheck).toMatchObject({ udp: true, method: 'stun', preferredRegion: 900 });
      expect(r.netcheck.globalV4).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(steps[0]).toContain('starting a relay');
    });
  }
});
