// `derp connect` end to end: two CLI processes (built dist/) talk through an in-test RelayServer,
// by stdin/stdout lines and through the UDP bridge. `npm test` builds dist/ first.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { writeKeyFile } from '../../src/lib/keys/keyfile.js';
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer } from '../../src/lib/server/relay.js';
import { generateSelfSigned } from '../../src/lib/certs/selfsigned-cert.js';
import { flatCliText } from '../helpers/cli.js';

const ROOT = resolve(import.meta.dirname, '../..');
const NODE = join(ROOT, 'node_modules/.bin/node');

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A spawned `derp connect` with its stdout/stderr split into lines we can wait on. */
class Proc {
  readonly out: string[] = [];
  readonly err: string[] = [];
  private waiters: { stream: 'out' | 'err'; pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcessWithoutNullStreams) {
    for (const [name, stream] of [
      ['out', child.stdout],
      ['err', child.stderr],
    ] as const) {
      createInterface({ input: stream }).on('line', (l) => {
        this[name].push(l);
        this.waiters = this.waiters.filter((w) => {
          if (w.stream !== name || !w.pred(l)) return true;
          w.resolve(l);
          return false;
        });
      });
    }
    this.exited = once(child, 'exit').then(([code]) => code as number | null);
  }

  wait(stream: 'out' | 'err', pred: (l: string) => boolean): Promise<string> {
    const found = this[stream].find(pred);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((r) => this.waiters.push({ stream, pred, resolve: r }));
  }

  /** Next JSON event with this name on stdout. */
  async event(name: string, pred: (e: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
    const line = await this.wait('out', (l) => {
      if (!l.startsWith('{')) return false;
      const e = JSON.parse(l) as Record<string, unknown>;
      return e.event === name && pred(e);
    });
    return JSON.parse(line) as Record<string, unknown>;
  }
}

function connect(args: string[]): Proc {
  const child = spawn(NODE, ['bin/run.js', 'connect', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  const p = new Proc(child);
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await p.exited;
    }
  });
  return p;
}

async function setup(tls = false) {
  const cert = tls ? await generateSelfSigned('127.0.0.1') : undefined;
  const server = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', ...(cert ? { tls: { cert: cert.certPem, key: cert.keyPem } } : {}) });
  await server.start();
  cleanups.push(() => server.stop({ restarting: false }));
  const dir = await mkdtemp(join(tmpdir(), 'derp-connect-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const a = NodePrivateKey.generate();
  const b = NodePrivateKey.generate();
  await writeKeyFile(join(dir, 'a.key'), a);
  await writeKeyFile(join(dir, 'b.key'), b);
  return { server, cert, a, b, aKey: join(dir, 'a.key'), bKey: join(dir, 'b.key') };
}

describe('derp connect', () => {
  it('delivers stdin lines to the peer stdout and exits 0 on EOF / SIGTERM', async () => {
    const { server, a, b, aKey, bKey } = await setup();
    const pb = connect([a.publicText(), '--server', server.url, '--key-file', bKey]);
    expect(await pb.wait('out', () => true)).toBe(b.publicText());
    await pb.wait('err', (l) => l.startsWith('connected to'));
    const pa = connect([b.publicText(), '--server', server.url, '--key-file', aKey, '--transport', 'websocket']);
    expect(await pa.wait('out', () => true)).toBe(a.publicText());
    await pa.wait('err', (l) => l.startsWith('connected to'));

    pa.child.stdin.end('hello\nworld\n');
    await pb.wait('out', (l) => l === 'world');
    expect(pb.out.slice(1)).toEqual(['hello', 'world']);
    expect(await pa.exited).toBe(0);
    await pb.wait('err', (l) => l.startsWith(`peer gone: ${a.publicText()}`));
    pb.child.kill('SIGTERM');
    expect(await pb.exited).toBe(0);
  });

  it('speaks JSON events and hex payloads over TLS with a pinned certificate', async () => {
    const { server, cert, a, b, aKey, bKey } = await setup(true);
    const common = ['--server', server.url, '--cert-name', cert!.certName, '--json', '--hex'];
    const pb = connect([a.publicText(), '--key-file', bKey, ...common]);
    expect(await pb.event('key')).toEqual({ schema: 'derp.connect/v1', event: 'key', publicKey: b.publicText() });
    expect(await pb.event('connected')).toMatchObject({ url: server.url, serverKey: `nodekey:${server.publicKey.toString('hex')}` });
    const pa = connect([b.publicText(), '--key-file', aKey, ...common]);
    await pa.event('connected');
    pa.child.stdin.write('68656c6c6f\n');
    expect(await pb.event('packet')).toEqual({ schema: 'derp.connect/v1', event: 'packet', from: a.publicText(), data: '68656c6c6f', len: 5 });
    pa.child.stdin.end();
    expect(await pa.exited).toBe(0);
    expect(await pb.event('peerGone')).toMatchObject({ peer: a.publicText(), reason: 'disconnected' });
    pb.child.kill('SIGINT');
    expect(await pb.exited).toBe(0);
  });

  it('bridges UDP both ways between two local sockets (fixed forward and last-sender modes)', async () => {
    const { server, a, b, aKey, bKey } = await setup();
    const udp = async (): Promise<UdpSocket> => {
      const s = createSocket('udp4');
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
      cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
      return s;
    };
    const u1 = await udp();
    const u2 = await udp();
    // A forwards to u1; B answers whoever last sent to it (u2).
    const pa = connect([b.publicText(), '--server', server.url, '--key-file', aKey, '--json', '--udp-listen', '127.0.0.1:0', '--udp-forward', `127.0.0.1:${u1.address().port}`]);
    const pb = connect([a.publicText(), '--server', server.url, '--key-file', bKey, '--json', '--udp-listen', '127.0.0.1:0', '--transport', 'websocket']);
    const aPort = Number(String((await pa.event('udp')).listen).split(':')[1]);
    const bPort = Number(String((await pb.event('udp')).listen).split(':')[1]);
    await pa.event('connected');
    await pb.event('connected');

    const atU1 = once(u1, 'message');
    u2.send(Buffer.from('from u2'), bPort, '127.0.0.1');
    expect((await atU1)[0].toString()).toBe('from u2');

    const atU2 = once(u2, 'message');
    u1.send(Buffer.from('from u1'), aPort, '127.0.0.1');
    expect((await atU2)[0].toString()).toBe('from u1');

    pa.child.kill('SIGTERM');
    pb.child.kill('SIGTERM');
    expect(await pa.exited).toBe(0);
    expect(await pb.exited).toBe(0);
  });

  it('rides out a relay restart without intervention', async () => {
    const { server, a, b, aKey, bKey } = await setup();
    const pa = connect([b.publicText(), '--server', server.url, '--key-file', aKey, '--json']);
    const pb = connect([a.publicText(), '--server', server.url, '--key-file', bKey, '--json']);
    await pa.event('connected');
    await pb.event('connected');
    await server.stop({ restarting: { reconnectInMs: 10, tryForMs: 5000 } });
    expect(await pa.event('restarting')).toEqual({ schema: 'derp.connect/v1', event: 'restarting', reconnectInMs: 10, tryForMs: 5000 });
    const s2 = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: `127.0.0.1:${server.port}` });
    await s2.start();
    cleanups.push(() => s2.stop({ restarting: false }));
    await pa.event('connected', (e) => e.reconnected === true);
    await pb.event('connected', (e) => e.reconnected === true);
    pa.child.stdin.write('after restart\n');
    expect(await pb.event('packet')).toMatchObject({ from: a.publicText(), data: Buffer.from('after restart').toString('base64') });
    pa.child.kill('SIGTERM');
    pb.child.kill('SIGTERM');
    expect(await pa.exited).toBe(0);
    expect(await pb.exited).toBe(0);
  });

  it('exits 2 on a bad peer key, 3 when it cannot connect, 4 on a TLS pin mismatch', async () => {
    const { server } = await setup(true);
    const peer = NodePrivateKey.generate().publicText();
    const bad = connect(['nodekey:xyz', '--server', server.url]);
    expect(await bad.exited).toBe(2);
    expect(flatCliText(bad.err)).toMatch(/nodekey/);

    const closed = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0' });
    await closed.start();
    const deadUrl = closed.url;
    await closed.stop({ restarting: false });
    const nc = connect([peer, '--server', deadUrl]);
    expect(await nc.exited).toBe(3);
    expect(flatCliText(nc.err)).toMatch(/cannot connect/);

    const pin = connect([peer, '--server', server.url, '--cert-name', `sha256-raw:${'11'.repeat(32)}`]);
    expect(await pin.exited).toBe(4);
    expect(flatCliText(pin.err)).toMatch(/does not match the pinned/);
  });
});
