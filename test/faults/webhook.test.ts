/**
 * Fault: the admission webhook (a real local HTTP server) stops answering, answers 500, answers garbage.
 * Each time the new client is refused (fail closed) and counted in derp_admission_decisions_total, while
 * a canary pair admitted before keeps relaying and stays connected. The verifier's failure modes on
 * their own are in test/admission/webhook.test.ts; this is the relay node around them.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText, resolveServeConfig } from '../../src/lib/config/index.js';
import { RelayNode } from '../../src/lib/node/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RawClient } from '../helpers/rawclient.js';
import { canaryWorks, clientInfoFor } from '../server/helpers.js';

type Mode = 'allow' | 'slow' | '500' | 'garbage';
let mode: Mode = 'allow';
let hook: Server;
let hookUrl: string;

beforeAll(async () => {
  hook = createServer((rq, rs) => {
    rq.resume();
    rq.on('end', () => {
      if (mode === 'allow') rs.end('{"Allow":true}');
      else if (mode === '500') rs.writeHead(500).end('{"Allow":true}');
      else if (mode === 'garbage') rs.end('<html>upstream error');
      // 'slow': never answers; the relay's timeout ends the check.
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/admit`;
});
afterAll(async () => {
  hook.closeAllConnections();
  await new Promise<void>((r) => hook.close(() => r()));
});

/** derp_admission_decisions_total{source="webhook",result} from the node's /metrics. */
async function webhookDecisions(node: RelayNode): Promise<{ allow: number; deny: number }> {
  const text = await (await fetch(node.metricsServer!.url)).text();
  const read = (result: string): number => Number(new RegExp(`^derp_admission_decisions_total\\{source="webhook",result="${result}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { allow: read('allow'), deny: read('deny') };
}

describe('fault: the admission webhook fails', () => {
  it('times out, answers 500, answers garbage: each new client refused and counted; the admitted canary pair relays throughout', async () => {
    const yaml = `dev: true\naddr: "127.0.0.1:0"\nstun:\n  enabled: false\nmetrics:\n  addr: "127.0.0.1:0"\nadmission:\n  verifyClientUrl: "${hookUrl}"\n  verifyClientUrlTimeoutMs: 300\n`;
    const logger = new MemoryLogger();
    const node = await RelayNode.start({ config: resolveServeConfig(parseConfigText(yaml, 'derp.yaml')), logger });
    const clients: RawClient[] = [];
    try {
      const port = node.relay.port;
      const c1 = await RawClient.connect({ port });
      const c2 = await RawClient.connect({ port });
      clients.push(c1, c2);
      await canaryWorks(c1, c2, 'admitted');
      expect(await webhookDecisions(node)).toEqual({ allow: 2, deny: 0 });

      const reasons: Record<Exclude<Mode, 'allow'>, RegExp> = {
        slow: /no answer within 300 ms\); fail-closed/,
        '500': /webhook answered HTTP 500/,
        garbage: /answer is not \{"Allow":bool\} JSON/,
      };
      let denied = 0;
      for (const m of ['slow', '500', 'garbage'] as const) {
        mode = m;
        const refusedLog = logger.waitFor((e) => e.msg === 'client refused' && reasons[m].test(String(e.fields.reason)));
        const n = await RawClient.open({ port });
        clients.push(n);
        n.write(await clientInfoFor(n));
        await n.closedPromise;
        expect(n.drainQueue()).toEqual([]); // closed without ServerInfo
        await refusedLog;
        expect(await webhookDecisions(node)).toEqual({ allow: 2, deny: ++denied });
        await canaryWorks(c1, c2, m);
        await canaryWorks(c2, c1, `${m} back`);
      }
      expect([c1.closed, c2.closed]).toEqual([false, false]);
      expect(node.relay.stats()).toMatchObject({ currentConnections: 2, admissionRefused: 3, admissionAllowed: 2 });

      // The webhook recovers: the next client is admitted again.
      mode = 'allow';
      const late = await RawClient.connect({ port });
      clients.push(late);
      await canaryWorks(late, c1, 'recovered');
      expect(await webhookDecisions(node)).toEqual({ allow: 3, deny: 3 });
    } finally {
      mode = 'allow';
      for (const c of clients) c.destroy();
      await node.stop();
    }
  });
});
