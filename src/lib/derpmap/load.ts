/**
 * Loading a DERP map from a URL (global fetch — which msw can intercept in tests — with an undici
 * EnvHttpProxyAgent so HTTP(S)_PROXY / NO_PROXY apply), a file (path or file:// URL) or stdin ("-").
 * Mirrors `tailscale netcheck`: 10 s timeout, 1 MiB body limit, status must be 200.
 */
import { createReadStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Dispatcher1Wrapper, EnvHttpProxyAgent, type Dispatcher } from 'undici';
import { describeError, MapFetchError, MapValidationError } from '../errors.js';
import { DEFAULT_FETCH_TIMEOUT_MS, MAX_MAP_BYTES, MAX_REDIRECTS } from './constants.js';
import { parseDerpMap, type DerpMapFormatOption } from './parse.js';
import type { DERPMap, DerpMapFormat } from './types.js';

export interface LoadDerpMapOptions {
  /** Cancels the load; its reason is rethrown as is. */
  signal?: AbortSignal;
  /** Whole-fetch timeout for URLs (default 10 s, like `tailscale netcheck`). */
  timeoutMs?: number;
  format?: DerpMapFormatOption;
  /** Stream read for the source "-" (default process.stdin). */
  stdin?: AsyncIterable<Uint8Array | string>;
  /** Body / file size limit (default 1 MiB). */
  maxBytes?: number;
  maxRedirects?: number;
  /** HTTP dispatcher (default: an EnvHttpProxyAgent created and closed per load). */
  dispatcher?: Dispatcher;
}

export interface LoadedDerpMap {
  map: DERPMap;
  /** The name errors use: the URL, the file path, or "stdin". */
  source: string;
  format: DerpMapFormat;
}

const ACCEPT = 'application/json, application/yaml;q=0.9, */*;q=0.5';
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Node's global fetch speaks undici's v1 handler API; undici 8 dispatchers need this adapter. */
function defaultDispatcher(): Dispatcher {
  return new Dispatcher1Wrapper(new EnvHttpProxyAgent());
}

export function isHttpUrl(source: string): boolean {
  return /^https?:\/\//i.test(source);
}

/** Loads, parses and validates a map; MapFetchError if it cannot be read, MapValidationError if it is bad. */
export async function loadDerpMap(source: string, opts: LoadDerpMapOptions = {}): Promise<LoadedDerpMap> {
  const maxBytes = opts.maxBytes ?? MAX_MAP_BYTES;
  let name: string;
  let text: string;
  let contentType: string | undefined;
  if (source === '-') {
    name = 'stdin';
    text = decodeUtf8(await readLimited(opts.stdin ?? process.stdin, maxBytes, name), name);
  } else if (isHttpUrl(source)) {
    name = source;
    const got = await fetchText(source, opts, maxBytes);
    text = got.text;
    contentType = got.contentType;
  } else {
    let path = source;
    if (/^file:/i.test(source)) {
      try {
        path = fileURLToPath(source);
      } catch (cause) {
        throw new MapFetchError(source, `invalid file URL: ${describeError(cause)}`, { cause });
      }
    } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) {
      throw new MapFetchError(source, 'unsupported URL scheme (use http:, https:, file:, a path, or "-" for stdin)');
    }
    name = source;
    let data: Buffer;
    try {
      data = await readLimited(createReadStream(path), maxBytes, name);
    } catch (err) {
      if (err instanceof MapFetchError) throw err;
      throw new MapFetchError(name, `cannot read the map file: ${describeError(err)}`, { cause: err });
    }
    text = decodeUtf8(data, name);
  }
  try {
    const { map, format } = parseDerpMap(text, name, opts.format ?? 'auto');
    return { map, source: name, format };
  } catch (err) {
    // A web page instead of a map is a common mistake (login portal, wrong path): say what came back.
    if (err instanceof MapValidationError && contentType && !/json|yaml|text\/plain/i.test(contentType)) {
      throw new MapValidationError(name, [...err.issues, { source: name, path: '', message: `the server sent Content-Type ${JSON.stringify(contentType)}, not JSON` }]);
    }
    throw err;
  }
}

function decodeUtf8(data: Buffer, name: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch (cause) {
    if (!(cause instanceof TypeError)) throw cause;
    throw new MapValidationError(name, [{ source: name, path: '', message: 'the map is not UTF-8 text' }]);
  }
}

/** Reads a stream into memory, failing as soon as it exceeds `max` bytes. */
async function readLimited(stream: AsyncIterable<Uint8Array | string>, max: number, name: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    total += b.length;
    if (total > max) {
      // Leaving the loop early destroys the stream (for await's return()).
      throw new MapFetchError(name, `the map is larger than ${max} bytes (limit, like tailscale netcheck's 1 MiB)`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks, total);
}

async function fetchText(source: string, opts: LoadDerpMapOptions, maxBytes: number): Promise<{ text: string; contentType?: string }> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
  const maxRedirects = opts.maxRedirects ?? MAX_REDIRECTS;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const dispatcher = opts.dispatcher ?? defaultDispatcher();
  let url: URL;
  try {
    url = new URL(source);
  } catch (cause) {
    throw new MapFetchError(source, 'invalid URL', { cause });
  }
  try {
    for (let hops = 0; ; hops++) {
      // `dispatcher` is undici's RequestInit extension; Node's typings pin an older undici Dispatcher type.
      const init = Object.assign<RequestInit, object>({ signal, redirect: 'manual', headers: { accept: ACCEPT } }, { dispatcher });
      const res = await fetch(url, init);
      if (REDIRECT_STATUSES.has(res.status)) {
        await res.body?.cancel();
        const loc = res.headers.get('location');
        if (!loc) throw new MapFetchError(source, `HTTP ${res.status} redirect from ${url.href} without a Location header`, { status: res.status });
        if (hops >= maxRedirects) throw new MapFetchError(source, `too many redirects (more than ${maxRedirects})`, { status: res.status });
        const next = new URL(loc, url);
        if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new MapFetchError(source, `redirected to unsupported URL ${next.href}`, { status: res.status });
        url = next;
        continue;
      }
      if (res.status !== 200) {
        await res.body?.cancel();
        const via = url.href === source ? '' : ` (after redirects, from ${url.href})`;
        throw new MapFetchError(source, `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${via}; expected 200`, { status: res.status });
      }
      const declared = Number(res.headers.get('content-length'));
      if (declared > maxBytes) {
        await res.body?.cancel();
        throw new MapFetchError(source, `the map is larger than ${maxBytes} bytes (Content-Length ${declared}; limit, like tailscale netcheck's 1 MiB)`);
      }
      const body = res.body ? await readLimited(res.body, maxBytes, source) : Buffer.alloc(0);
      const contentType = res.headers.get('content-type') ?? undefined;
      return { text: decodeUtf8(body, source), ...(contentType ? { contentType } : {}) };
    }
  } catch (err) {
    if (err instanceof MapFetchError || err instanceof MapValidationError) throw err;
    if (opts.signal?.aborted) throw opts.signal.reason;
    if (timeout.aborted) throw new MapFetchError(source, `timed out after ${timeoutMs} ms`, { cause: err });
    throw new MapFetchError(source, `cannot fetch the map: ${describeError(err)}`, { cause: err });
  } finally {
    if (!opts.dispatcher) await dispatcher.destroy();
  }
}
