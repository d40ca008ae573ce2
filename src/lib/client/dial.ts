/**
 * TCP / TLS dialing with DERP's certificate rules (spec §3.2; net/tlsdial/tlsdial.go):
 * CA validation for the server name (or CertName), or `sha256-raw:` pinning of the leaf, or none
 * when explicitly insecure. ALPN is http/1.1 only: the DERP upgrade is an HTTP/1.1 mechanism.
 * The TCP leg may go through an HTTP CONNECT proxy (proxy.ts) or race a map node's IPv6/IPv4.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { checkServerIdentity, rootCertificates, connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { lookup } from 'node:dns/promises';
import { ConnectError, DerpError, ProtocolError, TimeoutError, TlsError } from '../errors.js';
import { connectAuthority, connectThroughProxy, redactProxy } from './proxy.js';
import { SHA256_RAW_PREFIX, type DialTarget, type NodeDial } from './target.js';

/** Meta certificates (spec §3.3) carry this CN prefix and are never the certificate being pinned. */
const META_CERT_CN_PREFIX = 'derpkey';

/** Verifies a `sha256-raw:` pin on an established TLS socket; returns the failure or undefined. */
export function checkPinnedCert(socket: TLSSocket, hostName: string, expectHex: string, now = new Date()): TlsError | undefined {
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.raw) return new TlsError('server presented no certificate');
  const cn = cert.subject?.CN;
  if ((Array.isArray(cn) ? cn : [cn]).some((c) => c?.startsWith(META_CERT_CN_PREFIX))) return new TlsError('server presented only a DERP meta certificate');
  const got = createHash('sha256').update(cert.raw).digest('hex');
  if (got !== expectHex.toLowerCase()) {
    return new TlsError(`certificate hash sha256-raw:${got} does not match the pinned ${SHA256_RAW_PREFIX}${expectHex.toLowerCase()}`, {
      context: { expected: expectHex, got },
    });
  }
  const from = new Date(cert.valid_from);
  const to = new Date(cert.valid_to);
  if (!(now >= from && now <= to)) return new TlsError(`pinned certificate is not valid now (valid ${cert.valid_from} – ${cert.valid_to})`);
  if (hostName) {
    const idErr = checkServerIdentity(hostName, cert);
    if (idErr) return new TlsError(`pinned certificate is not valid for ${hostName}: ${idErr.message}`, { cause: idErr });
  }
  return undefined;
}

async function tlsOptions(t: DialTarget): Promise<ConnectionOptions> {
  const o: ConnectionOptions = { ALPNProtocols: ['http/1.1'], minVersion: 'TLSv1.2' };
  // Node refuses an IP literal as SNI (RFC 6066); the name is still checked below.
  if (isIP(t.serverName) === 0) o.servername = t.serverName;
  let ca: (string | Buffer)[] | undefined;
  if (t.ca !== undefined) ca = [t.ca];
  if (t.caFile !== undefined) {
    try {
      (ca ??= []).push(await readFile(t.caFile));
    } catch (cause) {
      throw new TlsError(`cannot read CA file ${t.caFile}: ${(cause as Error).message}`, { cause, context: { file: t.caFile } });
    }
  }
  // Extra CAs are added to, not instead of, the system roots.
  if (ca) o.ca = [...rootCertificates, ...ca];
  if (t.insecure || t.certName?.startsWith(SHA256_RAW_PREFIX)) {
    o.rejectUnauthorized = false;
  } else {
    const name = t.certName ?? t.serverName;
    // Always check against the server name, not the dialed address (which may be a map node's IP).
    o.checkServerIdentity = (_host, cert) => checkServerIdentity(name, cert);
  }
  return o;
}

/**
 * Resolves with `sock` once it emits `ready` and `check` (if any) passes; otherwise destroys it (and
 * `also`) and rejects with the signal's reason or `wrap(error)`. Shared by the TCP and TLS steps.
 */
function whenReady<S extends Socket>(
  sock: S,
  ready: 'connect' | 'secureConnect',
  signal: AbortSignal,
  wrap: (err: Error) => Error,
  check?: (sock: S) => Error | undefined,
  also?: Socket,
): Promise<S> {
  return new Promise<S>((resolve, reject) => {
    const cleanup = () => {
      signal.removeEventListener('abort', onAbort);
      sock.off('error', onError);
    };
    const teardown = () => {
      cleanup();
      sock.destroy();
      also?.destroy();
    };
    const onAbort = () => {
      teardown();
      reject(signal.reason);
    };
    const onError = (err: Error) => {
      teardown();
      reject(wrap(err));
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    sock.on('error', onError);
    sock.once(ready, () => {
      const bad = check?.(sock);
      if (bad) return onError(bad);
      cleanup();
      resolve(sock);
    });
  });
}

/** TCP to one address; rejects with ConnectError (or the signal's reason). */
function dialTcp(host: string, port: number, signal: AbortSignal): Promise<Socket> {
  signal.throwIfAborted();
  return whenReady(
    netConnect({ host, port }),
    'connect',
    signal,
    (err) => new ConnectError(`cannot connect to ${hostPort(host, port)}: ${err.message}`, { cause: err, context: { addr: host, port } }),
  );
}

/** TLS over a connected socket (direct or tunnelled); every failure is a TlsError about the server. */
function startTls(raw: Socket, t: DialTarget, opts: ConnectionOptions, peer: string, signal: AbortSignal): Promise<Socket> {
  // TLS reads the TCP handle directly, so bytes already buffered in JS would be skipped. A TLS server
  // never speaks first, so such bytes can only come from a misbehaving proxy.
  const early = raw.readableLength;
  if (early > 0) {
    raw.destroy();
    return Promise.reject(new ProtocolError(`${peer}: ${early} unexpected bytes before the TLS handshake`, { context: { addr: peer, bytes: early } }));
  }
  const pin = !t.insecure && t.certName?.startsWith(SHA256_RAW_PREFIX) ? t.certName.slice(SHA256_RAW_PREFIX.length) : undefined;
  return whenReady(
    tlsConnect({ ...opts, socket: raw }),
    'secureConnect',
    signal,
    (err) => (err instanceof TlsError ? err : new TlsError(`TLS handshake with ${peer} failed: ${err.message}`, { cause: err, context: { addr: peer, port: t.port } })),
    pin === undefined ? undefined : (sock) => checkPinnedCert(sock, t.serverName, pin),
    raw,
  );
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** One family's address for a node: the literal, or a DNS answer for the host name (derp-map §5.1). */
async function nodeAddr(n: NodeDial, family: 4 | 6, literal: string, signal: AbortSignal): Promise<string> {
  if (literal !== '') return literal;
  const kind = isIP(n.hostName);
  if (kind === family) return n.hostName;
  if (kind !== 0) throw new ConnectError(`node ${n.hostName} has no IPv${family} address`, { context: { host: n.hostName, family } });
  // lookup() can't be cancelled; the race below stops waiting for it on abort.
  const abort = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  // Only observed through the race below; this keeps a later abort from being an unhandled rejection.
  abort.catch(() => undefined);
  try {
    const r = await Promise.race([lookup(n.hostName, { family }), abort]);
    // getaddrinfo may answer with the other family (e.g. for odd spellings); that isn't this family's address.
    if (r.family !== family) throw new Error(`got an IPv${r.family} answer (${r.address})`);
    return r.address;
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new ConnectError(`cannot resolve ${n.hostName} (IPv${family}): ${(err as Error).message}`, { cause: err, context: { host: n.hostName, family } });
  }
}

/**
 * Races TCP to a node's IPv6 and IPv4 addresses (spec §13): IPv6 starts first, IPv4 after the head
 * start or as soon as IPv6 fails; the first connection wins and the other attempt is dropped.
 */
function raceNode(t: DialTarget, n: NodeDial, signal: AbortSignal): Promise<Socket> {
  const plan = ([[6, n.ipv6], [4, n.ipv4]] as const).filter((p): p is readonly [4 | 6, string] => p[1] !== null);
  if (plan.length === 0) return Promise.reject(new ConnectError(`both IPv4 and IPv6 are explicitly disabled for node ${n.hostName}`, { context: { host: n.hostName } }));
  const ctl = new AbortController();
  const onAbort = () => ctl.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(
    () => ctl.abort(new TimeoutError(`no address of node ${n.hostName} connected within ${n.timeoutMs} ms`, { context: { host: n.hostName, timeoutMs: n.timeoutMs } })),
    n.timeoutMs,
  );
  let headStart: NodeJS.Timeout | undefined;
  return new Promise<Socket>((resolve, reject) => {
    let running = 0;
    let won = false;
    const errors: unknown[] = [];
    const finish = () => {
      clearTimeout(timer);
      clearTimeout(headStart);
      signal.removeEventListener('abort', onAbort);
    };
    const attempt = (family: 4 | 6, literal: string) => {
      running++;
      nodeAddr(n, family, literal, ctl.signal)
        .then((addr) => dialTcp(addr, t.port, ctl.signal))
        .then(
          (sock) => {
            if (won) {
              sock.destroy();
              return;
            }
            won = true;
            finish();
            // Cancels the other attempt; a socket it still produces is destroyed above.
            ctl.abort(new ConnectError('another address of the node connected first'));
            resolve(sock);
          },
          (err: unknown) => {
            running--;
            if (won) return;
            errors.push(err);
            if (family === 6) startV4();
            // Done when nothing runs and IPv4 either ran, doesn't exist, or can no longer start.
            if (running > 0 || (v4 && !v4Started && !ctl.signal.aborted)) return;
            finish();
            if (signal.aborted) reject(signal.reason);
            else if (ctl.signal.aborted) reject(ctl.signal.reason);
            else if (errors.length === 1) reject(errors[0]);
            else {
              const msg = errors.map((e) => (e instanceof Error ? e.message : String(e))).join('; ');
              reject(new ConnectError(`cannot connect to node ${n.hostName}: ${msg}`, { cause: errors[0], context: { host: n.hostName, port: t.port } }));
            }
          },
        );
    };
    const v4 = plan.find((p) => p[0] === 4);
    let v4Started = false;
    const startV4 = () => {
      if (v4Started || !v4 || ctl.signal.aborted) return;
      v4Started = true;
      clearTimeout(headStart);
      attempt(4, v4[1]);
    };
    const v6 = plan.find((p) => p[0] === 6);
    if (v6) {
      attempt(6, v6[1]);
      if (v4) headStart = setTimeout(startV4, n.ipv6HeadStartMs);
    } else startV4();
  });
}

/** The TCP leg: through the proxy, a node's address race, or the target's addresses in order. */
async function dialRaw(t: DialTarget, signal: AbortSignal): Promise<{ sock: Socket; peer: string }> {
  if (t.proxy) {
    const authority = connectAuthority(t.url);
    return { sock: await connectThroughProxy(t.proxy, authority, signal), peer: `${authority} via proxy ${redactProxy(t.proxy)}` };
  }
  if (t.node) {
    const sock = await raceNode(t, t.node, signal);
    return { sock, peer: hostPort(sock.remoteAddress ?? t.node.hostName, t.port) };
  }
  let last: unknown;
  for (const addr of t.dialAddrs) {
    try {
      return { sock: await dialTcp(addr, t.port, signal), peer: hostPort(addr, t.port) };
    } catch (err) {
      if (signal.aborted || !(err instanceof DerpError)) throw err;
      last = err;
    }
  }
  throw last ?? new ConnectError(`no address to dial for ${t.url.href}`);
}

/**
 * Connects to the target: TCP (direct, raced per map node, or tunnelled through an HTTP proxy), then
 * TLS when the target is https. TLS runs once, on the winning socket: a TLS failure is a verdict
 * about the server, not the address, so it is never masked by trying another address.
 */
export async function dialSocket(t: DialTarget, signal: AbortSignal): Promise<Socket> {
  const opts = t.secure ? await tlsOptions(t) : undefined;
  signal.throwIfAborted();
  const { sock: raw, peer } = await dialRaw(t, signal);
  const sock = opts ? await startTls(raw, t, opts, peer, signal) : raw;
  sock.setNoDelay(true);
  return sock;
}
