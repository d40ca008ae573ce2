/**
 * HTTP `CONNECT` proxies for DERP connections (spec §13; derphttp_client.go dialNodeUsingProxy,
 * net/tshttpproxy). Proxy choice follows the usual environment variables with curl-style NO_PROXY.
 */
import { BlockList, connect as netConnect, isIP, type Socket } from 'node:net';
import { ConfigError, ConnectError, ProtocolError } from '../errors.js';

/** Bound on the proxy's response head to CONNECT (a real one is well under 1 KiB). */
export const MAX_PROXY_RESPONSE_HEAD = 16 << 10;
/** Port of a proxy URL without one: Go's net/http uses the scheme default (curl would use 1080). */
const DEFAULT_HTTP_PROXY_PORT = 80;

const HEAD_END = Buffer.from('\r\n\r\n');

function stripBrackets(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

/** A proxy URL without credentials, for messages and logs. */
export function redactProxy(proxy: URL): string {
  return `${proxy.protocol}//${proxy.host}`;
}

/**
 * Parses a proxy setting. A bare `host:port` means `http://host:port` (as curl and Go do). Only
 * plain-HTTP proxies are supported: the CONNECT tunnel then carries the DERP TLS end to end.
 */
export function parseProxyUrl(text: string): URL {
  const s = text.trim();
  let u: URL;
  try {
    u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `http://${s}`);
  } catch (cause) {
    throw new ConfigError(`invalid proxy URL ${JSON.stringify(text)}`, { cause });
  }
  if (u.protocol !== 'http:') throw new ConfigError(`proxy ${redactProxy(u)}: only http:// proxies are supported for DERP connections`);
  if (!u.hostname) throw new ConfigError(`proxy URL ${JSON.stringify(redactProxy(u))} has no host`);
  return u;
}

/**
 * curl-style NO_PROXY matching: comma- (or space-) separated entries, case-insensitive; `*` alone matches
 * everything; `example.com` and `.example.com` both match example.com and any subdomain; IP literals
 * match exactly, or as a CIDR (`10.0.0.0/8`); an entry with `:port` (`host:443`, `[::1]:443`) matches
 * only that port. Loopback is NOT excluded implicitly (curl doesn't either).
 */
export function noProxyMatches(noProxy: string, host: string, port: number): boolean {
  const h = stripBrackets(host).toLowerCase().replace(/\.$/, '');
  for (const raw of noProxy.split(/[\s,]+/)) {
    let entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return true;
    let entryPort: number | undefined;
    const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
    if (bracketed) {
      entry = bracketed[1]!;
      if (bracketed[2] !== undefined) entryPort = Number(bracketed[2]);
    } else if (isIP(entry) === 0) {
      const m = /^([^:]+):(\d+)$/.exec(entry);
      if (m) {
        entry = m[1]!;
        entryPort = Number(m[2]);
      }
    }
    if (entryPort !== undefined && entryPort !== port) continue;
    const slash = entry.indexOf('/');
    if (slash > 0) {
      const net = entry.slice(0, slash);
      const bits = Number(entry.slice(slash + 1));
      const fam = isIP(net);
      if (fam === 0 || isIP(h) !== fam || !Number.isInteger(bits)) continue;
      const list = new BlockList();
      try {
        list.addSubnet(net, bits, fam === 4 ? 'ipv4' : 'ipv6');
      } catch {
        // A malformed CIDR entry (e.g. /99) simply matches nothing, as in curl.
        continue;
      }
      if (list.check(h, fam === 4 ? 'ipv4' : 'ipv6')) return true;
      continue;
    }
    const entryFam = isIP(entry);
    if (entryFam !== 0) {
      // Compare as addresses so different spellings of one IPv6 address match.
      if (isIP(h) !== entryFam) continue;
      const type = entryFam === 4 ? 'ipv4' : 'ipv6';
      const list = new BlockList();
      list.addAddress(entry, type);
      if (list.check(h, type)) return true;
      continue;
    }
    const domain = entry.replace(/^\*?\./, '').replace(/\.$/, '');
    if (h === domain || h.endsWith(`.${domain}`)) return true;
  }
  return false;
}

function envValue(env: NodeJS.ProcessEnv, ...names: string[]): string | undefined {
  for (const n of names) {
    const v = env[n];
    if (v !== undefined && v.trim() !== '') return v;
  }
  return undefined;
}

/**
 * The proxy the environment asks for to reach `target` (an http: or https: URL), or undefined.
 * https → https_proxy / HTTPS_PROXY; http → http_proxy / HTTP_PROXY (lower case first, as curl);
 * no_proxy / NO_PROXY exempts hosts. ALL_PROXY is not consulted (it usually names a SOCKS proxy).
 */
export function proxyFromEnv(target: URL, env: NodeJS.ProcessEnv = process.env, noProxyOverride?: string): URL | undefined {
  const value = target.protocol === 'https:' ? envValue(env, 'https_proxy', 'HTTPS_PROXY') : envValue(env, 'http_proxy', 'HTTP_PROXY');
  if (value === undefined) return undefined;
  const noProxy = noProxyOverride ?? envValue(env, 'no_proxy', 'NO_PROXY') ?? '';
  if (noProxyMatches(noProxy, target.hostname, urlPort(target))) return undefined;
  return parseProxyUrl(value);
}

/** The URL's port, or its scheme default. */
export function urlPort(u: URL): number {
  return u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
}

/** `host:port` for CONNECT, with IPv6 literals bracketed (the URL's hostname already is). */
export function connectAuthority(target: URL): string {
  return `${target.hostname}:${urlPort(target)}`;
}

function basicAuth(proxy: URL): string | undefined {
  if (!proxy.username && !proxy.password) return undefined;
  const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return `Basic ${Buffer.from(cred, 'utf8').toString('base64')}`;
}

/** The CONNECT request head. */
export function buildConnectRequest(authority: string, proxy: URL): string {
  const auth = basicAuth(proxy);
  return `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth ? `Proxy-Authorization: ${auth}\r\n` : ''}\r\n`;
}

/**
 * Dials `proxy`, asks it to CONNECT to `authority` and resolves with the tunnelled socket once it
 * answered 2xx. Bytes after the response head are pushed back into the socket for the next layer.
 */
export function connectThroughProxy(proxy: URL, authority: string, signal: AbortSignal): Promise<Socket> {
  const proxyName = redactProxy(proxy);
  const host = stripBrackets(proxy.hostname);
  const port = proxy.port ? Number(proxy.port) : DEFAULT_HTTP_PROXY_PORT;
  const ctx = { proxy: proxyName, target: authority };
  return new Promise<Socket>((resolve, reject) => {
    signal.throwIfAborted();
    const sock = netConnect({ host, port });
    let buf: Buffer = Buffer.alloc(0);
    let connected = false;
    const cleanup = () => {
      signal.removeEventListener('abort', onAbort);
      sock.off('error', onError);
      sock.off('readable', onReadable);
      sock.off('end', onEnd);
    };
    const fail = (err: Error) => {
      cleanup();
      sock.destroy();
      reject(err);
    };
    const onAbort = () => fail(signal.reason instanceof Error ? signal.reason : new ConnectError('aborted', { context: ctx }));
    const onError = (err: Error) =>
      fail(
        new ConnectError(connected ? `proxy ${proxyName} failed during CONNECT ${authority}: ${err.message}` : `cannot connect to proxy ${proxyName}: ${err.message}`, {
          cause: err,
          context: ctx,
        }),
      );
    const onEnd = () => fail(new ConnectError(`proxy ${proxyName} closed the connection before answering CONNECT ${authority}`, { context: ctx }));
    // Paused-mode reads: once the 'readable' listener is gone the socket is back to its initial state,
    // so the next layer's 'data' listener starts the flow and sees any unshifted bytes first.
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = sock.read() as Buffer | null) !== null) {
        if (onChunk(chunk)) return;
      }
    };
    /** True once the response head has been handled (success or failure). */
    const onChunk = (chunk: Buffer): boolean => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const end = buf.indexOf(HEAD_END);
      if (end < 0) {
        if (buf.length <= MAX_PROXY_RESPONSE_HEAD) return false;
        fail(new ProtocolError(`proxy ${proxyName} response head exceeds ${MAX_PROXY_RESPONSE_HEAD} bytes`, { context: ctx }));
        return true;
      }
      const line = buf.subarray(0, end).toString('latin1').split('\r\n', 1)[0]!;
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(line);
      if (!m) {
        fail(new ProtocolError(`proxy ${proxyName} sent a non-HTTP answer to CONNECT: ${JSON.stringify(line.slice(0, 80))}`, { context: ctx }));
        return true;
      }
      const status = Number(m[1]);
      if (status < 200 || status > 299) {
        fail(new ConnectError(`proxy ${proxyName} refused CONNECT ${authority}: "${line}"`, { context: { ...ctx, status } }));
        return true;
      }
      const rest = buf.subarray(end + HEAD_END.length);
      cleanup();
      if (rest.length > 0) sock.unshift(rest);
      resolve(sock);
      return true;
    };
    signal.addEventListener('abort', onAbort, { once: true });
    sock.on('error', onError);
    sock.once('connect', () => {
      connected = true;
      sock.on('readable', onReadable);
      sock.on('end', onEnd);
      sock.write(buildConnectRequest(authority, proxy));
    });
  });
}
