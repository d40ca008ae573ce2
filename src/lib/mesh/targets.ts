/**
 * `--mesh-with` parsing: derper's `host[:port][/dialhost]` entries, comma-separated and/or repeated.
 * Pure (no I/O): names are only checked for shape here; discovery.ts resolves them.
 */
import { isIP } from 'node:net';
import { ConfigError } from '../errors.js';
import type { MeshTarget } from './types.js';

/** What messages name by default; a config file passes its field instead. */
const FLAG = '--mesh-with';
const SYNTAX = 'host[:port][/dialhost]';
/** RFC 1035 §2.3.4: at most 253 characters in a name (without the trailing dot), 63 in a label. */
const MAX_NAME = 253;
const MAX_LABEL = 63;
/** Letters, digits, `-` inside, `_` allowed (service records, some internal zones). */
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

/**
 * Parses `--mesh-with` values into targets, in order. Every problem is a ConfigError that names the
 * entry (1-based, counted across repeated flags) and says what to write instead; `source` names where the
 * entries came from in messages (default `--mesh-with`; a config file passes e.g. `derp.yaml mesh.with`).
 * An empty value (or no values) means no mesh and gives [].
 */
export function parseMeshWith(entries: string | readonly string[], options: { source?: string } = {}): MeshTarget[] {
  const source = options.source ?? FLAG;
  const values = typeof entries === 'string' ? [entries] : entries;
  if (values.length === 0 || (values.length === 1 && values[0]!.trim() === '')) return [];
  const pieces = values.flatMap((v) => v.split(','));
  const out: MeshTarget[] = [];
  const seen = new Map<string, number>();
  pieces.forEach((raw, i) => {
    const index = i + 1;
    const target = parseEntry(raw.trim(), index, source);
    const key = `${target.host}|${target.port ?? ''}|${target.dialHost ?? ''}`;
    const first = seen.get(key);
    if (first !== undefined) throw entryError(source, index, target.spec, `duplicate of entry ${first}`);
    seen.set(key, index);
    out.push(target);
  });
  return out;
}

function entryError(source: string, index: number, spec: string, what: string): ConfigError {
  return new ConfigError(`${source} entry ${index} "${spec}": ${what}`, { context: { source, entry: index, spec } });
}

function parseEntry(spec: string, index: number, source: string): MeshTarget {
  const fail = (what: string): never => {
    throw entryError(source, index, spec, what);
  };
  if (spec === '') fail(`empty entry (write ${SYNTAX}, entries separated by commas)`);

  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(spec);
  if (scheme) {
    // Someone pasted the node's URL: tell them the entry it stands for.
    let suggestion = 'host[:port]';
    try {
      const u = new URL(spec);
      if (u.hostname !== '') suggestion = u.port === '' ? u.hostname : `${u.hostname}:${u.port}`;
    } catch {
      // keep the generic suggestion
    }
    fail(`a URL is not accepted (the scheme is always https and the path /derp): write ${suggestion}`);
  }
  if (spec.includes('@')) fail(`user info ("…@") is not accepted (mesh peers authenticate with the mesh key): write ${SYNTAX}`);
  if (/[?#\s]/.test(spec)) fail(`unexpected character ${JSON.stringify(/[?#\s]/.exec(spec)![0])}: write ${SYNTAX}`);

  const slash = spec.indexOf('/');
  const hostPart = slash === -1 ? spec : spec.slice(0, slash);
  const dialPart = slash === -1 ? undefined : spec.slice(slash + 1);

  const { host, port } = parseHostPort(hostPart, fail);
  const target: MeshTarget = { spec, host };
  if (port !== undefined) target.port = port;
  if (dialPart !== undefined) target.dialHost = parseDialHost(dialPart, host, port, fail);
  return target;
}

function parseHostPort(s: string, fail: (what: string) => never): { host: string; port?: number } {
  if (s === '') fail(`no host before "/" (write ${SYNTAX})`);
  let host: string;
  let portText: string | undefined;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close === -1) fail('unclosed "[" (an IPv6 address is written [addr] or [addr]:port)');
    host = s.slice(1, close).toLowerCase();
    const rest = s.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) fail(`unexpected ${JSON.stringify(rest)} after "]" (write [addr] or [addr]:port)`);
      portText = rest.slice(1);
    }
    if (isIP(host) !== 6) fail(`${JSON.stringify(host)} in brackets is not an IPv6 address`);
  } else {
    const colons = s.split(':').length - 1;
    if (colons > 1) {
      if (isIP(s) === 6) fail(`an IPv6 address needs brackets: write [${s}] or [${s}]:port`);
      fail(`too many ":" (write ${SYNTAX}; an IPv6 address goes in brackets)`);
    }
    const colon = s.indexOf(':');
    host = colon === -1 ? s : s.slice(0, colon);
    if (colon !== -1) portText = s.slice(colon + 1);
    if (host === '') fail(`no host before ":" (write ${SYNTAX})`);
    host = host.toLowerCase();
    checkName(host, 'host', fail);
  }
  if (portText === undefined) return { host };
  return { host, port: parsePort(portText, fail) };
}

function parsePort(text: string, fail: (what: string) => never): number {
  if (text === '') fail('empty port after ":" (write host:port with a port from 1 to 65535, or leave out ":")');
  if (!/^\d+$/.test(text)) fail(`port ${JSON.stringify(text)} is not a number (1 to 65535)`);
  const n = Number(text);
  if (n < 1 || n > 65535) fail(`port ${text} is out of range (1 to 65535)`);
  return n;
}

function parseDialHost(s: string, host: string, port: number | undefined, fail: (what: string) => never): string {
  const shown = host.includes(':') ? `[${host}]` : host;
  if (s === '') fail(`empty dial host after "/" (write ${shown}/dialhost, or leave out "/")`);
  if (s.includes('/')) fail(`a path is not accepted (the relay path /derp is implied): write ${SYNTAX}`);
  if (s.toLowerCase() === 'derp') fail(`"/derp" reads as the URL path, which is implied: write ${shown}${port === undefined ? '' : `:${port}`}`);
  const d = s;
  if (d.startsWith('[')) {
    const m = /^\[([^\]]*)\](.*)$/.exec(d);
    if (!m || isIP(m[1]!) !== 6) fail(`dial host ${JSON.stringify(s)} is not a bracketed IPv6 address`);
    const rest = m![2]!;
    if (rest !== '') {
      if (!/^:\d+$/.test(rest)) fail(`unexpected ${JSON.stringify(rest)} after the dial host's "]"`);
      fail(`a port on the dial host is not accepted: the port goes on the host, write ${shown}${rest}/[${m![1]}]`);
    }
    return m![1]!.toLowerCase();
  }
  if (isIP(d) !== 0) return d.toLowerCase();
  const withPort = /^([^:]+):(\d+)$/.exec(d);
  if (withPort) fail(`a port on the dial host is not accepted: the port goes on the host, write ${shown}:${withPort[2]}/${withPort[1]}`);
  if (d.includes(':')) fail(`dial host ${JSON.stringify(s)} is not a DNS name or an IP address (an IPv6 address may be written [addr])`);
  const name = d.toLowerCase();
  checkName(name, 'dial host', fail);
  return name;
}

/** A DNS name or an IPv4 literal. */
function checkName(name: string, what: string, fail: (what: string) => never): void {
  if (isIP(name) === 4) return;
  const bare = name.endsWith('.') ? name.slice(0, -1) : name;
  if (bare === '' || bare.length > MAX_NAME) fail(`${what} ${JSON.stringify(name)} is not a valid DNS name (1 to ${MAX_NAME} characters)`);
  const labels = bare.split('.');
  for (const label of labels) {
    if (label.length > MAX_LABEL) fail(`${what} ${JSON.stringify(name)}: label "${label}" is longer than ${MAX_LABEL} characters`);
    if (!LABEL.test(label)) fail(`${what} ${JSON.stringify(name)} is not a valid DNS name or IP address (letters, digits, "-", "_" and "." only; no empty label)`);
  }
  // An all-numeric last label is never a name (RFC 3696 §2): it is a mistyped IPv4 address.
  if (/^\d+$/.test(labels[labels.length - 1]!)) fail(`${what} ${JSON.stringify(name)} is not a valid IPv4 address`);
}

/** The entry text for a target (IPv6 in brackets); parseMeshWith reads it back to the same target. */
export function formatMeshTarget(t: Pick<MeshTarget, 'host' | 'port' | 'dialHost'>): string {
  const host = isIP(t.host) === 6 ? `[${t.host}]` : t.host;
  const port = t.port === undefined ? '' : `:${t.port}`;
  const dial = t.dialHost === undefined ? '' : `/${isIP(t.dialHost) === 6 ? `[${t.dialHost}]` : t.dialHost}`;
  return `${host}${port}${dial}`;
}
