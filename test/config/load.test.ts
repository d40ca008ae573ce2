/** Config files from real temp files: every error class, with file:line:column and the dotted path. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigFileError, MAX_CONFIG_DEPTH, formatConfigIssue, loadConfigFile, parseConfigText, type ConfigIssue } from '../../src/lib/config/index.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'derp-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function fileWith(name: string, text: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
}

/** The lines `derp config check` prints for a bad file. */
async function problems(file: string): Promise<string[]> {
  const err = await loadConfigFile(file).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigFileError);
  const issues = (err as ConfigFileError).issues as ConfigIssue[];
  expect((err as ConfigFileError).code).toBe('DERP_ERR_CONFIG');
  return issues.map(formatConfigIssue);
}

describe('loadConfigFile', () => {
  it('reads YAML into values by dotted path', async () => {
    const f = await fileWith('ok.yaml', 'addr: ":8443"\nstun:\n  port: 3479\n  enabled: false\ntrustedProxies: [10.0.0.0/8, "::1"]\n');
    const c = await loadConfigFile(f);
    expect(c.format).toBe('yaml');
    expect(c.values).toEqual({ addr: ':8443', 'stun.port': 3479, 'stun.enabled': false, trustedProxies: ['10.0.0.0/8', '::1'] });
    expect(c.derpMap).toBeNull();
  });

  it('chooses JSON by content, not by extension', async () => {
    const f = await fileWith('really-json.yaml', '{"log": {"level": "debug"}, "httpPort": -1}');
    const c = await loadConfigFile(f);
    expect(c.format).toBe('json');
    expect(c.values).toEqual({ 'log.level': 'debug', httpPort: -1 });
    const y = await loadConfigFile(await fileWith('yaml.json', 'log:\n  level: warn\n'));
    expect(y.format).toBe('yaml');
  });

  it('a wrong type: file:line:col, path, what was expected and what was found', async () => {
    const f = await fileWith('type.yaml', 'stun:\n  rateLimit: fast\ntls:\n  marginDays: -3\n');
    expect(await problems(f)).toEqual([
      `${f}:2:14 stun.rateLimit: expected an integer ≥ 0, found "fast"`,
      `${f}:4:15 tls.marginDays: expected a number ≥ 0, found -3`,
    ]);
  });

  it('unknown fields, with "did you mean" for near misses (key position)', async () => {
    const f = await fileWith('unknown.yaml', 'stun:\n  prot: 3478\nlgo:\n  level: info\ncertFile: x.pem\nzzzzzz: 1\n');
    expect(await problems(f)).toEqual([
      `${f}:2:3 stun.prot: unknown field (did you mean "port"?)`,
      `${f}:3:1 lgo: unknown field (did you mean "log"?)`,
      `${f}:5:1 certFile: unknown field (did you mean "tls.certFile"?)`,
      `${f}:6:1 zzzzzz: unknown field`,
    ]);
  });

  it('a flag name used as a field points at the field', async () => {
    const f = await fileWith('flagname.yaml', 'key-file: /x.key\n');
    expect(await problems(f)).toEqual([`${f}:1:1 key-file: unknown field (did you mean "keyFile"?)`]);
  });

  it('YAML syntax errors have positions', async () => {
    const f = await fileWith('syntax.yaml', 'stun:\n  port: 1\n   enabled: true\n');
    const lines = await problems(f);
    expect(lines[0]).toBe(`${f}:2:9: YAML syntax error: Nested mappings are not allowed in compact mappings`);
    expect(lines.every((l) => /:\d+:\d+: YAML syntax error: /.test(l))).toBe(true);
  });

  it('JSON syntax errors have positions', async () => {
    const f = await fileWith('syntax.json', '{\n  "stun": {\n    "port": 1,\n  }\n}\n');
    expect(await problems(f)).toEqual([expect.stringMatching(new RegExp(`^${f.replace(/[.]/g, '\\.')}:4:3: JSON syntax error: `))]);
  });

  it('several errors at once, in file order, each with its own line:col', async () => {
    const f = await fileWith(
      'many.yaml',
      ['addr: nowhere', 'log:', '  level: loud', '  json: "yes"', 'metrics:', '  addr: "1.2.3.4"', 'trustedProxies:', '  - 10.0.0.0/33', 'httpPort: 70000'].join('\n'),
    );
    expect(await problems(f)).toEqual([
      `${f}:1:7 addr: expected a listen address host:port, [ipv6]:port or :port, found "nowhere"`,
      `${f}:3:10 log.level: expected one of debug, info, warn, error, found "loud"`,
      `${f}:4:9 log.json: expected true or false, found "yes"`,
      `${f}:6:9 metrics.addr: expected a listen address host:port, [ipv6]:port or :port, or "none", found "1.2.3.4"`,
      `${f}:8:5 trustedProxies[0]: expected a list of IP addresses or CIDRs, found "10.0.0.0/33"`,
      `${f}:9:11 httpPort: expected an integer from -1 to 65535, found 70000`,
    ]);
  });

  it('JSON files get positions for schema errors too', async () => {
    const f = await fileWith('pos.json', '{\n  "stun": {\n    "port": "x"\n  },\n  "tls": 5\n}\n');
    expect(await problems(f)).toEqual([
      `${f}:3:13 stun.port: expected an integer from 0 to 65535, found "x"`,
      `${f}:5:10 tls: expected a mapping with certMode, certFile, keyFile, selfSigned, hostname, certDir, acme, marginDays, found 5`,
    ]);
  });

  it('null (an empty YAML value) means "not set"; prototype keys are refused', async () => {
    const ok = await loadConfigFile(await fileWith('null.yaml', 'tls:\nstun:\n  port:\n'));
    expect(ok.values).toEqual({});
    const f = await fileWith('proto.json', '{"__proto__": {"dev": true}}');
    expect(await problems(f)).toEqual([`${f}:1:15 __proto__: forbidden key "__proto__"`]);
  });

  it('a document that is not a mapping, an empty file, a missing file', async () => {
    const s = await fileWith('scalar.yaml', '42\n');
    expect(await problems(s)).toEqual([`${s}:1:1: expected a mapping of serve settings, found 42`]);
    const e = await fileWith('empty.yaml', '  \n');
    expect(await problems(e)).toEqual([`${e}: empty document (expected a serve configuration)`]);
    const m = join(dir, 'missing.yaml');
    expect(await problems(m)).toEqual([expect.stringMatching(new RegExp(`^${m.replace(/[.]/g, '\\.')}: cannot read the config file: .*ENOENT`))]);
  });

  it('derp.servers: the deployment form becomes a DERP map; its problems and unknown keys are reported', async () => {
    const good = await loadConfigFile(
      await fileWith('derp.yaml', 'derp:\n  servers:\n    - region: us-east\n      hostname: derp-use.example.com\n      stunPort: 3478\n      derpPort: 443\n'),
    );
    expect(good.derpMap?.regions[900]?.nodes[0]).toMatchObject({ id: '900a', hostname: 'derp-use.example.com', stunPort: 3478, derpPort: 443 });
    const f = await fileWith('derpbad.yaml', 'derp:\n  servers:\n    - region: us-east\n      hostnme: x\n      derpPort: 99999\n  extra: 1\n');
    const lines = await problems(f);
    expect(lines).toContain(`${f}:4:7 derp.servers[0].hostnme: unknown field (did you mean "hostname"?)`);
    expect(lines).toContain(`${f}:6:3 derp.extra: unknown field`);
    expect(lines.some((l) => l.startsWith(`${f}:5:17 derp.servers[0].derpPort: expected`))).toBe(true);
  });
});

// Counterexamples the property tests (properties.test.ts) found: both crashed with RangeError (stack overflow).
describe('parseConfigText: self-referencing aliases and deep nesting are config errors', () => {
  function issuesOf(text: string): string[] {
    try {
      parseConfigText(text, 'c.yaml');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigFileError);
      return (e as ConfigFileError).issues.map(formatConfigIssue);
    }
    throw new Error('expected a ConfigFileError');
  }

  it('a YAML alias inside the node it names (a cycle)', () => {
    expect(issuesOf('a: &x [*x]')).toContain('c.yaml:1:7 a[0]: a YAML alias refers to a node that contains it (a cycle)');
    expect(issuesOf('derp: &x {servers: [*x]}').join('\n')).toContain('a YAML alias refers to a node that contains it (a cycle)');
  });

  it('a JSON document nested thousands of levels deep', () => {
    const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
    expect(issuesOf(`{"admission":{"oauthClientFile":${deep(3000)}}}`).join('\n')).toContain(`nested more than ${MAX_CONFIG_DEPTH} levels deep`);
    expect(issuesOf(`{"x":${deep(100_000)}}`).join('\n')).toContain(`nested more than ${MAX_CONFIG_DEPTH} levels deep`);
  });
});
