/**
 * TLS-ALPN-01 on the DERP port (RFC 8737): while a challenge is pending, peek at each new connection's
 * ClientHello; one that offers only-for-validation `acme-tls/1` for a pending name gets a TLS handshake
 * with the challenge certificate and is closed. Every other connection goes to the server's own TLS
 * handler with its bytes put back. With no challenge pending the check is one boolean per connection.
 */
import type { Socket } from 'node:net';
import { TLSSocket, createSecureContext, type Server as TlsServer } from 'node:tls';
import { describeError } from '../errors.js';
import type { Logger } from '../util/logger.js';
import { parseClientHello } from './clienthello.js';
import { ACME_TLS_ALPN, CLIENT_HELLO_MAX, CLIENT_HELLO_TIMEOUT_MS } from './constants.js';
import type { ChallengeResponder } from './source.js';

/** Returns an uninstaller. Does nothing (and returns a no-op) if the server's connection handler is not Node's single one. */
export function installTlsAlpnChallenges(server: TlsServer, responder: ChallengeResponder, logger: Logger): () => void {
  const listeners = server.listeners('connection');
  if (listeners.length !== 1) {
    logger.log('warn', 'TLS-ALPN-01 challenges not served on this listener: unexpected connection handlers', { handlers: listeners.length });
    return () => {};
  }
  const tlsListener = listeners[0] as (this: TlsServer, sock: Socket) => void;
  const handOn = (sock: Socket, buffered: Buffer | null): void => {
    if (buffered !== null && buffered.length > 0) sock.unshift(buffered);
    tlsListener.call(server, sock);
  };
  const onConnection = (sock: Socket): void => {
    if (!responder.tlsAlpnPending()) {
      tlsListener.call(server, sock);
      return;
    }
    sniff(sock, responder, logger, handOn);
  };
  server.removeListener('connection', tlsListener);
  server.on('connection', onConnection);
  return () => {
    server.removeListener('connection', onConnection);
    server.on('connection', tlsListener);
  };
}

function sniff(sock: Socket, responder: ChallengeResponder, logger: Logger, handOn: (sock: Socket, buffered: Buffer | null) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  const finish = (): void => {
    clearTimeout(timer);
    sock.removeListener('data', onData);
    sock.removeListener('error', onError);
    sock.removeListener('end', onEnd);
    sock.pause();
  };
  const onError = (): void => {
    finish();
    sock.destroy();
  };
  const onEnd = (): void => {
    finish();
    sock.destroy();
  };
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    const hello = parseClientHello(buf);
    if (hello.status === 'incomplete' && buf.length < CLIENT_HELLO_MAX) return;
    finish();
    const challenge = hello.status === 'ok' && hello.serverName !== undefined && hello.alpn.includes(ACME_TLS_ALPN) ? responder.tlsAlpn01(hello.serverName) : undefined;
    if (challenge === undefined) {
      handOn(sock, buf);
      return;
    }
    sock.unshift(buf);
    answer(sock, challenge, hello.status === 'ok' ? (hello.serverName ?? '') : '', logger);
  };
  // Let the TLS layer time the connection out as usual if the hello never completes.
  const timer = setTimeout(() => {
    finish();
    handOn(sock, buf);
  }, CLIENT_HELLO_TIMEOUT_MS);
  timer.unref();
  sock.on('data', onData);
  sock.on('error', onError);
  sock.on('end', onEnd);
  // The relay hands a TLS connection over paused, its first bytes put back (RelayServer.awaitClientHello).
  sock.resume();
}

function answer(sock: Socket, c: { cert: string; key: string }, servername: string, logger: Logger): void {
  let tls: TLSSocket;
  try {
    tls = new TLSSocket(sock, { isServer: true, secureContext: createSecureContext({ cert: c.cert, key: c.key, minVersion: 'TLSv1.2' }), ALPNProtocols: [ACME_TLS_ALPN] });
  } catch (err) {
    logger.log('warn', 'TLS-ALPN-01 challenge certificate rejected', { servername, reason: describeError(err) });
    sock.destroy();
    return;
  }
  tls.on('secure', () => {
    logger.log('info', 'answered TLS-ALPN-01 validation', { servername, remote: `${sock.remoteAddress}:${sock.remotePort}` });
    tls.end();
  });
  tls.on('error', (err) => {
    logger.log('debug', 'TLS-ALPN-01 validation connection failed', { servername, reason: describeError(err) });
    tls.destroy();
  });
  tls.resume();
}
