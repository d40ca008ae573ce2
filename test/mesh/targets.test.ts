import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/lib/errors.js';
import { formatMeshTarget, parseMeshWith } from '../../src/lib/mesh/targets.js';

describe('parseMeshWith: accepted entries', () => {
  it('reads host, host:port and host/dialhost, comma-separated, trimmed', () => {
    expect(parseMeshWith(' derp1.example.com , derp2.example.com:8443/10.0.0.2,derp3/derp3.internal ')).toEqual([
      { spec: 'derp1.example.com', host: 'derp1.example.com' },
      { spec: 'derp2.example.com:8443/10.0.0.2', host: 'derp2.example.com', port: 8443, dialHost: '10.0.0.2' },
      { spec: 'derp3/derp3.internal', host: 'derp3', dialHost: 'derp3.internal' },
    ]);
  });

  it('joins repeated flags (each may hold a list) in order', () => {
    expect(parseMeshWith(['a.example,b.example', 'c.example:1']).map((t) => [t.host, t.port])).toEqual([
      ['a.example', undefined],
      ['b.example', undefined],
      ['c.example', 1],
    ]);
  });

  it('takes IPv6 literals in brackets, as host and as dial host (bracketed or not)', () => {
    expect(parseMeshWith(['[::1]:8443', '[2001:DB8::1]/[::1]', 'x.example/fd00::2', '[::1]'])).toEqual([
      { spec: '[::1]:8443', host: '::1', port: 8443 },
      { spec: '[2001:DB8::1]/[::1]', host: '2001:db8::1', dialHost: '::1' },
      { spec: 'x.example/fd00::2', host: 'x.example', dialHost: 'fd00::2' },
      { spec: '[::1]', host: '::1' },
    ]);
  });

  it('takes IPv4 literals, the port bounds, a trailing dot, underscores; lower-cases names', () => {
    expect(parseMeshWith('127.0.0.1:1,10.1.2.3:65535,Derp.Example.COM.,_derp._tcp.example/10.0.0.1')).toEqual([
      { spec: '127.0.0.1:1', host: '127.0.0.1', port: 1 },
      { spec: '10.1.2.3:65535', host: '10.1.2.3', port: 65535 },
      { spec: 'Derp.Example.COM.', host: 'derp.example.com.' },
      { spec: '_derp._tcp.example/10.0.0.1', host: '_derp._tcp.example', dialHost: '10.0.0.1' },
    ]);
  });

  it('an empty value (or none) is no mesh', () => {
    expect(parseMeshWith('')).toEqual([]);
    expect(parseMeshWith('   ')).toEqual([]);
    expect(parseMeshWith([])).toEqual([]);
    expect(parseMeshWith([''])).toEqual([]);
  });

  it('the same host with and without a port are two entries (the default port is not known here)', () => {
    expect(parseMeshWith('a.example:443,a.example')).toHaveLength(2);
  });
});

describe('parseMeshWith: every refusal names the entry and says what is wrong', () => {
  const bad: Array<[string | string[], string]> = [
    ['a,,b', '--mesh-with entry 2 "": empty entry (write host[:port][/dialhost], entries separated by commas)'],
    ['a,', '--mesh-with entry 2 "": empty entry (write host[:port][/dialhost], entries separated by commas)'],
    [',', '--mesh-with entry 1 "": empty entry (write host[:port][/dialhost], entries separated by commas)'],
    [['a', ' '], '--mesh-with entry 2 "": empty entry (write host[:port][/dialhost], entries separated by commas)'],
    ['a:0', '--mesh-with entry 1 "a:0": port 0 is out of range (1 to 65535)'],
    ['ok,a:65536', '--mesh-with entry 2 "a:65536": port 65536 is out of range (1 to 65535)'],
    ['a:abc', '--mesh-with entry 1 "a:abc": port "abc" is not a number (1 to 65535)'],
    ['a:-1', '--mesh-with entry 1 "a:-1": port "-1" is not a number (1 to 65535)'],
    ['a:', '--mesh-with entry 1 "a:": empty port after ":" (write host:port with a port from 1 to 65535, or leave out ":")'],
    ['[::1]:99999', '--mesh-with entry 1 "[::1]:99999": port 99999 is out of range (1 to 65535)'],
    ['a,b,A', '--mesh-with entry 3 "A": duplicate of entry 1'],
    [['x:1/10.0.0.1', 'x:1/10.0.0.1'], '--mesh-with entry 2 "x:1/10.0.0.1": duplicate of entry 1'],
    ['https://derp1.example.com/derp', '--mesh-with entry 1 "https://derp1.example.com/derp": a URL is not accepted (the scheme is always https and the path /derp): write derp1.example.com'],
    ['a,https://x.example:8443/derp', '--mesh-with entry 2 "https://x.example:8443/derp": a URL is not accepted (the scheme is always https and the path /derp): write x.example:8443'],
    ['wss://[::1]:3/', '--mesh-with entry 1 "wss://[::1]:3/": a URL is not accepted (the scheme is always https and the path /derp): write [::1]:3'],
    ['admin@x.example', '--mesh-with entry 1 "admin@x.example": user info ("…@") is not accepted (mesh peers authenticate with the mesh key): write host[:port][/dialhost]'],
    ['x.example/derp', '--mesh-with entry 1 "x.example/derp": "/derp" reads as the URL path, which is implied: write x.example'],
    ['x.example:8443/derp', '--mesh-with entry 1 "x.example:8443/derp": "/derp" reads as the URL path, which is implied: write x.example:8443'],
    ['x.example/a/b', '--mesh-with entry 1 "x.example/a/b": a path is not accepted (the relay path /derp is implied): write host[:port][/dialhost]'],
    ['x.example/', '--mesh-with entry 1 "x.example/": empty dial host after "/" (write x.example/dialhost, or leave out "/")'],
    ['/10.0.0.1', '--mesh-with entry 1 "/10.0.0.1": no host before "/" (write host[:port][/dialhost])'],
    [':443', '--mesh-with entry 1 ":443": no host before ":" (write host[:port][/dialhost])'],
    ['::1', '--mesh-with entry 1 "::1": an IPv6 address needs brackets: write [::1] or [::1]:port'],
    ['a:1:2', '--mesh-with entry 1 "a:1:2": too many ":" (write host[:port][/dialhost]; an IPv6 address goes in brackets)'],
    ['[::1', '--mesh-with entry 1 "[::1": unclosed "[" (an IPv6 address is written [addr] or [addr]:port)'],
    ['[x]:1', '--mesh-with entry 1 "[x]:1": "x" in brackets is not an IPv6 address'],
    ['[::1]x', '--mesh-with entry 1 "[::1]x": unexpected "x" after "]" (write [addr] or [addr]:port)'],
    ['x/[::1]:8443', '--mesh-with entry 1 "x/[::1]:8443": a port on the dial host is not accepted: the port goes on the host, write x:8443/[::1]'],
    ['x/10.0.0.1:8443', '--mesh-with entry 1 "x/10.0.0.1:8443": a port on the dial host is not accepted: the port goes on the host, write x:8443/10.0.0.1'],
    ['x/[zz]', '--mesh-with entry 1 "x/[zz]": dial host "[zz]" is not a bracketed IPv6 address'],
    ['x/y:z:w', '--mesh-with entry 1 "x/y:z:w": dial host "y:z:w" is not a DNS name or an IP address (an IPv6 address may be written [addr])'],
    ['1.2.3.256', '--mesh-with entry 1 "1.2.3.256": host "1.2.3.256" is not a valid IPv4 address'],
    ['bad-.example', '--mesh-with entry 1 "bad-.example": host "bad-.example" is not a valid DNS name or IP address (letters, digits, "-", "_" and "." only; no empty label)'],
    ['a..b', '--mesh-with entry 1 "a..b": host "a..b" is not a valid DNS name or IP address (letters, digits, "-", "_" and "." only; no empty label)'],
    ['a/-b', '--mesh-with entry 1 "a/-b": dial host "-b" is not a valid DNS name or IP address (letters, digits, "-", "_" and "." only; no empty label)'],
    [`${'x'.repeat(64)}.example`, `--mesh-with entry 1 "${'x'.repeat(64)}.example": host "${'x'.repeat(64)}.example": label "${'x'.repeat(64)}" is longer than 63 characters`],
    [`${'abcdefghi.'.repeat(26)}com`, `--mesh-with entry 1 "${'abcdefghi.'.repeat(26)}com": host "${'abcdefghi.'.repeat(26)}com" is not a valid DNS name (1 to 253 characters)`],
    ['x.example?a=1', '--mesh-with entry 1 "x.example?a=1": unexpected character "?": write host[:port][/dialhost]'],
    ['a b', '--mesh-with entry 1 "a b": unexpected character " ": write host[:port][/dialhost]'],
  ];

  it.each(bad)('%j', (input, message) => {
    let caught: unknown;
    try {
      parseMeshWith(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const e = caught as ConfigError;
    expect(e.code).toBe('DERP_ERR_CONFIG');
    expect(e.message).toBe(message);
    expect(e.context.source).toBe('--mesh-with');
    expect(e.context.entry).toBe(Number(/entry (\d+)/.exec(message)![1]));
  });
});

describe('parseMeshWith: source', () => {
  it('names the config field instead of the flag when told', () => {
    let caught: unknown;
    try {
      parseMeshWith(['a.example', 'a.example:0'], { source: 'derp.yaml mesh.with' });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).message).toBe('derp.yaml mesh.with entry 2 "a.example:0": port 0 is out of range (1 to 65535)');
    expect((caught as ConfigError).context).toEqual({ source: 'derp.yaml mesh.with', entry: 2, spec: 'a.example:0' });
  });
});

describe('parseMeshWith: properties', () => {
  const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.domain().filter((d) => d !== 'derp'));
  const target = fc.record({ host: address, port: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }), dialHost: fc.option(address, { nil: undefined }) });

  it('reads back what formatMeshTarget writes (a list of them, in order)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(target, { minLength: 1, maxLength: 4, selector: (t) => formatMeshTarget(t).toLowerCase() }), (ts) => {
        const parsed = parseMeshWith(ts.map(formatMeshTarget).join(','));
        expect(parsed).toEqual(
          ts.map((t) => {
            const want: Record<string, unknown> = { spec: formatMeshTarget(t), host: t.host.toLowerCase() };
            if (t.port !== undefined) want.port = t.port;
            if (t.dialHost !== undefined) want.dialHost = t.dialHost.toLowerCase();
            return want;
          }),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('any text either parses or is refused with a ConfigError naming an entry', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.stringMatching(/^[a-z0-9.:/@[\],_-]{0,30}$/)), (text) => {
        try {
          parseMeshWith(text);
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          expect((err as ConfigError).message).toMatch(/^--mesh-with entry \d+ "/);
        }
      }),
      { numRuns: 500 },
    );
  });
});
