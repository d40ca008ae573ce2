import * as dgram from 'node:dgram';
import type { StunHandledEvent, StunServer } from '../../src/lib/stun/server.js';

/** true if this machine can bind UDP on ::1 (some CI containers have no IPv6 loopback). */
export async function hasIPv6Loopback(): Promise<boolean> {
  const s = dgram.createSocket('udp6');
  return new Promise((resolve) => {
    s.once('error', () => {
      s.close();
      resolve(false);
    });
    s.bind(0, '::1', () => {
      s.close();
      resolve(true);
    });
  });
}

export interface Datagram {
  msg: Buffer;
  from: dgram.RemoteInfo;
}

/** A test UDP peer that records every datagram it receives. */
export class Peer {
  readonly received: Buffer[] = [];
  private readonly from: dgram.RemoteInfo[] = [];
  private waiters: ((d: Datagram) => void)[] = [];
  /** Datagrams received in total. */
  count = 0;

  private constructor(readonly socket: dgram.Socket) {
    socket.on('message', (msg, rinfo) => {
      this.count++;
      const w = this.waiters.shift();
      if (w) w({ msg, from: rinfo });
      else {
        this.received.push(msg);
        this.from.push(rinfo);
      }
    });
  }

  static async open(type: 'udp4' | 'udp6', host: string): Promise<Peer> {
    const socket = dgram.createSocket(type);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return new Peer(socket);
  }

  get port(): number {
    return this.socket.address().port;
  }

  /** Next datagram (already queued or future). */
  async next(): Promise<Buffer> {
    return (await this.nextDatagram()).msg;
  }

  nextDatagram(): Promise<Datagram> {
    const q = this.received.shift();
    if (q) return Promise.resolve({ msg: q, from: this.from.shift()! });
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  send(buf: Buffer, port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => this.socket.send(buf, port, host, (err) => (err ? reject(err) : resolve())));
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

/** Resolves with the server's 'handled' event for the next datagram from `port`. */
export function nextHandled(server: StunServer, port: number): Promise<StunHandledEvent> {
  return new Promise((resolve) => {
    const on = (e: StunHandledEvent): void => {
      if (e.port !== port) return;
      server.off('handled', on);
      resolve(e);
    };
    server.on('handled', on);
  });
}
