/**
 * The packet-accounting harness: bounded mixed load through one or more relays (many pairs, churn,
 * slow receivers, a flooder, a duplicate key, relay restarts and kills), every payload self-checking
 * (payload.ts), then quiescence and the equation (counts.ts) per node and in total. Peers are spread
 * over the nodes in turn, so with a meshed region most pairs cross a mesh hop.
 *
 * Connections are the load generator's BenchConn. A connection's "confirmed" count is the number of
 * packets it had written when it sent a Ping whose Pong came back: the relay handles frames in order,
 * so by then it had read all of them. A connection that leaves does so only after confirming everything
 * (then a half-close, reading to EOF); one that dies otherwise may have lost its unconfirmed packets in
 * transit, and only those may be missing from the relay's received count.
 */
import { readFileSync } from 'node:fs';
import { TimeoutError } from '../../errors.js';
import { FrameType, KEY_LEN, NodePrivateKey } from '../../protocol/index.js';
import { MESH_MAX_BUFFERED_BYTES } from '../../mesh/constants.js';
import { WRITE_BLOCK_THRESHOLD } from '../../server/constants.js';
import { BenchConn, parseTarget } from '../conn.js';
import { account, addCounts, regionAccount, totalDropped, zeroClientCounts, zeroCounts, type ClientCounts, type MeshPeerCounts, type NodeAccount, type RegionAccount, type RelayCounts } from './counts.js';
import { ACCOUNTING_MIN_PAYLOAD, readPayload, writePayload } from './payload.js';

/** One relay under test: the harness restarts it and reads its counters. */
export interface AccountingNode {
  readonly name: string;
  /** The relay's DERP URL now. */
  url(): string;
  /** The running life's counters (/metrics). */
  scrape(): Promise<RelayCounts>;
  /** Ends the running life under load (SIGTERM) and starts the next; resolves with the ended life's final counters. */
  restart(): Promise<RelayCounts>;
  /** Meshed nodes: how the others' mesh metrics name this one. */
  readonly meshId?: string;
  /** Meshed nodes: the running life's per-peer link counters. */
  scrapeMesh?(): Promise<Map<string, MeshPeerCounts>>;
  /** SIGKILL (no final counters); resolves once the process is gone. */
  crash?(): Promise<void>;
  /** The next life after crash(), on the same address. */
  revive?(): Promise<void>;
}

export interface AccountingOptions {
  nodes: AccountingNode[];
  durationMs: number;
  /** Ordinary peers (each sends to every other key). Default 12. */
  peers?: number;
  /** Peers that leave and rejoin (their keys receive packets while they are away). Default 4. */
  churners?: number;
  /** Peers that stop reading now and then. Default 2. */
  slowReceivers?: number;
  /** Keys with two connections at once. Default 1. */
  dupKeys?: number;
  /** Packets/s of all ordinary senders together. Default 3000. */
  rate?: number;
  /** Payload bytes of ordinary packets. Default 200. */
  size?: number;
  /** Flooder packet payload bytes (it sends to the slow receivers and an absent key as fast as the relay reads). Default 16000. */
  floodSize?: number;
  /** Relay restarts (SIGTERM), evenly spaced in the run (each node in turn). Default 1. */
  restarts?: number;
  /** Relay kills (SIGKILL, then a new life), spaced with the restarts, each node in turn. Default 0. */
  kills?: number;
  /**
   * Meshed: every other client of a killed node reconnects to the next node instead (and stays), the
   * rest wait for its new life. Default true.
   */
  failover?: boolean;
  onPhase?: (text: string) => void;
}

export interface AccountingReport {
  date: string;
  durationMs: number;
  settings: Required<Omit<AccountingOptions, 'nodes' | 'onPhase'>> & { nodes: number; meshed: boolean };
  perNode: NodeAccount[];
  total: RegionAccount;
  ok: boolean;
  problems: string[];
  /** The first few bad packets, for the failure message. */
  samples: string[];
  /** Each SIGKILL: how long the node was gone, what the other nodes delivered meanwhile, and its clients after it came back. */
  kills: Array<{ node: string; downMs: number; deliveredElsewhere: number; deliveredAfterRevive: number; movedPeers: number; deliveredToMoved: number }>;
}

const TICK_MS = 10;
const PING_EVERY_MS = 100;
const BARRIER_RETRY_MS = 100;
const BARRIER_TIMEOUT_MS = 5_000;
/** A writer with this much still unsent in its socket skips a tick (not counted as sent). */
const SENDER_BACKLOG_BYTES = 1 << 20;
const FLOOD_BACKLOG_BYTES = 1 << 20;
/** The flooder writes up to this many 16-packet batches a tick, while its socket takes them. */
const FLOOD_WRITES_PER_TICK = 8;
const RECONNECT_DEFAULT_MS = 100;
const RECONNECT_RETRY_MS = 100;
const RECONNECT_GIVE_UP_MS = 20_000;
const SLOW_PAUSE_MS = 500;
const SLOW_PERIOD_MS = 1_000;
const CHURN_PRESENT_MS: [number, number] = [300, 700];
const CHURN_AWAY_MS: [number, number] = [150, 400];
const QUIESCE_MAX_ROUNDS = 30;
const MAX_SAMPLES = 5;
const RECV_HEADER = 5 + KEY_LEN;
/** Smallest ForwardPacket frame the harness sends: header, two keys, the smallest payload. */
const MIN_FORWARD_FRAME = 5 + 2 * KEY_LEN + ACCOUNTING_MIN_PAYLOAD;
const MESH_WAIT_MS = 15_000;
const MESH_POLL_MS = 50;

type Role = 'peer' | 'churner' | 'slow' | 'dup' | 'flooder' | 'absent';

interface Peer {
  id: number;
  key: NodePrivateKey;
  role: Role;
  node: number;
  links: Set<Link>;
  /** Churner: currently meant to be connected. */
  present: boolean;
  /** Moved to another node when its own was killed (failover). */
  movedAt: number | null;
}

class Link {
  conn: BenchConn | null = null;
  sent = 0;
  confirmed = 0;
  readonly seq = new Map<number, number>();
  up = false;
  leaving = false;
  /** Half-closed: nothing more may be written (a write after end() destroys the socket, unread bytes and all). */
  ended = false;
  paused = false;
  /** The relay said Restarting on this connection. */
  restarting = false;
  /** The harness gave up on it (destroy), so what was in flight to it is gone. */
  aborted = false;
  reconnectInMs = RECONNECT_DEFAULT_MS;
  lastPingAt = 0;
  delivered = 0;
  /** The relay life it connected to (1 = the first). */
  life = 1;
  /** Set just before the scrape that precedes a SIGKILL of its life: confirmed and delivered then. */
  markConfirmed = -1;
  markDelivered = 0;
  readonly waiters: Array<{ target: number; resolve: () => void }> = [];
  closed: Promise<void>;
  markClosed!: () => void;
  /** The node it connected to (counts go to that node, even if its peer moves later). */
  readonly node: number;
  constructor(
    readonly id: number,
    readonly peer: Peer,
  ) {
    this.node = peer.node;
    this.closed = new Promise((r) => (this.markClosed = r));
  }
}

interface StreamState {
  seen: Uint8Array;
  /** Last sequence per receiving link (two links of one key each see an ordered subsequence). */
  last: Map<number, number>;
}

function rand(lo: number, hi: number): number {
  return lo + Math.random() * (hi - lo);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function kernelBufferBytes(): number {
  const max = (f: string, fallback: number): number => {
    try {
      return Number(readFileSync(f, 'utf8').trim().split(/\s+/)[2]) || fallback;
    } catch {
      return fallback;
    }
  };
  return max('/proc/sys/net/ipv4/tcp_wmem', 4 << 20) + max('/proc/sys/net/ipv4/tcp_rmem', 6 << 20);
}

/** Kernel socket buffers plus the relay's own block threshold: what one dying connection can hold. */
function inFlightBytesPerLink(): number {
  return kernelBufferBytes() + 2 * WRITE_BLOCK_THRESHOLD;
}

/** Polls `f` every MESH_POLL_MS until it is true; a TimeoutError naming `what` after MESH_WAIT_MS. */
async function waitFor(what: string, f: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + MESH_WAIT_MS;
  while (!(await f())) {
    if (Date.now() > deadline) throw new TimeoutError(`${what}: not within ${MESH_WAIT_MS} ms`);
    await sleep(MESH_POLL_MS);
  }
}

export async function runAccounting(o: AccountingOptions): Promise<AccountingReport> {
  const settings = {
    durationMs: o.durationMs,
    peers: o.peers ?? 12,
    churners: o.churners ?? 4,
    slowReceivers: o.slowReceivers ?? 2,
    dupKeys: o.dupKeys ?? 1,
    rate: o.rate ?? 3000,
    size: Math.max(ACCOUNTING_MIN_PAYLOAD, o.size ?? 200),
    floodSize: Math.max(ACCOUNTING_MIN_PAYLOAD, o.floodSize ?? 16_000),
    restarts: o.restarts ?? 1,
    kills: o.kills ?? 0,
    failover: o.failover ?? true,
    nodes: o.nodes.length,
    meshed: false,
  };
  const phase = o.onPhase ?? (() => undefined);
  const nodes = o.nodes;
  const started = Date.now();

  // ---- peers
  const peers: Peer[] = [];
  const addPeers = (n: number, role: Role): void => {
    for (let i = 0; i < n; i++) peers.push({ id: peers.length, key: NodePrivateKey.generate(), role, node: peers.length % nodes.length, links: new Set(), present: true, movedAt: null });
  };
  addPeers(settings.peers, 'peer');
  addPeers(settings.churners, 'churner');
  addPeers(settings.slowReceivers, 'slow');
  addPeers(settings.dupKeys, 'dup');
  addPeers(1, 'flooder');
  addPeers(1, 'absent');
  const receivers = peers.filter((p) => p.role !== 'flooder');
  const floodTargets = peers.filter((p) => p.role === 'slow' || p.role === 'absent');

  // ---- bookkeeping
  const perNode: ClientCounts[] = nodes.map(() => zeroClientCounts());
  const lives = nodes.map(() => zeroCounts());
  const lifeCount = nodes.map(() => 1);
  const killed = nodes.map(() => ({ lives: 0, held: 0 }));
  /** `${node}:${life}` of lives being or been SIGKILLed: their connections use the pre-kill marks. */
  const killedLives = new Set<string>();
  const meshed = nodes.length > 1 && nodes.every((n) => n.scrapeMesh !== undefined && n.meshId !== undefined);
  let diedMeshLinks = 0;
  let towardKilledAfterScrape = 0;
  const kills: AccountingReport['kills'] = [];
  /** Packets delivered to each node's clients, by the relay life their connection was made to. */
  const deliveredByLife: number[][] = nodes.map(() => []);
  /** Per kill: packets its moved clients received on their new node. */
  const movedDelivered: number[] = [];
  /** The life each kill started (parallel to kills). */
  const revivedLives: number[] = [];
  settings.meshed = meshed;
  const linkOwner: Peer[] = [];
  const streams = new Map<number, StreamState>();
  const samples: string[] = [];
  const inFlightPackets = Math.ceil(inFlightBytesPerLink() / (RECV_HEADER + ACCOUNTING_MIN_PAYLOAD));
  let running = true;
  let linkSeq = 0;
  const reconnecting = new Set<Promise<void>>();

  const bad = (kind: 'misdelivered' | 'corrupted' | 'duplicated' | 'reordered', node: number, what: string): void => {
    perNode[node]![kind]++;
    if (samples.length < MAX_SAMPLES) samples.push(`${kind}: ${what}`);
  };

  const onRecv = (link: Link, buf: Buffer, off: number, len: number): void => {
    const me = link.peer;
    const node = link.node;
    if (len < KEY_LEN) return bad('corrupted', node, `RecvPacket of ${len} bytes`);
    const f = readPayload(buf, off + KEY_LEN, len - KEY_LEN);
    if (f === null) return bad('corrupted', node, `bad magic or CRC in ${len - KEY_LEN} bytes to peer ${me.id}`);
    const owner = linkOwner[f.stream];
    const src = peers[f.src];
    if (f.dst !== me.id || owner === undefined || src === undefined || owner !== src || buf.compare(src.key.publicKey, 0, KEY_LEN, off, off + KEY_LEN) !== 0) {
      return bad('misdelivered', node, `stream ${f.stream} seq ${f.seq} for peer ${f.dst} (from ${f.src}) reached peer ${me.id}`);
    }
    const sk = f.stream * 4096 + f.dst;
    let s = streams.get(sk);
    if (s === undefined) streams.set(sk, (s = { seen: new Uint8Array(1024), last: new Map() }));
    const byte = f.seq >>> 3;
    if (byte >= s.seen.length) {
      const g = new Uint8Array(Math.max(byte + 1, s.seen.length * 2));
      g.set(s.seen);
      s.seen = g;
    }
    const bit = 1 << (f.seq & 7);
    if ((s.seen[byte]! & bit) !== 0) return bad('duplicated', node, `stream ${f.stream} seq ${f.seq} to peer ${me.id} again`);
    s.seen[byte]! |= bit;
    const last = s.last.get(link.id) ?? -1;
    if (f.seq < last) bad('reordered', node, `stream ${f.stream} seq ${f.seq} after ${last} on link ${link.id}`);
    else s.last.set(link.id, f.seq);
    perNode[node]!.delivered++;
    link.delivered++;
    if (me.movedAt !== null && link.node === me.node) movedDelivered[me.movedAt]!++;
    const byLife = deliveredByLife[node]!;
    byLife[link.life] = (byLife[link.life] ?? 0) + 1;
  };

  const onPong = (link: Link, buf: Buffer, off: number, len: number): void => {
    if (len < 8) return;
    const echoed = buf.readUInt32BE(off + 4);
    if (echoed > link.confirmed) link.confirmed = echoed;
    for (let i = link.waiters.length - 1; i >= 0; i--) {
      const w = link.waiters[i]!;
      if (w.target <= link.confirmed) {
        link.waiters.splice(i, 1);
        w.resolve();
      }
    }
  };

  const ping = (link: Link): void => {
    if (!link.up || link.ended || link.conn === null) return;
    const f = Buffer.alloc(5 + 8);
    f[0] = FrameType.Ping;
    f.writeUInt32BE(8, 1);
    f.writeUInt32BE(link.sent, 5 + 4);
    link.conn.write(f);
    link.lastPingAt = Date.now();
  };

  /** Resolves true once a Pong shows the relay has read everything this link wrote so far. */
  const barrier = async (link: Link): Promise<boolean> => {
    const target = link.sent;
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<boolean>((resolve) => {
      link.waiters.push({ target, resolve: () => resolve(true) });
      const deadline = Date.now() + BARRIER_TIMEOUT_MS;
      const again = (): void => {
        if (!link.up || Date.now() > deadline) return resolve(link.confirmed >= target);
        ping(link);
        timer = setTimeout(again, BARRIER_RETRY_MS);
      };
      again();
    });
    const ok = await Promise.race([done, link.closed.then(() => link.confirmed >= target)]);
    clearTimeout(timer);
    return ok;
  };

  const connect = async (peer: Peer): Promise<Link> => {
    const link = new Link(linkSeq++, peer);
    link.life = lifeCount[link.node]!;
    linkOwner[link.id] = peer;
    const target = parseTarget(nodes[peer.node]!.url());
    const onFrame = (type: number, buf: Buffer, off: number, len: number): void => {
      if (type === FrameType.RecvPacket) onRecv(link, buf, off, len);
      else if (type === FrameType.Pong) onPong(link, buf, off, len);
      else if (type === FrameType.Restarting && len >= 4) {
        link.restarting = true;
        link.reconnectInMs = buf.readUInt32BE(off);
      }
    };
    const conn = await BenchConn.dial(target, peer.key, { verifyServerInfo: false, onFrame });
    link.conn = conn;
    link.up = true;
    peer.links.add(link);
    conn.onClose = (err) => onLinkClosed(link, err);
    return link;
  };

  const onLinkClosed = (link: Link, err: Error | undefined): void => {
    const peer = link.peer;
    link.up = false;
    peer.links.delete(link);
    // A killed life's counters stop at its last scrape: only what a Pong confirmed before it counts.
    const killedLink = killedLives.has(`${link.node}:${link.life}`);
    const confirmed = killedLink ? Math.min(link.confirmed, Math.max(0, link.markConfirmed)) : link.confirmed;
    const graceful = link.leaving && confirmed >= link.sent;
    const c = perNode[link.node]!;
    if (killedLink) c.deliveredAfterKilledScrape += link.delivered - (link.markConfirmed < 0 ? 0 : link.markDelivered);
    if (!graceful) {
      c.diedLinks++;
      c.unconfirmedOnDied += link.sent - confirmed;
      if (killedLink) c.unconfirmedOnKilled += link.sent - confirmed;
      // A clean EOF came after every byte the relay wrote; only a reset (or our own destroy) loses some.
      if (err !== undefined || link.aborted) {
        c.resetLinks++;
        c.inFlightBoundOnDied += inFlightPackets;
        if (link.restarting && !link.aborted) c.resetAfterRestarting++;
      }
    }
    link.markClosed();
    for (const w of link.waiters.splice(0)) w.resolve();
    if (!graceful && running && (peer.role !== 'churner' || peer.present)) {
      const p = reconnect(peer, link.reconnectInMs).finally(() => reconnecting.delete(p));
      reconnecting.add(p);
    }
  };

  const reconnect = async (peer: Peer, afterMs: number): Promise<void> => {
    await sleep(afterMs);
    const deadline = Date.now() + RECONNECT_GIVE_UP_MS;
    for (;;) {
      try {
        await connect(peer);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new TimeoutError(`peer ${peer.id} could not reconnect to ${nodes[peer.node]!.name} within ${RECONNECT_GIVE_UP_MS} ms: ${(err as Error).message}`);
        await sleep(RECONNECT_RETRY_MS);
      }
    }
  };

  // ---- sending
  const send = (link: Link, dsts: Peer[], count: number, size: number, backlog: number): void => {
    const conn = link.conn;
    if (!link.up || link.leaving || conn === null || count <= 0 || dsts.length === 0) return;
    if (conn.backlog > backlog) return;
    const frameLen = 5 + KEY_LEN + size;
    const out = Buffer.allocUnsafe(frameLen * count);
    for (let i = 0; i < count; i++) {
      const dst = dsts[(link.sent + i) % dsts.length]!;
      const base = i * frameLen;
      out[base] = FrameType.SendPacket;
      out.writeUInt32BE(KEY_LEN + size, base + 1);
      dst.key.publicKey.copy(out, base + 5);
      const seq = link.seq.get(dst.id) ?? 0;
      link.seq.set(dst.id, seq + 1);
      writePayload(out, base + 5 + KEY_LEN, size, { stream: link.id, src: link.peer.id, dst: dst.id, seq });
    }
    conn.write(out);
    link.sent += count;
    perNode[link.node]!.sent += count;
  };

  const senders = peers.filter((p) => p.role === 'peer' || p.role === 'churner' || p.role === 'slow' || p.role === 'dup');
  const destsOf = new Map(senders.map((p) => [p.id, receivers.filter((r) => r !== p)]));
  const perTick = (settings.rate * TICK_MS) / 1000;
  let carry = 0;
  const tick = (): void => {
    const now = Date.now();
    const active = senders.flatMap((p) => [...p.links]).filter((l) => l.up && !l.leaving);
    carry += perTick;
    const each = Math.floor(carry / Math.max(1, active.length));
    if (each > 0) carry -= each * active.length;
    for (const l of active) send(l, destsOf.get(l.peer.id)!, each, settings.size, SENDER_BACKLOG_BYTES);
    for (const p of peers) if (p.role === 'flooder') for (const l of p.links) for (let i = 0; i < FLOOD_WRITES_PER_TICK; i++) send(l, floodTargets, 16, settings.floodSize, FLOOD_BACKLOG_BYTES);
    for (const p of peers) for (const l of p.links) if (now - l.lastPingAt >= PING_EVERY_MS && !l.paused) ping(l);
  };

  // ---- churn and slow readers
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, f: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      f();
    }, ms);
    timers.add(t);
  };
  const leave = async (link: Link): Promise<void> => {
    link.leaving = true;
    if (await barrier(link)) {
      link.ended = true;
      link.conn?.end();
    } else {
      link.aborted = true;
      link.conn?.destroy();
    }
    await link.closed;
  };
  const churn = (peer: Peer): void => {
    later(rand(...CHURN_PRESENT_MS), () => {
      if (!running) return;
      peer.present = false;
      void Promise.all([...peer.links].map(leave)).then(() => {
        later(rand(...CHURN_AWAY_MS), () => {
          if (!running) return;
          peer.present = true;
          if (peer.links.size > 0) return churn(peer);
          const p = reconnect(peer, 0)
            .then(() => churn(peer))
            .finally(() => reconnecting.delete(p));
          reconnecting.add(p);
        });
      });
    });
  };
  const slowCycle = (peer: Peer): void => {
    later(SLOW_PERIOD_MS - SLOW_PAUSE_MS, () => {
      if (!running) return;
      for (const l of peer.links) {
        l.paused = true;
        l.conn?.pauseReading();
      }
      later(SLOW_PAUSE_MS, () => {
        for (const l of peer.links) {
          l.paused = false;
          l.conn?.resumeReading();
        }
        slowCycle(peer);
      });
    });
  };

  // ---- mesh
  const peersOf = (n: number): Promise<Map<string, MeshPeerCounts>> => nodes[n]!.scrapeMesh!();
  const others = (n: number): number[] => nodes.map((_, i) => i).filter((i) => i !== n);
  /** Keys connected to each node now (what its peers should have learned). */
  const keysAt = (n: number): number => peers.filter((p) => p.node === n && p.links.size > 0).length;
  const meshSettled = async (): Promise<boolean> => {
    for (let n = 0; n < nodes.length; n++) {
      const seen = await peersOf(n);
      for (const m of others(n)) {
        const p = seen.get(nodes[m]!.meshId!);
        if (p === undefined || !p.up || p.keys < keysAt(m)) return false;
      }
    }
    return true;
  };

  /** SIGKILL node n under load, accounting for its life as far as counters can (counts.ts), then a new life. */
  const killNode = async (n: number): Promise<void> => {
    const node = nodes[n]!;
    const id = meshed ? node.meshId! : '';
    const toward = async (): Promise<number> => {
      let sum = 0;
      if (meshed) for (const m of others(n)) sum += (await peersOf(m)).get(id)?.forwarded ?? 0;
      return sum;
    };
    const before = await toward();
    killedLives.add(`${n}:${lifeCount[n]}`);
    for (const p of peers) {
      if (p.node !== n) continue;
      for (const l of p.links) {
        l.markConfirmed = l.confirmed;
        l.markDelivered = l.delivered;
      }
    }
    const last = await node.scrape();
    const elsewhere = (): number => perNode.reduce((a, c, i) => (i === n ? a : a + c.delivered), 0);
    const downAt = Date.now();
    const deliveredBefore = elsewhere();
    // Half of its clients go to the next node when they reconnect (a region's clients fail over).
    let moved = 0;
    if (meshed && settings.failover) {
      const mine = peers.filter((p) => p.node === n && p.role !== 'absent');
      for (let i = 0; i < mine.length; i += 2) {
        mine[i]!.node = (n + 1) % nodes.length;
        mine[i]!.movedAt = kills.length;
        moved++;
      }
      movedDelivered.push(0);
    }
    await node.crash!();
    lifeCount[n]!++;
    killed[n]!.lives++;
    killed[n]!.held += last.received + last.forwardedIn - last.sent - last.forwardedOut - totalDropped(last);
    lives[n] = addCounts(lives[n]!, last);
    if (meshed) {
      // Once every other node's link to it is down, nothing more is written towards the dead life.
      await waitFor(`the other nodes' links to killed ${node.name} went down`, async () => {
        for (const m of others(n)) if ((await peersOf(m)).get(id)?.up !== false) return false;
        return true;
      });
      towardKilledAfterScrape += (await toward()) - before;
    }
    await node.revive!();
    kills.push({ node: node.name, downMs: Date.now() - downAt, deliveredElsewhere: elsewhere() - deliveredBefore, deliveredAfterRevive: 0, movedPeers: moved, deliveredToMoved: 0 });
    revivedLives.push(lifeCount[n]!);
  };

  // ---- run
  const problems: string[] = [];
  let ticker: NodeJS.Timeout | null = null;
  try {
    if (meshed) {
      phase(`waiting for the mesh of ${nodes.length} nodes`);
      await waitFor('every mesh link up', async () => {
        for (let n = 0; n < nodes.length; n++) {
          const seen = await peersOf(n);
          if (!others(n).every((m) => seen.get(nodes[m]!.meshId!)?.up === true)) return false;
        }
        return true;
      });
    }
    phase(`connecting ${peers.length - 1} keys (${settings.dupKeys} of them twice) to ${nodes.length} node(s)`);
    for (const p of peers) {
      if (p.role === 'absent') continue;
      await connect(p);
      if (p.role === 'dup') await connect(p);
    }
    if (meshed) await waitFor('every node learned the keys connected to the others', meshSettled);
    const events: Array<'restart' | 'kill'> = [];
    for (let i = 0; i < Math.max(settings.restarts, settings.kills); i++) {
      if (i < settings.restarts) events.push('restart');
      if (i < settings.kills) events.push('kill');
    }
    phase(`mixed load for ${settings.durationMs} ms: ${settings.rate} packets/s over ${senders.length} senders, churn, slow readers, a flooder, ${settings.restarts} restart(s), ${settings.kills} kill(s)`);
    // The load's clock starts now: connecting (and a mesh learning its keys) is not part of it.
    const loadStarted = Date.now();
    ticker = setInterval(tick, TICK_MS);
    for (const p of peers) if (p.role === 'churner') churn(p);
    for (const p of peers) if (p.role === 'slow') slowCycle(p);
    // Evenly spaced, but at least half a spacing after the end of the one before (a restart takes a
    // while), and a whole spacing of load after the last one, so its clients come back under load.
    const gap = settings.durationMs / (events.length + 1);
    let nextAt = loadStarted + gap;
    for (let i = 0; i < events.length; i++) {
      await sleep(Math.max(0, nextAt - Date.now()));
      const n = i % nodes.length;
      if (nodes.length > 1) diedMeshLinks += 2 * (nodes.length - 1);
      if (events[i] === 'kill') {
        phase(`killing ${nodes[n]!.name} (SIGKILL) under load`);
        await killNode(n);
      } else {
        phase(`restarting ${nodes[n]!.name} (SIGTERM) under load`);
        lives[n] = addCounts(lives[n]!, await nodes[n]!.restart());
        lifeCount[n]!++;
      }
      nextAt = Math.max(loadStarted + (i + 2) * gap, Date.now() + (i === events.length - 1 ? gap : gap / 2));
    }
    await sleep(Math.max(0, nextAt - Date.now()));

    phase('stopping the load; waiting for the relays to go quiet');
    running = false;
    clearInterval(ticker);
    ticker = null;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    for (const p of peers) {
      for (const l of p.links) {
        l.paused = false;
        l.conn?.resumeReading();
      }
    }
    // Churners on their way out finish leaving; reconnects under way finish.
    while (reconnecting.size > 0) await Promise.allSettled([...reconnecting]);
    const delivered = (): number => perNode.reduce((a, c) => a + c.delivered, 0);
    let prev = -1;
    for (let round = 0; round < QUIESCE_MAX_ROUNDS; round++) {
      const links = peers.flatMap((p) => [...p.links]).filter((l) => !l.leaving);
      const ok = await Promise.all(links.map(barrier));
      const now = delivered();
      if (ok.every(Boolean) && now === prev) break;
      prev = now;
      if (round === QUIESCE_MAX_ROUNDS - 1) problems.push(`the relays did not go quiet within ${QUIESCE_MAX_ROUNDS} barrier rounds`);
    }
    const leavingLinks = peers.flatMap((p) => [...p.links]).filter((l) => l.leaving);
    await Promise.all(leavingLinks.map((l) => l.closed));
    for (let n = 0; n < nodes.length; n++) lives[n] = addCounts(lives[n]!, await nodes[n]!.scrape());
  } finally {
    running = false;
    if (ticker !== null) clearInterval(ticker);
    for (const t of timers) clearTimeout(t);
    for (const p of peers) for (const l of p.links) l.conn?.destroy();
  }

  kills.forEach((k, i) => (k.deliveredToMoved = movedDelivered[i] ?? 0));
  kills.forEach((k, i) => (k.deliveredAfterRevive = deliveredByLife[nodes.findIndex((x) => x.name === k.node)]![revivedLives[i]!] ?? 0));
  const perNodeAccounts = nodes.map((n, i) => account(n.name, lifeCount[i]!, lives[i]!, perNode[i]!, killed[i]!));
  const total = regionAccount(perNodeAccounts, {
    diedLinks: diedMeshLinks,
    inFlightPerLink: Math.ceil((kernelBufferBytes() + MESH_MAX_BUFFERED_BYTES) / MIN_FORWARD_FRAME),
    forwardedTowardKilledAfterScrape: towardKilledAfterScrape,
  });
  problems.push(...perNodeAccounts.flatMap((a) => a.problems));
  problems.push(...total.problems);
  return {
    date: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    settings,
    perNode: perNodeAccounts,
    total,
    ok: problems.length === 0,
    problems,
    samples,
    kills,
  };
}
