/**
 * TCP / TLS dialing with DERP's certificate rules (spec §3.2; net/tlsdial/tlsdial.go):
 * CA validation for the server name (or CertName), or `sha256-raw:` pinning of the leaf, or none
 * when explicitly insecure. ALPN is http/1.1 only: the DERP upgrade is an HTTP/1.1 mechanism.
 * The TCP leg may go through an HTTP CONNECT proxy (proxy.ts).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { checkServerIdentity, rootCertificates, connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { ConnectError, DerpError, ProtocolError, TlsError } from '../errors.js';
import { connectAuthority, connectThroughProxy, redactProxy } from './proxy.js';
import { SHA256_RAW_PREFIX, type DialTarget } from './target.js';

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

/** TCP to one address; rejects with ConnectError (or the signal's reason). */
function dialTcp(host: string, port: number, signal: AbortSignal): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    signal.throwIfAborted();
    const sock = netConnect({ host, port });
    const ctx = { addr: host, port };
    const cleanup = () => {
      signal.removeEventListener('abort', onAbort);
      sock.off('error', onError);
    };
    const onAbort = () => {
      cleanup();
      sock.destroy();
      reject(signal.reason);
    };
    const onError = (err: Error) => {
      cleanup();
      sock.destroy();
      reject(new ConnectError(`cannot connect to ${host.includes(':') ? `[${host}]` : host}:${port}: ${err.message}`, { cause: err, context: ctx }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    sock.on('error', onError);
    sock.once('connect', () => {
      cleanup();
      resolve(sock);
    });
  });
}

/** TLS over a connected socket (direct or tunnelled); every failure is a TlsError about the server. */
function startTls(raw: Socket, t: DialTarget, opts: ConnectionOptions, peer: string, signal: AbortSignal): Promise<Socket> {
  // TLS reads the TCP handle directly, so bytes already buffered in JS would be skipped. A TLS server
  // never speaks first, so such bytes can only come from a misbehaving proxy.
  if (raw.readableLength > 0) {
    raw.destroy();
    return Promise.reject(new ProtocolError(`${peer}: ${raw.readableLength} unexpected bytes before the TLS handshake`, { context: { addr: peer } }));
  }
  return new Promise<Socket>((resolve, reject) => {
    const sock = tlsConnect({ ...opts, socket: raw });
    const ctx = { addr: peer, port: t.port };
    const cleanup = () => {
      signal.removeEventListener('abort', onAbort);
      sock.off('error', onError);
    };
    const onAbort = () => {
      cleanup();
      sock.destroy();
      raw.destroy();
      reject(signal.reason);
    };
    const onError = (err: Error) => {
      cleanup();
      sock.destroy();
      raw.destroy();
      reject(err instanceof TlsError ? err : new TlsError(`TLS handshake with ${peer} failed: ${err.message}`, { cause: err, context: ctx }));
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    sock.on('error', onError);
    sock.once('secureConnect', () => {
      if (!t.insecure && t.certName?.startsWith(SHA256_RAW_PREFIX)) {
        const bad = checkPinnedCert(sock, t.serverName, t.certName.slice(SHA256_RAW_PREFIX.length));
        if (bad) {
          onError(bad);
          return;
        }
      }
      cleanup();
      resolve(sock);
    });
  });
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The TCP leg: through the proxy, or the target's addresses in order. */
async function dialRaw(t: DialTarget, signal: AbortSignal): Promise<{ sock: Socket; peer: string }> {
  if (t.proxy) {
    const authority = connectAuthority(t.url);
    return { sock: await connectThroughProxy(t.proxy, authority, signal), peer: `${authority} via proxy ${redactProxy(t.proxy)}` };
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
 * Connects to the target: TCP (direct or tunnelled through an HTTP proxy), then
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
