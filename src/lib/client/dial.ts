/**
 * TCP / TLS dialing with DERP's certificate rules (spec §3.2; net/tlsdial/tlsdial.go):
 * CA validation for the server name (or CertName), or `sha256-raw:` pinning of the leaf, or none
 * when explicitly insecure. ALPN is http/1.1 only: the DERP upgrade is an HTTP/1.1 mechanism.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { checkServerIdentity, rootCertificates, connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { ConnectError, DerpError, TlsError } from '../errors.js';
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

async function tlsOptions(t: DialTarget, addr: string): Promise<ConnectionOptions> {
  const o: ConnectionOptions = { host: addr, port: t.port, ALPNProtocols: ['http/1.1'], minVersion: 'TLSv1.2' };
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

/** Dials one address; rejects with ConnectError (TCP) or TlsError (anything after TCP connected). */
function dialOne(t: DialTarget, addr: string, signal: AbortSignal): Promise<Socket> {
  return (async () => {
    const opts = t.secure ? await tlsOptions(t, addr) : undefined;
    signal.throwIfAborted();
    return new Promise<Socket>((resolve, reject) => {
      const sock: Socket = opts ? tlsConnect(opts) : netConnect({ host: addr, port: t.port });
      let tcpUp = false;
      const ctx = { addr, port: t.port };
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
        if (tcpUp && t.secure) reject(new TlsError(`TLS handshake with ${addr}:${t.port} failed: ${err.message}`, { cause: err, context: ctx }));
        else reject(new ConnectError(`cannot connect to ${addr}:${t.port}: ${err.message}`, { cause: err, context: ctx }));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      sock.on('error', onError);
      sock.once('connect', () => {
        tcpUp = true;
        if (!t.secure) {
          cleanup();
          resolve(sock);
        }
      });
      if (t.secure) {
        sock.once('secureConnect', () => {
          const tsock = sock as TLSSocket;
          if (!t.insecure && t.certName?.startsWith(SHA256_RAW_PREFIX)) {
            const bad = checkPinnedCert(tsock, t.serverName, t.certName.slice(SHA256_RAW_PREFIX.length));
            if (bad) {
              onError(bad);
              return;
            }
          }
          cleanup();
          resolve(sock);
        });
      }
    });
  })();
}

/** Dials the target's addresses in order; the first that connects (and verifies) wins. */
export async function dialSocket(t: DialTarget, signal: AbortSignal): Promise<Socket> {
  let last: unknown;
  for (const addr of t.dialAddrs) {
    try {
      const s = await dialOne(t, addr, signal);
      s.setNoDelay(true);
      return s;
    } catch (err) {
      // A TLS failure is a verdict about the server, not the address: don't mask it by trying others.
      if (signal.aborted || err instanceof TlsError || !(err instanceof DerpError)) throw err;
      last = err;
    }
  }
  throw last ?? new ConnectError(`no address to dial for ${t.url.href}`);
}
