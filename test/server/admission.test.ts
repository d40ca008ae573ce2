/** The relay's admission hook (spec §11): after ClientInfo, before ServerInfo; reading paused while pending. */
import { afterEach, describe, expect, it } from 'vitest';
import { encode, formatNodePublic, openServerInfo } from '../../src/lib/protocol/index.js';
import type { AbuseEvent, AdmitDecision, AdmitRequest } from '../../src/lib/server/index.js';
import type { RawTransport } from '../helpers/rawclient.js';
import { startRelay, type Fixture } from './fixture.js';
import { clientInfoFor, deferred, until } from './helpers.js';

let f: Fixture | null = null;
afterEach(async () => {
  await f?.close();
  f = null;
});

const ALLOW: AdmitDecision = { allow: true, source: 'test', reason: 'listed' };
const DENY: AdmitDecision = { allow: false, source: 'deny-list', reason: 'listed in deny' };

describe('admission hook', () => {
  it('a synchronous allow admits with the key, its text and the address; counted', async () => {
    const seen: AdmitRequest[] = [];
    f = await startRelay({ admit: (r) => (seen.push(r), ALLOW) });
    const a = await f.connect();
    expect(a.serverInfo?.version).toBe(2);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.key.equals(a.publicKey)).toBe(true);
    expect(seen[0]!.keyText).toBe(formatNodePublic(a.publicKey));
    expect(seen[0]!.remoteAddress).toMatch(/127\.0\.0\.1$/);
    expect(seen[0]!.mesh).toBe(false);
    const st = f.server.stats();
    expect(st.admissionAllowed).toBe(1);
    expect(st.admissionRefused).toBe(0);
    expect(st.currentConnections).toBe(1);
  });

  it('a synchronous refusal closes without ServerInfo, is counted, logged with key and address, and reported', async () => {
    const events: { e: AbuseEvent; ip: string; key: Buffer | null }[] = [];
    f = await startRelay({ admit: () => DENY, onAbuse: (e, w) => events.push({ e, ...w }) });
    const a = await f.open();
    a.write(await clientInfoFor(a));
    await a.closedPromise;
    expect(a.drainQueue()).toEqual([]);
    const st = f.server.stats();
    expect(st.admissionRefused).toBe(1);
    expect(st.currentConnections).toBe(0);
    expect(st.pendingHandshakes).toBe(0);
    const log = await f.logger.waitFor((e) => e.msg === 'client refused');
    expect(log.fields.key).toBe(formatNodePublic(a.publicKey));
    expect(String(log.fields.remote)).toMatch(/127\.0\.0\.1/);
    expect(log.fields.source).toBe('deny-list');
    expect(events.map((x) => x.e)).toEqual(['admission_refused']);
    expect(events[0]!.key?.equals(a.publicKey)).toBe(true);
  });

  it('a throwing or rejecting check, or a malformed answer, refuses (fail closed)', async () => {
    let mode = 0;
    f = await startRelay({
      admit: () => {
        mode++;
        if (mode === 1) throw new Error('boom');
        if (mode === 2) return Promise.reject(new Error('webhook down'));
        return { allow: 'yes' } as unknown as AdmitDecision;
      },
    });
    for (let i = 0; i < 3; i++) {
      const c = await f.open();
      c.write(await clientInfoFor(c));
      await c.closedPromise;
      expect(c.drainQueue()).toEqual([]);
    }
    expect(f.server.stats().admissionRefused).toBe(3);
    expect(f.server.stats().currentConnections).toBe(0);
  });

  for (const transport of ['derp', 'websocket'] as RawTransport[]) {
    it(`${transport}: an async allow replays, in order, every frame sent right after ClientInfo`, async () => {
      const gate = deferred<AdmitDecision>();
      let calls = 0;
      f = await startRelay({ admit: (r) => (calls++ === 0 ? ALLOW : r.key.equals(aKey) ? gate.promise : ALLOW) });
      const b = await f.connect({ transport });
      const a = await f.open({ transport });
      const aKey = a.publicKey;
      const N = 300; // ≈ 300 KB: some held by the relay, the rest left unread in the transport
      const frames: Buffer[] = [await clientInfoFor(a)];
      for (let i = 0; i < N; i++) {
        const p = Buffer.alloc(1000, i & 0xff);
        p.writeUInt32BE(i, 0);
        frames.push(encode.sendPacket(b.publicKey, p));
      }
      frames.push(encode.ping(Buffer.from('afterci!')));
      a.write(Buffer.concat(frames));
      await until(() => f!.server.stats().admissionPending === 1, 'admission pending');
      let st = f.server.stats();
      expect(st.pendingHandshakes).toBe(1);
      expect(st.packetsReceived).toBe(0);
      const got: number[] = [];
      b.onFrame = (fr) => fr.type === 'RecvPacket' && (got.push(fr.data.readUInt32BE(0)), true);
      gate.resolve(ALLOW);
      const si = await a.next();
      expect(si.type).toBe('ServerInfo');
      expect(openServerInfo(a.key.keyObject, a.serverKey!, si.type === 'ServerInfo' ? si.sealed : Buffer.alloc(0)).version).toBe(2);
      const pong = await a.nextOf('Pong');
      expect(Buffer.from(pong.data).toString()).toBe('afterci!');
      await until(() => got.length === N, 'all packets delivered');
      expect(got).toEqual([...Array(N).keys()]);
      st = f.server.stats();
      expect(st.admissionPending).toBe(0);
      expect(st.admissionAllowed).toBe(2);
      expect(st.currentConnections).toBe(2);
    });
  }

  it('an async refusal closes without ServerInfo and nothing sent after ClientInfo is relayed', async () => {
    const gate = deferred<AdmitDecision>();
    let calls = 0;
    f = await startRelay({ admit: () => (calls++ === 0 ? ALLOW : gate.promise) });
    const b = await f.connect();
    const a = await f.open();
    a.write(Buffer.concat([await clientInfoFor(a), encode.sendPacket(b.publicKey, Buffer.from('must not arrive'))]));
    await until(() => f!.server.stats().admissionPending === 1, 'admission pending');
    gate.resolve(DENY);
    await a.closedPromise;
    expect(a.drainQueue()).toEqual([]);
    await b.ping();
    expect(b.drainQueue().filter((x) => x.type === 'RecvPacket')).toEqual([]);
    const st = f.server.stats();
    expect(st.packetsReceived).toBe(0);
    expect(st.admissionRefused).toBe(1);
    expect(st.admissionPending).toBe(0);
  });

  it('a decision slower than the handshake deadline closes the client (timeout), counted', async () => {
    f = await startRelay({ handshakeTimeoutMs: 200, admit: () => new Promise<AdmitDecision>(() => undefined) });
    const a = await f.open();
    a.write(await clientInfoFor(a));
    await a.closedPromise;
    const log = await f.logger.waitFor((e) => /no admission decision/.test(String(e.fields.reason)));
    expect(log.msg).toBe('closing connection');
    const st = f.server.stats();
    expect(st.handshakeTimeouts).toBe(1);
    expect(st.admissionPending).toBe(0);
    expect(st.pendingHandshakes).toBe(0);
  });

  it('a client that leaves while its decision is pending is cleaned up; a late allow registers nothing', async () => {
    const gate = deferred<AdmitDecision>();
    f = await startRelay({ admit: () => gate.promise });
    const a = await f.open();
    a.write(await clientInfoFor(a));
    await until(() => f!.server.stats().admissionPending === 1, 'admission pending');
    a.destroy();
    await until(() => f!.server.stats().pendingHandshakes === 0, 'pending cleaned up');
    expect(f.server.stats().admissionPending).toBe(0);
    gate.resolve(ALLOW);
    await gate.promise;
    await new Promise((r) => setImmediate(r));
    const st = f.server.stats();
    expect(st.currentConnections).toBe(0);
    expect(st.clients).toBe(0);
    expect(st.admissionAllowed).toBe(0);
  });

  it('a pending decision counts toward the pending-handshake cap', async () => {
    const gate = deferred<AdmitDecision>();
    f = await startRelay({ admit: () => gate.promise, connectionLimits: { maxPendingHandshakes: 1 } });
    const a = await f.open();
    a.write(await clientInfoFor(a));
    await until(() => f!.server.stats().admissionPending === 1, 'admission pending');
    const b = await f.open().catch(() => null);
    if (b !== null) await b.closedPromise;
    expect(f.server.stats().connectionsRefused.pending_handshakes).toBe(1);
    gate.resolve(ALLOW);
    expect((await a.next()).type).toBe('ServerInfo');
  });

  it('a banned key is refused at admission; setAdmit swaps the check live', async () => {
    let banned: Buffer | null = null;
    f = await startRelay({ admit: () => DENY, isBanned: (_ip, key) => key !== null && banned !== null && key.equals(banned) });
    const a = await f.open();
    a.write(await clientInfoFor(a));
    await a.closedPromise;
    f.server.setAdmit(null);
    const b = await f.connect();
    expect(b.serverInfo?.version).toBe(2);
    banned = b.publicKey;
    const again = await f.open({ key: b.key });
    again.write(await clientInfoFor(again));
    await again.closedPromise;
    const log = await f.logger.waitFor((e) => e.msg === 'client refused' && e.fields.source === 'ban');
    expect(log.fields.key).toBe(formatNodePublic(b.publicKey));
    expect(f.server.stats().admissionRefused).toBe(2);
    // The admitted one is untouched.
    await b.ping();
  });
});
