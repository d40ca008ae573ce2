import { availableParallelism } from 'node:os';
/** Flags win over the file, defaults fill the rest, cross-field rules are errors at the right place. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigFileError, DEFAULT_METRICS_ADDR, DEFAULT_WARM_UP_HANDSHAKES, LE_PRODUCTION_DIRECTORY, LE_STAGING_DIRECTORY, formatConfigIssue, parseConfigText, reloadServeConfig, resolveServeConfig,
  type GivenFlags, type LoadedConfig,
} from '../../src/lib/config/index.js';
import { defaultAbuseSettings } from '../../src/lib/abuse/index.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-resolve-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function problems(file: LoadedConfig | undefined, flags: GivenFlags = {}): string[] {
  try {
    resolveServeConfig(file, flags);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigFileError);
    return (err as ConfigFileError).issues.map(formatConfigIssue);
  }
  throw new Error('expected the configuration to be refused');
}

describe('resolveServeConfig', () => {
  it('defaults: --dev alone', () => {
    const c = resolveServeConfig(undefined, { dev: true });
    expect(c).toEqual({
      configFile: null, addr: '127.0.0.1:3340', keyFile: null, dev: true, insecureHttp: false, drainSeconds: 0,
      log: { json: false, level: 'info' },
      tls: { certMode: 'none', acme: { directory: LE_PRODUCTION_DIRECTORY, staging: false }, marginDays: 7 },
      httpPort: -1, stun: { enabled: true, port: 3478, rateLimit: 100 }, metrics: { addr: DEFAULT_METRICS_ADDR }, trustedProxies: [], derpMap: null,
      admission: {
        allowKeysFile: null, denyKeysFile: null, allowKeys: [], denyKeys: [],
        verifyClientUrl: null, verifyClientUrlFailOpen: false, verifyClientUrlTimeoutMs: 5000, cacheAllowSeconds: 60, cacheDenySeconds: 10,
        verifyClients: false, tailscaledSocket: '/var/run/tailscale/tailscaled.sock',
        verifyTailnet: null, tailnet: null, apiKeyFile: null, oauthClientFile: null, headscaleUrl: null, refreshSeconds: 60, maxStaleSeconds: 900,
      },
      abuse: defaultAbuseSettings(),
      limits: {
        clientRate: 0, clientBurst: 0, perKey: {}, acceptRate: 0, acceptBurst: 0, maxConnsPerIp: 0, maxConns: 0, maxPendingHandshakes: 0, handshakeShare: 0,
        handshakeTimeoutSeconds: 10, writeTimeoutSeconds: 2,
      },
      mesh: { with: [], pskFile: null, caFile: null, resolveSeconds: 30 },
      workers: 1,
      handshakeThread: availableParallelism() > 1,
      warmUpHandshakes: 0,
    });
  });

  it('handshakeThread: on for one process with CPUs to spare, off with several workers, as given when given', () => {
    const several = resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '192.0.2.1', workers: 2 });
    expect(several.handshakeThread).toBe(false);
    expect(resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '192.0.2.1', workers: 2, 'handshake-thread': true }).handshakeThread).toBe(true);
    expect(resolveServeConfig(undefined, { dev: true, 'handshake-thread': false }).handshakeThread).toBe(false);
    expect(resolveServeConfig(parseConfigText('dev: true\nhandshakeThread: false\n', 'x.yaml')).handshakeThread).toBe(false);
    expect(() => resolveServeConfig(parseConfigText('dev: true\nhandshakeThread: maybe\n', 'x.yaml'))).toThrow(/x\.yaml:2.*handshakeThread.*true or false/);
  });

  it('warmUpHandshakes: off with dev, 800 in production, as given when given, bounded', () => {
    expect(resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '192.0.2.1' }).warmUpHandshakes).toBe(DEFAULT_WARM_UP_HANDSHAKES);
    expect(DEFAULT_WARM_UP_HANDSHAKES).toBe(800);
    expect(resolveServeConfig(undefined, { dev: true, 'warm-up-handshakes': 300 }).warmUpHandshakes).toBe(300);
    expect(resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '192.0.2.1', 'warm-up-handshakes': 0 }).warmUpHandshakes).toBe(0);
    expect(resolveServeConfig(parseConfigText('dev: true\nwarmUpHandshakes: 50\n', 'x.yaml')).warmUpHandshakes).toBe(50);
    expect(() => resolveServeConfig(parseConfigText('dev: true\nwarmUpHandshakes: 10001\n', 'x.yaml'))).toThrow(/x\.yaml:2.*warmUpHandshakes.*an integer from 0 to 10000/);
    expect(() => resolveServeConfig(parseConfigText('dev: true\nwarmUpHandshakes: lots\n', 'x.yaml'))).toThrow(/x\.yaml:2.*warmUpHandshakes/);
  });

  it('mesh: mesh.with needs the key file, mesh.caFile needs mesh.with; workers default to the CPUs in production', () => {
    expect(() => resolveServeConfig(undefined, { dev: true, 'mesh-with': ['b.example.com'] })).toThrow(/--mesh-with \(mesh\.with\): needs the region's mesh key: set mesh\.pskFile \(--mesh-psk-file\)/);
    expect(() => resolveServeConfig(undefined, { dev: true, 'mesh-ca-file': '/ca.pem' })).toThrow(/--mesh-ca-file \(mesh\.caFile\): only used with mesh\.with \(--mesh-with\)/);
    const c = resolveServeConfig(undefined, { dev: true, 'mesh-with': ['b.example.com,c.example.com'], 'mesh-psk-file': '/k' });
    expect(c.mesh).toEqual({ with: ['b.example.com,c.example.com'], pskFile: '/k', caFile: null, resolveSeconds: 30 });
    expect(resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '192.0.2.1' }).workers).toBe(availableParallelism());
    expect(resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '192.0.2.1', workers: 3 }).workers).toBe(3);
  });

  it('defaults that depend on other fields: :443 without dev, port 80 with TLS, ephemeral STUN with port 0', () => {
    const c = resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '192.0.2.1' });
    expect(c).toMatchObject({ addr: ':443', keyFile: '/k', tls: { certMode: 'self-signed', selfSigned: '192.0.2.1' }, httpPort: 80, stun: { port: 3478 } });
    const ephemeral = resolveServeConfig(undefined, { 'key-file': '/k', 'self-signed': '127.0.0.1', addr: '127.0.0.1:0' });
    expect(ephemeral).toMatchObject({ stun: { port: 0 }, httpPort: 0, metrics: { addr: '127.0.0.1:0' } });
    expect(resolveServeConfig(undefined, { dev: true, 'metrics-addr': 'none' }).metrics.addr).toBeNull();
    expect(resolveServeConfig(undefined, { 'key-file': '/k', 'tls-cert': '/c', 'tls-key': '/k2' }).tls.certMode).toBe('manual');
  });

  it('flags win over the file, field by field; --no-stun (false) also wins', () => {
    const file = parseConfigText('dev: true\naddr: "127.0.0.1:4000"\nstun:\n  port: 4001\n  rateLimit: 5\nlog:\n  level: warn\n', 'derp.yaml');
    const fromFile = resolveServeConfig(file);
    expect(fromFile).toMatchObject({ configFile: 'derp.yaml', addr: '127.0.0.1:4000', stun: { enabled: true, port: 4001, rateLimit: 5 }, log: { level: 'warn' } });
    const c = resolveServeConfig(file, { addr: '127.0.0.1:5000', stun: false, 'log-level': 'debug' });
    expect(c).toMatchObject({ addr: '127.0.0.1:5000', stun: { enabled: false, port: 4001, rateLimit: 5 }, log: { level: 'debug' }, dev: true });
    // The file can turn STUN off and a flag back on.
    const off = parseConfigText('dev: true\nstun:\n  enabled: false\n', 'off.yaml');
    expect(resolveServeConfig(off).stun.enabled).toBe(false);
    expect(resolveServeConfig(off, { stun: true }).stun.enabled).toBe(true);
  });

  it('repeatable --trusted-proxy replaces the file list', () => {
    const file = parseConfigText('dev: true\ntrustedProxies: [10.0.0.0/8]\n', 'p.yaml');
    expect(resolveServeConfig(file).trustedProxies).toEqual(['10.0.0.0/8']);
    expect(resolveServeConfig(file, { 'trusted-proxy': ['127.0.0.1', '::1/128'] }).trustedProxies).toEqual(['127.0.0.1', '::1/128']);
  });

  it('bad flag values are reported by flag and field, like file values', () => {
    expect(problems(undefined, { dev: true, addr: 'no-port', 'stun-port': 70000, 'trusted-proxy': ['nope'] })).toEqual([
      '--addr (addr): expected a listen address host:port, [ipv6]:port or :port, found "no-port"',
      '--stun-port (stun.port): expected an integer from 0 to 65535, found 70000',
      '--trusted-proxy (trustedProxies): expected a list of IP addresses or CIDRs, found ["nope"]',
    ]);
  });

  it('plain HTTP without dev/insecureHttp, and no key file without dev, are refused', () => {
    expect(problems(undefined, {})).toEqual([
      'command line keyFile: required unless dev: set keyFile (--key-file), or use --dev for an ephemeral key',
      expect.stringContaining('command line tls.certMode: refusing to serve DERP over plain HTTP'),
    ]);
    expect(resolveServeConfig(undefined, { 'key-file': '/k', 'insecure-http': true }).tls.certMode).toBe('none');
  });

  it('cross-field rules in a file are reported at the file position of what is wrong or of its group', () => {
    const file = parseConfigText(['keyFile: /k', 'tls:', '  certMode: acme', '  certFile: /c.pem', '  acme:', '    staging: true', '    directory: https://ca.example/dir'].join('\n'), 'x.yaml');
    // A missing field is placed at its group (the tls mapping starts at line 3, column 3).
    expect(problems(file)).toEqual([
      'x.yaml:3:3 tls.hostname: required with tls.certMode acme',
      'x.yaml:3:3 tls.certDir: required with tls.certMode acme',
      'x.yaml:4:13 tls.certFile: not used with tls.certMode acme: remove it or change the mode',
      'x.yaml:7:16 tls.acme.directory: conflicts with tls.acme.staging (--acme-staging): give one of them',
    ]);
  });

  it('manual needs both files; manual and self-signed together need an explicit mode', () => {
    expect(problems(undefined, { 'key-file': '/k', 'tls-cert': '/c' })).toEqual(['command line tls.keyFile: required with tls.certMode manual']);
    expect(problems(undefined, { 'key-file': '/k', 'tls-cert': '/c', 'tls-key': '/c', 'self-signed': 'h' })).toEqual([
      '--self-signed (tls.selfSigned): conflicts with tls.certFile (--tls-cert): choose one, or set tls.certMode (--cert-mode)',
    ]);
    expect(problems(undefined, { 'key-file': '/k', 'cert-mode': 'self-signed' })).toEqual(['command line tls.selfSigned: required with tls.certMode self-signed']);
  });

  it('acme: staging picks the staging directory; a flag mode overrides the file and its rules follow', () => {
    const c = resolveServeConfig(undefined, { 'key-file': '/k', 'cert-mode': 'acme', hostname: 'derp.example.com', 'cert-dir': '/d', 'acme-staging': true });
    expect(c.tls).toMatchObject({ certMode: 'acme', hostname: 'derp.example.com', certDir: '/d', acme: { directory: LE_STAGING_DIRECTORY, staging: true } });
    const file = parseConfigText('keyFile: /k\ntls:\n  selfSigned: h\n', 's.yaml');
    expect(resolveServeConfig(file).tls.certMode).toBe('self-signed');
    expect(problems(file, { 'cert-mode': 'acme', hostname: 'h', 'cert-dir': '/d' })).toEqual([
      's.yaml:3:15 tls.selfSigned: not used with tls.certMode acme: remove it or change the mode',
    ]);
  });

  it('a flag that is not a serve setting is a programming error, reported clearly', () => {
    expect(problems(undefined, { dev: true, bogus: 1 })).toEqual(['--bogus: not a serve setting']);
  });
});

describe('reloadServeConfig', () => {
  it('re-reads the file with the same flags; an invalid file throws (the caller keeps the running config)', async () => {
    const f = join(dir, 'reload.yaml');
    await writeFile(f, 'dev: true\nlog:\n  level: info\nstun:\n  rateLimit: 10\n');
    const first = await reloadServeConfig(f, { 'stun-rate-limit': 20 });
    expect(first.config).toMatchObject({ log: { level: 'info' }, stun: { rateLimit: 20 } });
    await writeFile(f, 'dev: true\nlog:\n  level: debug\n');
    expect((await reloadServeConfig(f, { 'stun-rate-limit': 20 })).config).toMatchObject({ log: { level: 'debug' }, stun: { rateLimit: 20 } });
    await writeFile(f, 'dev: true\nlog:\n  levle: debug\n');
    await expect(reloadServeConfig(f, {})).rejects.toThrow(ConfigFileError);
    await expect(reloadServeConfig(f, {})).rejects.toThrow(`${f}:3:3 log.levle: unknown field (did you mean "level"?)`);
  });
});
