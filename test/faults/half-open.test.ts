/**
 * Fault: half-open TCP connections (the peer vanished without FIN or RST). Clients run in a network
 * namespace the test makes, joined to the relay by a veth pair; the namespace's end then loses its address,
 * so nothing more reaches the relay from them and nothing the relay sends is answered. TCP keepalive (tcpKeepAliveMs) ends each such
 * connection with ETIMEDOUT, counted as deadPeers (derp_errors_total{kind="dead_peer"}); the canary pair on
 * the same relay keeps relaying throughout.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import type { DERPClient } from '../../src/lib/client/index.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { NODE, ROOT } from '../helpers/cli.js';
import { canaryRoundTrip, connectClient, until } from './helpers.js';

const n = process.pid % 250;
const NS = `derpft${n}`;
const HOST_IF = `dfh${n}`;
const NS_IF = `dfn${n}`;
const HOST_IP = `10.213.${n}.1`;
const NS_IP = `10.213.${n}.2`;
const TCP_KEEPALIVE_MS = 1_000;
/** libuv probes once a second, 10 times, after the idle time; the bound the test allows on top is slack for a shared machine. */
const DETECT_BOUND_MS = TCP_KEEPALIVE_MS + 10 * 1_000 + 9_000;
const PEERS = 3;

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const children: ChildProcess[] = [];
const clients: DERPClient[] = [];
let relay: RelayServer | null = null;

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of clients) await c.disconnect();
  await relay?.stop({ restarting: false });
  // Deleting the namespace removes its veth end, and with it the host end.
  try {
    ip('netns', 'del', NS);
  } catch {
    /* never made */
  }
  try {
    ip('link', 'del', HOST_IF);
  } catch {
    /* gone with the namespace */
  }
});

/** Bytes the relay has sent to the namespace that are not acknowledged yet (ss Send-Q). */
function unackedToNamespace(): number {
  const out = execFileSync('ss', ['-tnH', 'state', 'established', 'dst', NS_IP], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() !== '').reduce((sum, l) => sum + Number(l.trim().split(/\s+/)[1]), 0);
}

/** A DERPClient inside the namespace that connects, prints its key and then just holds the connection. */
function peerInNamespace(url: string): Promise<string> {
  const code = `
    const { DERPClient } = await import(${JSON.stringify(`${ROOT}/src/lib/client/index.ts`)});
    const c = new DERPClient({ reconnect: false, readTimeoutMs: 3_600_000 });
    await c.connect(${JSON.stringify(url)});
    process.stdout.write(c.publicText() + '\\n');
    setInterval(() => {}, 60_000);`;
  const child = spawn('ip', ['netns', 'exec', NS, NODE, '--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((res, rej) => {
    child.stdout!.once('data', (d: Buffer) => res(d.toString().trim()));
    child.once('exit', (code) => rej(new Error(`peer in ${NS} exited ${code}: ${err}`)));
  });
}

describe('fault: half-open TCP connections', () => {
  it('frees connections whose peer vanished without FIN within the keepalive bound, counts them, canary unaffected', async () => {
    ip('netns', 'add', NS);
    ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF);
    ip('link', 'set', NS_IF, 'netns', NS);
    ip('addr', 'add', `${HOST_IP}/24`, 'dev', HOST_IF);
    ip('link', 'set', HOST_IF, 'up');
    ip('netns', 'exec', NS, 'ip', 'addr', 'add', `${NS_IP}/24`, 'dev', NS_IF);
    ip('netns', 'exec', NS, 'ip', 'link', 'set', NS_IF, 'up');

    const logger = new MemoryLogger();
    relay = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: `${HOST_IP}:0`, logger, tcpKeepAliveMs: TCP_KEEPALIVE_MS });
    await relay.start();
    const url = relay.url;
    const [ca, cb] = await Promise.all([connectClient(url), connectClient(url)]);
    clients.push(ca!, cb!);
    const keys = await Promise.all(Array.from({ length: PEERS }, () => peerInNamespace(url)));
    expect(new Set(keys).size).toBe(PEERS);
    await until(() => relay!.stats().currentConnections === PEERS + 2, 10_000, 'every peer registered');
    await canaryRoundTrip(ca!, cb!, 'before');
    // The peers are idle with everything acknowledged (a delayed ACK of ServerInfo would leave data in
    // flight, which the kernel's retransmission timeout governs instead of keepalive).
    await until(() => unackedToNamespace() === 0, 5_000, 'the relay\'s writes to the peers acknowledged');

    // The namespace loses its address (the link stays up): the peers can send nothing more, and what the
    // relay sends them is dropped there, unanswered: no FIN, RST or ACK, as when a peer's network vanishes.
    // (Taking the link down instead makes the relay's kernel see local congestion, retried without counting
    // probes; tc/netem and iptables/nft are not available on this machine.)
    ip('netns', 'exec', NS, 'ip', 'addr', 'flush', 'dev', NS_IF);
    const downAt = Date.now();
    await canaryRoundTrip(ca!, cb!, 'while the peers are gone');
    await until(() => relay!.stats().currentConnections === 2, DETECT_BOUND_MS, 'the half-open connections to be freed');
    const freedMs = Date.now() - downAt;
    const st = relay.stats();
    expect(st.deadPeers).toBe(PEERS);
    expect(st.writeTimeouts).toBe(0);
    expect(logger.entries.filter((e) => /ETIMEDOUT|timed out/i.test(String(e.fields.reason))).length).toBe(PEERS);
    expect(ca!.connected && cb!.connected).toBe(true);
    await canaryRoundTrip(ca!, cb!, 'after');
    console.log(`[faults] half-open: ${PEERS} peers freed ${freedMs} ms after they vanished (tcpKeepAliveMs ${TCP_KEEPALIVE_MS})`);
  });
});
