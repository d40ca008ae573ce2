/**
 * Where and how to dial: a `/derp` URL or a DERP-map node → addresses, port, SNI and certificate
 * expectations (derphttp_client.go: urlString, tlsClient; spec §3.2).
 */
import { isIP } from 'node:net';
import type { DERPServer } from '../derpmap/types.js';
import { ConfigError } from '../errors.js';
import { derpUrl } from '../protocol/http.js';
import { noProxyMatches, parseProxyUrl, proxyFromEnv, urlPort } from './proxy.js';

export interface ClientTlsOptions {
  /** Extra trusted CA certificate(s), PEM. */
  ca?: string | Buffer;
  /** File holding trusted CA certificate(s), PEM. */
  caFile?: string;
  /** SNI and the name the certificate must be valid for (default: the URL / node host name). */
  serverName?: string;
  /** DERPNode.CertName: a name the chain must be valid for, or `sha256-raw:<hex>` to pin the leaf. */
  certName?: string;
  /** Skip all verification (DERPNode.InsecureForTests). Only when explicitly asked. */
  insecure?: boolean;
}

export interface DialTarget {
  /** The `/derp` URL with an http: or https: scheme. */
  url: URL;
  secure: boolean;
  /** `Host` header value (host[:port]). */
  hostHeader: string;
  /** Request path (and query). */
  path: string;
  port: number;
  /** Addresses to try in order (explicit IPs of a map node first, else the host name). */
  dialAddrs: string[];
  /** SNI / expected certificate name. */
  serverName: string;
  certName?: string;
  insecure: boolean;
  ca?: string | Buffer;
  caFile?: string;
  /** HTTP proxy to tunnel through with CONNECT (then no address racing: the proxy resolves the name). */
  proxy?: URL;
  /** Set for a DERP-map node: per-family addresses to race (spec §13, derp-map §5.1). */
  node?: NodeDial;
}

/**
 * Per-family dial plan of a map node: an IP literal, `''` = resolve the host name for that family,
 * or `null` = family disabled ("none" or anything that isn't an address of that family).
 */
export interface NodeDial {
  hostName: string;
  ipv4: string | null;
  ipv6: string | null;
  /** IPv6 head start before the IPv4 attempt begins. */
  ipv6HeadStartMs: number;
  /** Budget for the node's TCP race (within the overall connect timeout). */
  timeoutMs: number;
}

/** derphttp_client.go dialNode: the IPv4 dial waits 200 ms when IPv6 is preferred. */
export const IPV6_HEAD_START_MS = 200;
/** derphttp_client.go dialNodeTimeout: 1.5 s for one node's TCP dial. */
export const NODE_DIAL_TIMEOUT_MS = 1_500;

export interface DialOptions {
  /** Proxy URL (`http://[user:pass@]host:port`), or false to ignore the environment. Default: from env. */
  proxy?: string | false;
  /** NO_PROXY-style exemptions; default the no_proxy / NO_PROXY environment variable. */
  noProxy?: string;
  /** Environment to read proxy variables from (default process.env). */
  env?: NodeJS.ProcessEnv;
  ipv6HeadStartMs?: number;
  nodeDialTimeoutMs?: number;
}

export const SHA256_RAW_PREFIX = 'sha256-raw:';
const DEFAULT_PATH = '/derp';

function isDerpServer(s: unknown): s is DERPServer {
  return typeof s === 'object' && s !== null && !(s instanceof URL) && typeof (s as DERPServer).hostname === 'string';
}

function stripBrackets(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

export function parseServerUrl(text: string | URL): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch (cause) {
    throw new ConfigError(`invalid server URL ${JSON.stringify(String(text))}`, { cause });
  }
  const map: Record<string, string> = { 'http:': 'http:', 'https:': 'https:', 'ws:': 'http:', 'wss:': 'https:' };
  const proto = map[u.protocol];
  if (!proto) throw new ConfigError(`server URL ${JSON.stringify(u.href)} must use http, https, ws or wss`);
  // URL refuses protocol changes between special schemes of different families, so rebuild.
  const rebuilt = new URL(`${proto}//${u.host}${u.pathname === '/' || u.pathname === '' ? DEFAULT_PATH : u.pathname}${u.search}`);
  return rebuilt;
}

/** A node's address field for one family (derp-map §5.1): literal, DNS (''), or disabled (null). */
function familyAddr(field: string | undefined, family: 4 | 6): string | null {
  if (field === undefined || field === '') return '';
  return isIP(field) === family ? field : null;
}

export function resolveTarget(server: string | URL | DERPServer, tls: ClientTlsOptions = {}, dial: DialOptions = {}): DialTarget {
  let url: URL;
  let dialAddrs: string[];
  let node: NodeDial | undefined;
  let certName = tls.certName;
  let insecure = tls.insecure ?? false;
  if (isDerpServer(server)) {
    url = parseServerUrl(derpUrl(server.hostname, server.derpPort, server.plainHttp ? 'http' : 'https'));
    // A field that holds something other than an IP (e.g. "none") means "don't use this family".
    dialAddrs = [server.ipv4, server.ipv6].filter((a): a is string => !!a && isIP(a) !== 0);
    if (dialAddrs.length === 0) dialAddrs = [server.hostname];
    node = {
      hostName: server.hostname,
      ipv4: familyAddr(server.ipv4, 4),
      ipv6: familyAddr(server.ipv6, 6),
      ipv6HeadStartMs: dial.ipv6HeadStartMs ?? IPV6_HEAD_START_MS,
      timeoutMs: dial.nodeDialTimeoutMs ?? NODE_DIAL_TIMEOUT_MS,
    };
    certName ??= server.certName;
    insecure ||= server.insecureForTests ?? false;
  } else {
    url = parseServerUrl(server);
    dialAddrs = [stripBrackets(url.hostname)];
  }
  const secure = url.protocol === 'https:';
  const port = url.port ? Number(url.port) : secure ? 443 : 80;
  const target: DialTarget = {
    url,
    secure,
    hostHeader: url.host,
    path: `${url.pathname}${url.search}`,
    port,
    dialAddrs,
    serverName: tls.serverName ?? stripBrackets(url.hostname),
    insecure,
  };
  if (certName) target.certName = certName;
  if (tls.ca !== undefined) target.ca = tls.ca;
  if (tls.caFile !== undefined) target.caFile = tls.caFile;
  if (node) target.node = node;
  const proxy = resolveProxy(url, dial);
  if (proxy) target.proxy = proxy;
  if (certName?.startsWith(SHA256_RAW_PREFIX) && !/^[0-9a-fA-F]{64}$/.test(certName.slice(SHA256_RAW_PREFIX.length))) {
    throw new ConfigError(`certName ${JSON.stringify(certName)} must be "${SHA256_RAW_PREFIX}" followed by 64 hex digits`);
  }
  return target;
}

/**
 * An explicit proxy applies unless the explicit `noProxy` exempts the host; the environment's
 * NO_PROXY goes with the environment's proxy only, so a caller's choice isn't silently overridden.
 */
function resolveProxy(url: URL, dial: DialOptions): URL | undefined {
  if (dial.proxy === false) return undefined;
  if (dial.proxy === undefined) return proxyFromEnv(url, dial.env ?? process.env, dial.noProxy);
  if (dial.noProxy !== undefined && noProxyMatches(dial.noProxy, url.hostname, urlPort(url))) return undefined;
  return parseProxyUrl(dial.proxy);
}

/** The WebSocket form of a target's URL (ws: / wss:). */
export function wsUrl(t: DialTarget): string {
  return `${t.secure ? 'wss' : 'ws'}://${t.hostHeader}${t.path}`;
}
