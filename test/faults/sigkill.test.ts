/**
 * Fault: `derp serve` killed with SIGKILL mid-stream, then started again on the same port with the same
 * key. DERPClient reconnects by itself and packets flow again; only packets in flight at the kill are lost.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FaultScene, Receiver, canaryRoundTrip, connectClient, freePort, packet, serve, until } from './helpers.js';

/** Packets a keeps in flight at most: the bound on what a kill can lose. */
const WINDOW = 64;
const scene = new FaultScene();
const { procs, clients } = scene;
afterAll(() => scene.cleanup());

describe('fault: SIGKILL of derp serve mid-stream', () => {
  it('clients reconnect to the restarted relay by themselves; only in-flight packets are lost, in order', async () => {
    const dir = await scene.tempDir('derp-fault-kill-');
    const port = await freePort();
    const args = ['--insecure-http', '--addr', `127.0.0.1:${port}`, '--key-file', join(dir, 'derp.key'), '--no-stun', '--metrics-addr', 'none'];
    const s1 = await serve(args);
    procs.push(s1);
    const [a, b, ca, cb] = await Promise.all([0, 1, 2, 3].map(() => connectClient(s1.url)));
    clients.push(a!, b!, ca!, cb!);
    const rx = new Receiver(b!);
    await canaryRoundTrip(ca!, cb!, 'before');

    // Mid-stream: a sends steadily; the kill lands while packets are in the relay's and the sockets' buffers.
    let seq = 0;
    let reconnected = false;
    const lost = new Promise<void>((r) => a!.once('disconnected', () => r()));
    // At most WINDOW packets unanswered, as a transport's congestion window would keep it; paused while a is away.
    const streaming = (async () => {
      while (!reconnected) {
        if (a!.connected && seq - 1 - (rx.seqs.at(-1) ?? -1) < WINDOW) await a!.send(b!.publicKey, packet(seq++));
        else await new Promise((r) => setTimeout(r, 1));
      }
    })();
    await until(() => rx.seqs.length >= 200, 10_000, '200 packets before the kill');
    const lastBeforeKill = seq - 1;
    s1.proc.kill('SIGKILL');
    await lost;
    await s1.exit;
    const s2 = await serve(args);
    procs.push(s2);
    await until(() => a!.connected && b!.connected && ca!.connected && cb!.connected, 15_000, 'every client back');
    reconnected = true;
    await streaming;
    const firstAfter = seq;
    for (let i = 0; i < 200; i++) await a!.send(b!.publicKey, packet(seq++));
    await until(() => rx.has(seq - 1), 10_000, 'the last packet after the restart');

    const received = new Set(rx.seqs);
    const missing = Array.from({ length: seq }, (_, i) => i).filter((i) => !received.has(i));
    // Nothing sent after both were back is missing; what is missing was sent around the kill.
    expect(missing.filter((i) => i >= firstAfter)).toEqual([]);
    expect(missing.length).toBeLessThanOrEqual(WINDOW);
    expect(rx.inOrder()).toBe(true);
    expect(a!.stats.connects).toBe(2);
    expect(b!.stats.connects).toBe(2);
    await canaryRoundTrip(ca!, cb!, 'after');
    console.log(`[faults] SIGKILL: sent ${seq}, received ${rx.seqs.length}, lost ${missing.length} (in flight at the kill; last sent before it #${lastBeforeKill})`);
  });
});
