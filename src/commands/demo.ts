import { Command, Flags } from '@oclif/core';
import Table from 'cli-table3';
import { progress } from '../lib/cli/progress.js';
import { DEMO_DEFAULT_PACKETS, DEMO_DEFAULT_PACKET_SIZE, runLoopbackDemo, type LoopbackDemoReport } from '../lib/demo/loopback.js';

export default class Demo extends Command {
  static override description = `Run the built-in offline default: a relay on 127.0.0.1 and two clients exchanging packets through it

Needs no network and no configuration. Exit codes: 0 every packet arrived both ways; 1 packets were lost or a step failed.`;
  static override examples = ['<%= config.bin %> demo', '<%= config.bin %> demo --transport websocket --tls --json'];
  static override enableJsonFlag = true;
  static override flags = {
    packets: Flags.integer({ description: 'packets each client sends to the other', default: DEMO_DEFAULT_PACKETS, min: 0, max: 1_000_000 }),
    size: Flags.integer({ description: 'packet size in bytes', default: DEMO_DEFAULT_PACKET_SIZE, min: 1, max: 65_536 }),
    transport: Flags.option({ options: ['derp', 'websocket'] as const, default: 'derp', description: 'DERP over HTTP upgrade or WebSocket' })(),
    tls: Flags.boolean({ description: 'serve TLS with a self-signed certificate, pinned by the clients (sha256-raw)' }),
  };

  async run(): Promise<LoopbackDemoReport> {
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
    if (lost === 0) p.succeed('every packet arrived');
    else p.fail(`${lost} packets lost`);

    const t = new Table();
    t.push(
      { relay: `${report.relayUrl} (${report.transport}${report.tls ? ', TLS pinned by ' + (report.certName ?? '') : ''})` },
      { 'relay key': `nodekey:${report.relayKey}` },
      { 'client A': report.clients.a },
      { 'client B': report.clients.b },
      { 'A → B': `${report.delivered.aToB}/${report.packetsEachWay} packets of ${report.packetSize} B` },
      { 'B → A': `${report.delivered.bToA}/${report.packetsEachWay} packets of ${report.packetSize} B` },
      { 'ping (A, B)': `${report.pingMs.a.toFixed(2)} ms, ${report.pingMs.b.toFixed(2)} ms` },
      { throughput: `${report.packetsPerSecond.toLocaleString('en-US')} packets/s over ${report.elapsedMs} ms` },
    );
    this.log(t.toString());
    if (lost > 0) this.exit(1);
    return report;
  }
}
