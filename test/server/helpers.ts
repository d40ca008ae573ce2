/** Small helpers for the relay tests (limits, admission, turns). */
import * as net from 'node:net';
import { MAX_PACKET_SIZE, buildClientInfoFrame, encode } from '../../src/lib/protocol/index.js';
import type { RelayServer } from '../../src/lib/server/index.js';
import type { RawClient } from '../helpers/rawclient.js';

/** Polls `cond` every few ms until true; throws after `ms` (a bound, not a timing assertion). */
export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Waits for ServerKey on an opened client and returns the ClientInfo frame for it (not sent). */
export async function clientInfoFor(c: RawClient): Promise<Buffer> {
  const sk = await c.next();
  if (sk.type !== 'ServerKey') throw new Error(`expected ServerKey, got ${sk.type}`);
  c.serverKey = Buffer.from(sk.serverKey);
  return buildClientInfoFrame(c.key.keyObject, c.key.publicKey, c.serverKey, { version: 2, canAckPings: true });
}

/** `n` upgraded clients, each with its ClientInfo frame built and not sent yet (a burst the test sends at once). */
export async function upgradedClients(open: () => Promise<RawClient>, n: number): Promise<{ clients: RawClient[]; frames: Buffer[] }> {
  const clients: RawClient[] = [];
  const frames: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const c = await open();
    clients.push(c);
    frames.push(await clientInfoFor(c));
  }
  return { clients, frames };
}

/** A plain TCP connection; resolves `closed` when the server closes it. */
export function tcp(port: number, localAddress = '127.0.0.1'): Promise<{ sock: net.Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress }, () => {
      sock.off('error', reject);
      sock.on('error', () => undefined);
      // Read (and discard) whatever the relay answers, so its FIN is seen.
      sock.resume();
      resolve({ sock, closed });
    });
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.once('error', reject);
  });
}

/** A canary round trip: a packet from `a` reaches `b`, and a Ping from `a` is answered. */
export async function canaryWorks(a: RawClient, b: RawClient, tag: string): Promise<void> {
  const data = Buffer.from(`canary ${tag}`);
  a.sendPacket(b.publicKey, data);
  const got = await b.nextOf('RecvPacket');
  if (!Buffer.from(got.data).equals(data)) throw new Error(`canary ${tag}: got the wrong packet`);
  await a.ping();
}

/** A deferred value: a promise with its resolve and reject. */
export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** Writes `count` maximal packets from `a` to `dst`, honouring a's socket back-pressure; returns how many. */
export async function blast(a: RawClient, dst: Buffer, count: number, stop?: () => boolean): Promise<number> {
  const payload = Buffer.alloc(MAX_PACKET_SIZE);
  let i = 0;
  for (; i < count && !(stop?.() ?? false); i++) {
    payload.writeUInt32BE(i, 0);
    if (!a.sock!.write(encode.sendPacket(dst, payload))) await new Promise((resolve) => a.sock!.once('drain', resolve));
  }
  return i;
}

/** `n` plain TCP connections to the relay, each pushed to `into` as it connects, then accepted (counted) and silent. */
export async function openTcp(relay: RelayServer, n: number, into: net.Socket[]): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = await new Promise<net.Socket>((resolve, reject) => {
      const c = net.connect({ host: '127.0.0.1', port: relay.port }, () => resolve(c));
      c.once('error', reject);
    });
    into.push(s);
    out.push(s);
  }
  await until(() => relay.stats().openConnections === n, 'every connection accepted');
  return out;
}
