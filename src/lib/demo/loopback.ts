/**
 * The built-in offline default: a relay on loopback and two clients talking through it. It is what a
 * fresh checkout runs first (`derp demo`), and it exercises the same library a deployment uses.
 */
import { DERPClient } from '../client/client.js';
import type { TransportKind } from '../client/transport.js';
import type { DERPMap, DERPServer } from '../derpmap/types.js';
import { runNetcheck } from '../netcheck/index.js';
import { NodePrivateKey } from '../protocol/keys.js';
import { RelayServer } from '../server/relay.js';
import { generateSelfSigned } from '../certs/selfsigned-cert.js';
import { StunServer } from '../stun/server.js';
import { silentLogger, type Logger } from '../util/logger.js';

export interface LoopbackDemoOptions {
  /** Packets each client sends to the other. */
  packets?: number;
  packetSize?: number;
  transport?: TransportKind;
  /** Serve TLS with a self-signed certificate that the clients pin by `sha256-raw:`. */
  tls?: boolean;
  logger?: Logger;
  /** Called as each step starts, for a progress display. */
  onStep?: (step: string) => void;
  signal?: AbortSignal;
}

export interface LoopbackDemoReport {
  relayUrl: string;
  stunPort: number;
  /** What netcheck saw of the one-region loopback map. */
  netcheck: { udp: boolean; globalV4: string; latencyMs: number | null; method: string | null; preferredRegion: number };
  relayKey: string;
  transport: TransportKind;
  tls: boolean;
  certName?: string;
  clients: { a: string; b: string };
  packetsEachWay: number;
  packetSize: number;
  delivered: { aToB: number; bToA: number };
  pingMs: { a: number; b: number };
  elapsedMs: number;
  packetsPerSecond: number;
}

export const DEMO_DEFAULT_PACKETS = 10_000;
export const DEMO_DEFAULT_PACKET_SIZE = 1200;

/** Packets in flight per direction: like a tunnel's congestion window, it keeps the sender from overrunning the receiver. */
const DEMO_WINDOW = 64;
/** How long the demo waits for stragglers once nothing more arrives: it reports loss instead of hanging. */
const DEMO_QUIET_MS = 2_000;

/**
 * Sends `n` packets from `from` to `to` keeping at most DEMO_WINDOW un-received, and counts arrivals
 * until all came or none came for DEMO_QUIET_MS (then the count shows the loss).
 */
async function flow(from: DERPClient, to: DERPClient, n: number, payload: Buffer, signal?: AbortSignal): Promise<number> {
  let got = 0;
  let wake: (() => void) | undefined;
  const quiet = new AbortController();
  const rx = signal ? AbortSignal.any([signal, quiet.signal]) : quiet.signal;
  const timer = setTimeout(() => quiet.abort(), DEMO_QUIET_MS);
  const receiving = (async () => {
    try {
      for await (const _pkt of to.receive(rx)) {
        got++;
        wake?.();
        timer.refresh();
        if (got >= n) break;
      }
    } catch (err) {
      // Only the quiet timer ends the count early; anything else is a real failure.
      if (!quiet.signal.aborted || signal?.aborted) throw err;
    } finally {
      clearTimeout(timer);
      wake?.();
    }
  })();
  for (let sent = 0; sent < n && !quiet.signal.aborted; sent++) {
    while (sent - got >= DEMO_WINDOW && !quiet.signal.aborted) await new Promise<void>((resolve) => (wake = resolve));
    await from.send(to.publicKey, payload, signal);
  }
  if (n === 0) quiet.abort();
  await receiving;
  return got;
}

export async function runLoopbackDemo(opts: LoopbackDemoOptions = {}): Promise<LoopbackDemoReport> {
  const packets = opts.packets ?? DEMO_DEFAULT_PACKETS;
  const size = opts.packetSize ?? DEMO_DEFAULT_PACKET_SIZE;
  const transport = opts.transport ?? 'derp';
  const logger = opts.logger ?? silentLogger;
  const step = opts.onStep ?? (() => {});

  step('starting a relay and a STUN server on 127.0.0.1');
  const cert = opts.tls ? await generateSelfSigned('127.0.0.1') : undefined;
  const server = new RelayServer({
    privateKey: NodePrivateKey.generate(),
    addr: '127.0.0.1:0',
    logger,
    ...(cert ? { tls: { cert: cert.certPem, key: cert.keyPem } } : {}),
  });
  const stun = new StunServer({ host: '127.0.0.1', port: 0, logger });
  await server.start(opts.signal);
  const clientOpts = { transport, logger };
  const a = new DERPClient(clientOpts);
  const b = new DERPClient(clientOpts);
  try {
    await stun.start(opts.signal);
    const node = demoNode(server.port, stun.port, cert?.certName);
    const map: DERPMap = { regions: { [DEMO_REGION_ID]: { regionId: DEMO_REGION_ID, regionCode: 'loopback', regionName: 'Loopback demo', nodes: [node] } } };

    step('netcheck: STUN and HTTPS probes against the loopback map');
    const nc = await runNetcheck(map, { ...(opts.signal ? { signal: opts.signal } : {}), ipv6: false, logger });
    const region = nc.regions.find((r) => r.regionId === DEMO_REGION_ID);

    step('connecting two clients to the map node');
    await Promise.all([a.connect(node, opts.signal), b.connect(node, opts.signal)]);
    const pingMs = { a: await a.ping(opts.signal), b: await b.ping(opts.signal) };

    step(`exchanging ${packets} packets of ${size} bytes each way`);
    const payload = Buffer.alloc(size, 0x5a);
    const started = performance.now();
    const [aToB, bToA] = await Promise.all([flow(a, b, packets, payload, opts.signal), flow(b, a, packets, payload, opts.signal)]);
    const elapsedMs = performance.now() - started;
    return {
      relayUrl: server.url,
      stunPort: stun.port,
      netcheck: { udp: nc.udp, globalV4: nc.globalV4, latencyMs: region?.latencyMs ?? null, method: region?.method ?? null, preferredRegion: nc.preferredDERP },
      relayKey: server.publicKey.toString('hex'),
      transport,
      tls: Boolean(cert),
      ...(cert ? { certName: cert.certName } : {}),
      clients: { a: a.publicText(), b: b.publicText() },
      packetsEachWay: packets,
      packetSize: size,
      delivered: { aToB, bToA },
      pingMs,
      elapsedMs: Math.round(elapsedMs),
      packetsPerSecond: Math.round(((aToB + bToA) * 1000) / elapsedMs),
    };
  } finally {
    step('shutting down');
    await Promise.allSettled([a.disconnect(), b.disconnect()]);
    await Promise.all([server.stop({ restarting: false }), stun.stop()]);
  }
}

/** Self-hosted region IDs are 900–999 (derp-map.md §4). */
const DEMO_REGION_ID = 900;

/** The one node of the demo's map: the loopback relay, its STUN port, and (with TLS) the pinned certificate. */
function demoNode(derpPort: number, stunPort: number, certName: string | undefined): DERPServer {
  return {
    id: `${DEMO_REGION_ID}a`,
    hostname: '127.0.0.1',
    ipv4: '127.0.0.1',
    stunPort,
    derpPort,
    region: 'loopback',
    regionCode: DEMO_REGION_ID,
    canStun: true,
    canRelay: true,
    ...(certName ? { certName } : { plainHttp: true }),
  };
}
