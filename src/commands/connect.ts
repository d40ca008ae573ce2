import { createInterface } from 'node:readline';
import { Args, Command, Flags } from '@oclif/core';
import { DERPClient, UdpBridge, parseHostPort, type DERPClientOptions, type PacketEndpoint } from '../lib/client/index.js';
import { BadKeyError, ConfigError, DerpError, KeyFileError, TlsError, describeError } from '../lib/errors.js';
import { loadOrCreateKeyFile } from '../lib/keys/keyfile.js';
import { NodePrivateKey, formatNodePublic, parseNodePublic } from '../lib/protocol/keys.js';
import { DEFAULT_REGIONS_K, MultiRegionClient } from '../lib/connect/index.js';
import { SELECT_EXIT_CODES_HELP, resolveRegion, selectExitCode, setupSelection } from '../lib/select/index.js';
import { JsonLogger, TextLogger } from '../lib/util/logger.js';

/** Exit codes, documented in the description (and the README). */
export const ExitCode = {
  Ok: 0,
  Unexpected: 1,
  Usage: 2,
  CannotConnect: 3,
  Tls: 4,
  BadMap: 5,
  CannotFetchMap: 6,
  NoHealthyServer: 8,
} as const;

/** Version marker on every --json line (schemas/connect.schema.json). */
export const CONNECT_SCHEMA_ID = 'derp.connect/v1';

function exitCodeFor(err: unknown): number {
  const sel = selectExitCode(err);
  if (sel !== undefined) return sel;
  if (err instanceof TlsError) return ExitCode.Tls;
  if (err instanceof BadKeyError || err instanceof ConfigError || err instanceof KeyFileError) return ExitCode.Usage;
  if (err instanceof DerpError) return ExitCode.CannotConnect;
  return ExitCode.Unexpected;
}

export default class Connect extends Command {
  static override summary = 'Talk to one peer through a DERP relay (stdin/stdout lines, or a UDP bridge)';
  static override description = `Connects to a relay and exchanges packets with <peerKey>. The first stdout line is this node's own nodekey (in --json mode a {"schema":"derp.connect/v1","event":"key"} line), to give to the peer. Every --json line carries "schema":"derp.connect/v1" (schemas/connect.schema.json).

Default mode: every stdin line becomes one packet to the peer; every packet received becomes one stdout line. End of stdin flushes and exits 0.

UDP mode (--udp-listen): datagrams received on the local UDP socket go to the peer; packets from the peer go to --udp-forward, or back to the last sender. Two such processes let two UDP applications (e.g. WireGuard) with no direct path talk through the relay. Runs until SIGINT/SIGTERM.

Relay restarts and lost connections are ridden out by reconnecting with backoff.

Map mode (--map instead of --server): measures the map like \`derp select\` (netcheck + a DERP connect per node), stays connected to the best --regions-k healthy regions (home first; NotePreferred on the home only) and sends to the peer through the region where it is: --peer-region if given, else the home first; a PeerGone "not here" moves to the next connected region (the dropped packets are resent there) and a packet from the peer on a region pins it there. When a relay dies the next best healthy region takes its place; packets are held (up to 32) while no region can take them. --json adds regionUp / regionDown / homeChanged / peerRegion events.

Exit codes:
  0  finished (end of stdin, SIGINT or SIGTERM)
  1  unexpected error
  2  bad usage: bad flag value, bad peer key, unreadable key file
  3  cannot connect: network, HTTP upgrade, handshake or timeout
  4  TLS verification failed (untrusted certificate, wrong name, pin mismatch)
${SELECT_EXIT_CODES_HELP} (--map only)`;

  static override examples = [
    '<%= config.bin %> connect nodekey:4e7f…  --server http://127.0.0.1:3340/derp',
    '<%= config.bin %> connect nodekey:4e7f…  --server https://derp.example.com/derp --key-file me.key --json',
    '<%= config.bin %> connect nodekey:4e7f…  --map https://login.tailscale.com/derpmap/default --regions-k 2 --json',
    '<%= config.bin %> connect nodekey:4e7f…  --server https://203.0.113.9/derp --cert-name sha256-raw:ab12… --udp-listen 127.0.0.1:51821 --udp-forward 127.0.0.1:51820',
  ];

  static override args = {
    peerKey: Args.string({ description: 'the peer to talk to: nodekey:<64 hex>', required: true }),
  };

  static override flags = {
    server: Flags.string({ description: 'relay URL, e.g. https://derp.example.com/derp (http:, https:, ws:, wss:)', exactlyOne: ['server', 'map'] }),
    map: Flags.string({ description: 'DERP map (URL, file or "-"): pick and fail over between its regions', exactlyOne: ['server', 'map'] }),
    region: Flags.string({ description: '--map: only these regions (ID or code; repeatable)', multiple: true, dependsOn: ['map'] }),
    exclude: Flags.string({ description: '--map: leave out a region (ID or code) or node (name); repeatable', multiple: true, dependsOn: ['map'] }),
    'peer-region': Flags.string({ description: '--map: the peer is on this region (ID or code); send there', dependsOn: ['map'] }),
    'regions-k': Flags.integer({ description: '--map: regions to stay connected to', default: DEFAULT_REGIONS_K, min: 1 }),
    'key-file': Flags.string({ description: 'node key file to load, or create if missing (default: an ephemeral key)' }),
    transport: Flags.string({ description: 'how to carry DERP', options: ['derp', 'websocket'], default: 'derp' }),
    'ca-file': Flags.string({ description: 'extra trusted CA certificate(s), PEM' }),
    'server-name': Flags.string({ description: 'TLS server name (SNI and certificate name) instead of the URL host' }),
    'cert-name': Flags.string({ description: 'certificate name to require, or sha256-raw:<hex> to pin a self-signed leaf certificate' }),
    insecure: Flags.boolean({ description: 'do not verify the TLS certificate (testing only)', default: false }),
    hex: Flags.boolean({ description: 'stdin lines are hex payloads; received payloads are printed as hex', default: false }),
    json: Flags.boolean({ description: 'print one JSON event per line on stdout', default: false }),
    'udp-listen': Flags.string({ description: 'UDP bridge mode: bind here (host:port, port 0 = any)' }),
    'udp-forward': Flags.string({ description: 'UDP bridge mode: send packets from the peer here (default: last sender)', dependsOn: ['udp-listen'] }),
  };

  private out(line: string): void {
    process.stdout.write(`${line}\n`);
  }

  private event(json: boolean, ev: Record<string, unknown>, text?: string): void {
    if (json) this.out(JSON.stringify({ schema: CONNECT_SCHEMA_ID, ...ev }));
    else if (text) process.stderr.write(`${text}\n`);
  }

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Connect);
    const json = flags.json;
    const fail = (err: unknown): never => this.error(describeError(err), { exit: exitCodeFor(err) });

    let peer: Buffer;
    let key: NodePrivateKey;
    let listen: ReturnType<typeof parseHostPort> | undefined;
    let forward: ReturnType<typeof parseHostPort> | undefined;
    try {
      peer = parseNodePublic(args.peerKey);
      key = flags['key-file'] ? (await loadOrCreateKeyFile(flags['key-file'])).key : NodePrivateKey.generate();
      if (flags['udp-listen']) listen = parseHostPort(flags['udp-listen'], '--udp-listen', true);
      if (flags['udp-forward']) forward = parseHostPort(flags['udp-forward'], '--udp-forward');
    } catch (err) {
      return fail(err);
    }
    const peerText = formatNodePublic(peer);

    if (json) this.out(JSON.stringify({ schema: CONNECT_SCHEMA_ID, event: 'key', publicKey: key.publicText() }));
    else this.out(key.publicText());

    const tls: NonNullable<DERPClientOptions['tls']> = { insecure: flags.insecure };
    if (flags['ca-file']) tls.caFile = flags['ca-file'];
    if (flags['server-name']) tls.serverName = flags['server-name'];
    if (flags['cert-name']) tls.certName = flags['cert-name'];
    const logger = json ? new JsonLogger(process.stderr, 'warn') : new TextLogger(process.stderr, 'warn');
    const fmt = (d: Buffer) => (flags.hex ? d.toString('hex') : d.toString('base64'));
    let endpoint: PacketEndpoint;
    let closeEndpoint: () => Promise<void>;
    if (flags.map) {
      const clientOptions = { transport: flags.transport as 'derp' | 'websocket', tls };
      let multi: MultiRegionClient;
      try {
        const { selector, remeasure } = await setupSelection({ map: flags.map, regions: flags.region ?? [], exclude: flags.exclude ?? [], clientOptions });
        const peerRegion = flags['peer-region'] ? resolveRegion(selector.map, flags['peer-region']).regionId : undefined;
        multi = new MultiRegionClient({
          selector,
          privateKey: key,
          k: flags['regions-k'],
          ...(peerRegion ? { peerRegion } : {}),
          clientOptions,
          logger,
          measure: async (signal) => void (await remeasure(signal)),
        });
      } catch (err) {
        return fail(err);
      }
      multi.on('regionUp', (e) => this.event(json, { event: 'regionUp', ...e }, `connected to region ${e.regionId} (${e.regionCode}) node ${e.node} ${e.url}${e.home ? ' [home]' : ''}`));
      multi.on('regionDown', (e) => this.event(json, { event: 'regionDown', ...e }, `region ${e.regionId} (${e.regionCode}) down: ${e.reason}`));
      multi.on('homeChanged', (e) => this.event(json, { event: 'homeChanged', ...e }, `home region: ${e.to} (${e.reason})`));
      multi.on('peerRegion', (e) => this.event(json, { event: 'peerRegion', ...e }, `peer ${e.peer} via region ${e.regionId || '?'} (${e.why})`));
      multi.on('peerGone', (e) => this.event(json, { event: 'peerGone', peer: e.peer, regionId: e.regionId, reason: e.reason }, `peer gone on region ${e.regionId}: ${e.peer} (${e.reason})`));
      multi.on('flushed', (e) => this.event(json, { event: 'flushed', ...e }));
      try {
        await multi.start();
      } catch (err) {
        await multi.close();
        return fail(err);
      }
      endpoint = multi;
      closeEndpoint = () => multi.close();
    } else {
      const client = new DERPClient({ privateKey: key, transport: flags.transport as 'derp' | 'websocket', tls, logger });
      client.on('connected', (e) =>
        this.event(json, { event: 'connected', url: e.url, serverKey: e.serverKeyText, reconnected: e.reconnected }, `${e.reconnected ? 'reconnected' : 'connected'} to ${e.url} (${e.serverKeyText})`),
      );
      client.on('disconnected', (e) => this.event(json, { event: 'disconnected', reason: e.reason, willReconnect: e.willReconnect }, `disconnected: ${e.reason}`));
      client.on('reconnecting', (e) =>
        this.event(json, { event: 'reconnecting', attempt: e.attempt, delayMs: Math.round(e.delayMs), ...(e.error ? { error: describeError(e.error) } : {}) }),
      );
      client.on('peerGone', (e) => this.event(json, { event: 'peerGone', peer: e.peer, reason: e.reasonText }, `peer gone: ${e.peer} (${e.reasonText})`));
      client.on('health', (e) => this.event(json, { event: 'health', problem: e.problem }, `server health: ${e.problem || 'ok'}`));
      client.on('restarting', (e) => this.event(json, { event: 'restarting', reconnectInMs: e.reconnectInMs, tryForMs: e.tryForMs }, 'server is restarting'));
      try {
        await client.connect(flags.server!);
      } catch (err) {
        return fail(err);
      }
      endpoint = client;
      closeEndpoint = () => client.disconnect();
    }

    let stopping = false;
    let finish!: () => void;
    const finished = new Promise<void>((r) => (finish = r));
    const stop = () => {
      if (stopping) return;
      stopping = true;
      finish();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);

    let bridge: UdpBridge | undefined;
    let rl: ReturnType<typeof createInterface> | undefined;
    try {
      if (listen) {
        bridge = await UdpBridge.start({ client: endpoint, peer, listen, ...(forward ? { forward } : {}) });
        const a = bridge.address;
        this.event(json, { event: 'udp', listen: `${a.host}:${a.port}`, forward: forward ? `${forward.host}:${forward.port}` : null }, `udp: listening on ${a.host}:${a.port}`);
      } else {
        void (async () => {
          for await (const pkt of endpoint.receive()) {
            const region = 'regionId' in pkt ? { regionId: pkt.regionId } : {};
            if (json) this.out(JSON.stringify({ schema: CONNECT_SCHEMA_ID, event: 'packet', from: pkt.srcText, data: fmt(pkt.data), len: pkt.data.length, ...region }));
            else this.out(flags.hex ? pkt.data.toString('hex') : pkt.data.toString('utf8'));
          }
        })();
        rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
        void (async () => {
          for await (const line of rl!) {
            if (stopping) break;
            let data: Buffer;
            if (flags.hex) {
              const h = line.trim();
              if (!/^([0-9a-fA-F]{2})*$/.test(h)) {
                process.stderr.write(`skipping line: not hex: ${JSON.stringify(h.slice(0, 40))}\n`);
                continue;
              }
              data = Buffer.from(h, 'hex');
            } else data = Buffer.from(line, 'utf8');
            try {
              await endpoint.send(peerText, data);
            } catch (err) {
              process.stderr.write(`send failed: ${describeError(err)}\n`);
            }
          }
          stop();
        })();
      }
      await finished;
    } catch (err) {
      await closeEndpoint();
      return fail(err);
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
    rl?.close();
    process.stdin.destroy();
    await bridge?.stop();
    await closeEndpoint();
  }
}
