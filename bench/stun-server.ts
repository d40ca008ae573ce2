/**
 * Bench child: our StunServer(s) on loopback with no rate limit (all bench traffic comes from 127.0.0.1).
 * `--port P --reuse-port` joins an SO_REUSEPORT group on P (one process of the multi-process scenario);
 * `--count N` starts N servers on ephemeral ports (the netcheck regions).
 *
 * Run: node --import tsx bench/stun-server.ts [--port 0] [--reuse-port] [--count 1]
 * Prints one JSON line {"msg":"listening","url":"stun:…","stunPort":…,"stunPorts":[…]}.
 */
import { parseArgs } from 'node:util';
import { StunServer } from '../src/lib/stun/server.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { port: { type: 'string', default: '0' }, 'reuse-port': { type: 'boolean', default: false }, count: { type: 'string', default: '1' } },
    strict: true,
  });
  const servers: StunServer[] = [];
  for (let i = 0; i < Number(values.count); i++) {
    const s = new StunServer({ host: '127.0.0.1', port: Number(values.port), reusePort: values['reuse-port'], rateLimitPerSecond: 0 });
    await s.start();
    servers.push(s);
  }
  const ports = servers.map((s) => s.port);
  process.stdout.write(`${JSON.stringify({ msg: 'listening', url: `stun:127.0.0.1:${ports[0]}`, stunPort: ports[0], stunPorts: ports })}\n`);
  const stop = (): void => {
    void Promise.all(servers.map((s) => s.stop())).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`stun-server: ${(err as Error).message}\n`);
  process.exit(1);
});
