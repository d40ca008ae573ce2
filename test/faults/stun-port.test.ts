/**
 * Fault: the STUN port is already bound at start. derper exits (log.Fatalf on its STUN listen); so does
 * `derp serve`: it names the port and exits 3 (cannot listen), having started nothing.
 */
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { flatCliText, runCli } from '../helpers/cli.js';

describe('fault: STUN port unavailable at start', () => {
  it('derp serve fails at start naming the port, exit 3', async () => {
    const blocker = createSocket('udp4');
    blocker.bind(0, '127.0.0.1');
    await once(blocker, 'listening');
    const port = blocker.address().port;
    try {
      const r = await runCli(['serve', '--dev', '--addr', '127.0.0.1:0', '--stun-port', String(port), '--metrics-addr', 'none']);
      expect(r.code).toBe(3);
      expect(flatCliText(r.stderr)).toMatch(new RegExp(`${port}.*(EADDRINUSE|in use)`));
      expect(r.stdout).not.toMatch(/listening/);
    } finally {
      blocker.close();
    }
  });
});
