/**
 * User-space delay proxy for latency tests (the kernel here has no netem): listens on 127.0.0.1:0 and
 * forwards UDP and/or TCP to a target, adding a fixed one-way delay in each direction. Every packet /
 * chunk waits at least `delayMs` (checked against performance.now, since timers may fire early) and
 * order is kept per direction. UDP gets one upstream socket per client address, like a NAT.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';

/** Sends items in order, none before `delayMs` after it was queued. */
class DelayQueue<T> {
  private readonly items: Array<{ due: number; item: T }> = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly delayMs: number,
    private readonly deliver: (item: T) => void,
  ) {}

  push(item: T): void {
    if (this.closed) return;
    if (this.delayMs <= 0 && this.items.length === 0) {
      this.deliver(item);
      return;
    }
    this.items.push({ due: performance.now() + this.delayMs, item });
    if (this.items.length === 1) this.arm();
  }

  private arm(): void {
    const head = this.items[0];
    if (!head || this.closed) return;
    this.timer = setTimeout(() => this.pump(), Math.max(0, Math.ceil(head.due - performance.now())));
  }

  private pump(): void {
    this.timer = undefined;
    const now = performance.now();
    while (this.items.length > 0 && this.items[0]!.due <= now) this.deliver(this.items.shift()!.item);
    this.arm();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.items.length = 0;
  }
}

export interface DelayProxyOptions {
  /** Where to forward (host defaults to 127.0.0.1). */
  target: { host?: string; udpPort?: number; tcpPort?: number };
  /** Added one way, per direction (so the round trip grows by 2 × delayMs). */
  delayMs: number;
  /** Drop every UDP datagram (simulates blocked UDP) while still listening. */
  dropUdp?: boolean;
}

export class DelayProxy {
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly queues = new Set<DelayQueue<unknown>>();
  private readonly upstreams = new Map<string, { socket: dgram.Socket; toTarget: DelayQueue<Buffer> }>();
  private readonly sockets = new Set<net.Socket>();
  /** Datagrams received from clients (forwarded or dropped). */
  udpReceived = 0;

  private constructor(private readonly opts: DelayProxyOptions) {}

  static async start(opts: DelayProxyOptions): Promise<DelayProxy> {
    const p = new DelayProxy(opts);
    if (opts.target.udpPort !== undefined) await p.startUdp(opts.target.udpPort);
    if (opts.target.tcpPort !== undefined) await p.startTcp(opts.target.tcpPort);
    return p;
  }

  get udpPort(): number {
    return (this.udp!.address()).port;
  }

  get tcpPort(): number {
    return (this.tcp!.address() as net.AddressInfo).port;
  }

  private queue<T>(deliver: (item: T) => void): DelayQueue<T> {
    const q = new DelayQueue<T>(this.opts.delayMs, deliver);
    this.queues.add(q as DelayQueue<unknown>);
    return q;
  }

  private async startUdp(targetPort: number): Promise<void> {
    const host = this.opts.target.host ?? '127.0.0.1';
    const front = dgram.createSocket('udp4');
    this.udp = front;
    await new Promise<void>((resolve) => front.bind(0, '127.0.0.1', resolve));
    front.on('message', (msg, rinfo) => {
      this.udpReceived++;
      if (this.opts.dropUdp) return;
      const key = `${rinfo.address}:${rinfo.port}`;
      let up = this.upstreams.get(key);
      if (!up) {
        const socket = dgram.createSocket('udp4');
        socket.bind(0, '127.0.0.1');
        const toClient = this.queue<Buffer>((b) => front.send(b, rinfo.port, rinfo.address));
        socket.on('message', (reply) => toClient.push(reply));
        up = { socket, toTarget: this.queue<Buffer>((b) => socket.send(b, targetPort, host)) };
        this.upstreams.set(key, up);
      }
      up.toTarget.push(msg);
    });
  }

  private async startTcp(targetPort: number): Promise<void> {
    const host = this.opts.target.host ?? '127.0.0.1';
    const server = net.createServer((client) => {
      const upstream = net.connect({ host, port: targetPort });
      // No Nagle: a delayed ACK would add ~40 ms to small writes and swamp the injected delay.
      client.setNoDelay(true);
      upstream.setNoDelay(true);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const pipe = (from: net.Socket, to: net.Socket): void => {
        const q = this.queue<Buffer | null>((b) => (b === null ? to.end() : to.write(b)));
        from.on('data', (b: Buffer) => q.push(b));
        // Close the other side only after the data queued before it has gone through.
        from.on('close', () => q.push(null));
      };
      pipe(client, upstream);
      pipe(upstream, client);
      const kill = (): void => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', kill);
      upstream.on('error', kill);
      client.on('close', () => this.sockets.delete(client));
      upstream.on('close', () => this.sockets.delete(upstream));
    });
    this.tcp = server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  }

  async close(): Promise<void> {
    for (const q of this.queues) q.close();
    for (const s of this.sockets) s.destroy();
    const closing: Promise<void>[] = [];
    for (const up of this.upstreams.values()) closing.push(new Promise((r) => up.socket.close(() => r())));
    if (this.udp) closing.push(new Promise((r) => this.udp!.close(() => r())));
    if (this.tcp) closing.push(new Promise((r) => this.tcp!.close(() => r())));
    await Promise.all(closing);
  }
}
