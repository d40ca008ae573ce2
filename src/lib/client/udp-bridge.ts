/**
 * UDP ⇄ DERP bridge: datagrams arriving on a local UDP socket go to one peer through the relay;
 * packets from that peer go to a fixed forward address, or back to whoever last sent to the socket.
 * Two of these (one per side) let two UDP apps (e.g. WireGuard) with no direct path talk via a relay.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { ConfigError, DerpError, describeError } from '../errors.js';
import { formatNodePublic, parseNodePublic } from '../protocol/keys.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { ReceivedPacket } from './client.js';

/** What the bridge needs from a client: a DERPClient or a MultiRegionClient. */
export interface PacketEndpoint {
  send(dst: Buffer | Uint8Array | string, data: Uint8Array, signal?: AbortSignal): Promise<void>;
  receive(signal?: AbortSignal): AsyncIterableIterator<ReceivedPacket>;
}

export interface HostPort {
  host: string;
  port: number;
}

/** `host:port`, `[v6]:port`; port 0 allowed only when `allowZero` (bind to an ephemeral port). */
export function parseHostPort(text: string, what: string, allowZero = false): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!m) throw new ConfigError(`${what} ${JSON.stringify(text)} must be host:port (IPv6 as [addr]:port)`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port > 65535 || (port === 0 && !allowZero)) throw new ConfigError(`${what} ${JSON.stringify(text)} has an invalid port`);
  return { host: m[1]!, port };
}

export interface UdpBridgeOptions {
  client: PacketEndpoint;
  /** The peer on the other side of the relay (nodekey text or 32 bytes). */
  peer: string | Buffer;
  /** Where to bind the local UDP socket. */
  listen: HostPort;
  /** Where to send packets from the peer; default: the last sender to the listen socket. */
  forward?: HostPort;
  logger?: Logger;
}

export interface UdpBridgeStats {
  /** Datagrams taken from the UDP socket and sent to the peer. */
  toRelay: number;
  /** Packets from the peer written to UDP. */
  fromRelay: number;
  /** Packets from the peer dropped because no destination was known yet. */
  noDestination: number;
  /** Packets from keys other than the peer, ignored. */
  otherSenders: number;
}

export interface UdpBridgeEvents {
  error: [DerpError];
}

export class UdpBridge extends EventEmitter<UdpBridgeEvents> {
  readonly stats: UdpBridgeStats = { toRelay: 0, fromRelay: 0, noDestination: 0, otherSenders: 0 };
  private readonly peerKey: Buffer;
  private readonly peerText: string;
  private readonly logger: Logger;
  private lastSender: RemoteInfo | undefined;
  private readonly stop$ = new AbortController();
  private pump: Promise<void> | undefined;

  private constructor(
    private readonly o: UdpBridgeOptions,
    private readonly sock: Socket,
  ) {
    super();
    this.peerKey = typeof o.peer === 'string' ? parseNodePublic(o.peer) : o.peer;
    this.peerText = formatNodePublic(this.peerKey);
    this.logger = o.logger ?? silentLogger;
  }

  /** Binds the UDP socket and starts relaying both ways. The client should already be connecting or connected. */
  static async start(o: UdpBridgeOptions): Promise<UdpBridge> {
    const family = isIP(o.listen.host) === 6 ? 'udp6' : 'udp4';
    const sock = createSocket({ type: family });
    await new Promise<void>((resolve, reject) => {
      const onErr = (err: Error) => reject(new ConfigError(`cannot bind UDP ${o.listen.host}:${o.listen.port}: ${err.message}`, { cause: err }));
      sock.once('error', onErr);
      sock.bind(o.listen.port, o.listen.host, () => {
        sock.off('error', onErr);
        resolve();
      });
    });
    const b = new UdpBridge(o, sock);
    b.run();
    return b;
  }

  /** The bound local address (useful with port 0). */
  get address(): HostPort {
    const a = this.sock.address();
    return { host: a.address, port: a.port };
  }

  private fail(err: DerpError): void {
    this.logger.log('warn', 'udp bridge error', { reason: describeError(err) });
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  private run(): void {
    this.sock.on('message', (msg, rinfo) => {
      this.lastSender = rinfo;
      this.stats.toRelay++;
      this.o.client.send(this.peerKey, msg).catch((err: unknown) => {
        // DERP is best-effort like UDP: a failed send is a lost datagram, reported and not fatal.
        this.fail(err instanceof DerpError ? err : new ConfigError(`send to relay failed: ${describeError(err)}`, { cause: err }));
      });
    });
    this.sock.on('error', (err) => this.fail(new ConfigError(`UDP socket error: ${err.message}`, { cause: err })));
    this.pump = (async () => {
      try {
        for await (const pkt of this.o.client.receive(this.stop$.signal)) {
          if (pkt.srcText !== this.peerText) {
            this.stats.otherSenders++;
            continue;
          }
          const dst = this.o.forward ?? (this.lastSender ? { host: this.lastSender.address, port: this.lastSender.port } : undefined);
          if (!dst) {
            this.stats.noDestination++;
            continue;
          }
          this.stats.fromRelay++;
          this.sock.send(pkt.data, dst.port, dst.host, (err) => {
            if (err) this.fail(new ConfigError(`UDP send to ${dst.host}:${dst.port} failed: ${err.message}`, { cause: err }));
          });
        }
      } catch (err) {
        if (!this.stop$.signal.aborted) this.fail(new ConfigError(`receive loop ended: ${describeError(err)}`, { cause: err }));
      }
    })();
  }

  /** Stops relaying and closes the UDP socket (the client is left to its owner). */
  async stop(): Promise<void> {
    this.stop$.abort();
    await this.pump;
    await new Promise<void>((r) => this.sock.close(() => r()));
  }
}
