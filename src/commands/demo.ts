import { Command, Flags } from '@oclif/core';
import Table from 'cli-table3';
import { progress } from '../lib/cli/progress.js';
import { DEMO_DEFAULT_PACKETS, DEMO_DEFAULT_PACKET_SIZE, runLoopbackDemo, type LoopbackDemoReport } from '../lib/demo/loopback.js';

/** Version marker of the --json document (schemas/demo.schema.json). */
export const DEMO_SCHEMA_ID = 'derp.demo/v1';

export default class Demo extends Command {
  static override description = `Run the built-in offline default: a relay with STUN on 127.0.0.1, netcheck against it, and two clients exchanging packets through it

Needs no network and no configuration. It builds a one-region DERP map for the loopback relay, runs netcheck
on it (STUN + HTTPS latency, external address, home region), connects two clients to the map's node, pings
the relay from both and sends packets each way.
Exit codes: 0 every packet arrived both ways and netcheck reached the region; 1 packets were lost, netcheck
failed, or a step failed.`;
  static override examples = ['<%= config.bin %> demo', '<%= config.bin %> demo --transport websocket --tls --json'];
  static override enableJsonFlag = true;
  static override flags = {
    packets: Flags.integer({ description: 'packets each client sends to the other', default: DEMO_DEFAULT_PACKETS, min: 0, max: 1_000_000 }),
    size: Flags.integer({ description: 'packet size in bytes', default: DEMO_DEFAULT_PACKET_SIZE, min: 1, max: 65_536 }),
    transport: Flags.option({ options: ['derp', 'websocket'] as const, default: 'derp', description: 'DERP over HTTP upgrade or WebSocket' })(),
    tls: Flags.boolean({ description: 'serve TLS with a self-signed certificate, pinned by the clients (sha256-raw)' }),
  };

  async run(): Promise<{ schema: typeof DEMO_SCHEMA_ID } & LoopbackDemoReport> {
    const { flags } = await this.parse(Demo);
    const p = progress(!this.jsonEnabled());
    let report: LoopbackDemoReport;
    try {
      report = await runLoopbackDemo({ packets: flags.packets, packetSize: flags.size, transport: flags.transport, tls: flags.tls, onStep: (s) => p.step(s) });
    } catch (err) {
      p.fail('demo failed');
      throw err;
    }
    const lost = report.packetsEachWay * 2 - report.delivered.aToB - report.delivered.bToA;
    const netcheckOk = report.netcheck.udp && report.netcheck.preferredRegion !== 0;
    if (lost === 0 && netcheckOk) p.succeed('netcheck reached the relay and every packet arrived');
    else p.fail(lost > 0 ? `${lost} packets lost` : 'netcheck did not reach the loopback region');

    const t = new Table();
    t.push(
      { relay: `${report.relayUrl} (${report.transport === 'derp' ? 'HTTP upgrade' : 'WebSocket'})` },
      ...(report.certName ? [{ 'TLS pin': report.certName }] : []),
      { 'relay key': `nodekey:${report.relayKey}` },
      { STUN: `udp://127.0.0.1:${report.stunPort}` },
      {
        netcheck: `UDP ${report.netcheck.udp ? 'yes' : 'no'}, external ${report.netcheck.globalV4 || '-'}, latency ${
          report.netcheck.latencyMs === null ? '-' : `${report.netcheck.latencyMs.toFixed(2)} ms (${report.netcheck.method})`
        }, home region ${report.netcheck.preferredRegion || '-'}`,
      },
      { 'client A': report.clients.a },
      { 'client B': report.clients.b },
      { 'A → B': `${report.delivered.aToB}/${report.packetsEachWay} packets of ${report.packetSize} B` },
      { 'B → A': `${report.delivered.bToA}/${report.packetsEachWay} packets of ${report.packetSize} B` },
      { 'ping (A, B)': `${report.pingMs.a.toFixed(2)} ms, ${report.pingMs.b.toFixed(2)} ms` },
      { throughput: `${report.packetsPerSecond.toLocaleString('en-US')} packets/s over ${report.elapsedMs} ms` },
    );
    this.log(t.toString());
    if (lost > 0 || !netcheckOk) this.exit(1);
    return { schema: DEMO_SCHEMA_ID, ...report };
  }
}
