/** The `admission.*` config group: flags and file, defaults, cross-field rules with positions. */
import { describe, expect, it } from 'vitest';
import { parseConfigText, resolveServeConfig, type GivenFlags, type LoadedConfig } from '../../src/lib/config/index.js';
import { ConfigFileError, formatConfigIssue } from '../../src/lib/errors.js';

const KEY = `nodekey:${'ab'.repeat(32)}`;

function problems(file: LoadedConfig | undefined, flags: GivenFlags = {}): string[] {
  try {
    resolveServeConfig(file, flags);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigFileError);
    return (err as ConfigFileError).issues.map(formatConfigIssue);
  }
  throw new Error('expected the configuration to be refused');
}

function yaml(lines: string[], name = 'a.yaml'): LoadedConfig {
  return parseConfigText(['dev: true', ...lines].join('\n'), name);
}

describe('admission settings', () => {
  it('flags and file merge into ServeConfig.admission', () => {
    const file = yaml(['admission:', `  allowKeys: ["${KEY}"]`, '  denyKeysFile: /etc/derp/deny', '  cacheDenySeconds: 3']);
    const c = resolveServeConfig(file, { 'allow-keys': '/etc/derp/allow', 'verify-client-url': 'https://admit.example/v', 'verify-client-url-fail-open': true, 'verify-clients': true, 'tailscaled-socket': '/run/ts.sock' });
    expect(c.admission).toMatchObject({
      allowKeysFile: '/etc/derp/allow', denyKeysFile: '/etc/derp/deny', allowKeys: [KEY], denyKeys: [],
      verifyClientUrl: 'https://admit.example/v', verifyClientUrlFailOpen: true, verifyClientUrlTimeoutMs: 5000, cacheDenySeconds: 3,
      verifyClients: true, tailscaledSocket: '/run/ts.sock', verifyTailnet: null,
    });
  });

  it('refuses a bad inline key, URL or number at its position', () => {
    expect(() => yaml(['admission:', '  verifyClientUrl: ftp://x', '  verifyClientUrlTimeoutMs: 10'])).toThrow(
      /a\.yaml:3:20 admission\.verifyClientUrl: expected an http or https URL, found "ftp:\/\/x"\n.*a\.yaml:4:29 admission\.verifyClientUrlTimeoutMs: expected an integer from 100 to 60000, found 10/,
    );
    expect(problems(undefined, { dev: true, 'verify-client-url': 'not a url' })).toEqual(['--verify-client-url (admission.verifyClientUrl): expected an http or https URL, found "not a url"']);
  });

  it('the file parser reports bad admission values with line and column', () => {
    let err: unknown;
    try {
      yaml(['admission:', `  denyKeys: ["${KEY}", "nodekey:12"]`, '  verifyTailnet: tailscal']);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigFileError);
    const msgs = (err as ConfigFileError).issues.map(formatConfigIssue);
    expect(msgs).toEqual([
      expect.stringMatching(/^a\.yaml:3:\d+ admission\.denyKeys\[1\]: expected a list of node keys `nodekey:<64 hex>`, found "nodekey:12"$/) as unknown,
      expect.stringMatching(/^a\.yaml:4:18 admission\.verifyTailnet: expected one of tailscale, headscale, found "tailscal"$/) as unknown,
    ]);
  });

  it('tailscale needs a tailnet and exactly one credential; headscale needs a URL and an API key', () => {
    expect(problems(yaml(['admission:', '  verifyTailnet: tailscale']))).toEqual([
      'a.yaml:3:3 admission.tailnet: required with admission.verifyTailnet (--verify-tailnet) tailscale ("-" = the credential\'s own tailnet)',
      'a.yaml:3:18 admission.verifyTailnet: tailscale needs a credential: admission.apiKeyFile (--tailnet-api-key-file) or admission.oauthClientFile (--tailnet-oauth-client-file)',
    ]);
    expect(problems(yaml(['admission:', '  verifyTailnet: tailscale', '  tailnet: "-"', '  apiKeyFile: /k', '  oauthClientFile: /o', '  headscaleUrl: https://h']))).toEqual([
      'a.yaml:6:20 admission.oauthClientFile: conflicts with admission.apiKeyFile (--tailnet-api-key-file): give one credential',
      'a.yaml:7:17 admission.headscaleUrl: not used with admission.verifyTailnet (--verify-tailnet) tailscale',
    ]);
    expect(problems(undefined, { dev: true, 'verify-tailnet': 'headscale', tailnet: 'x' })).toEqual([
      'command line admission.headscaleUrl: required with admission.verifyTailnet (--verify-tailnet) headscale',
      'command line admission.apiKeyFile: required with admission.verifyTailnet (--verify-tailnet) headscale (a Headscale API key)',
      '--tailnet (admission.tailnet): not used with admission.verifyTailnet (--verify-tailnet) headscale',
    ]);
    const ok = resolveServeConfig(undefined, { dev: true, 'verify-tailnet': 'headscale', 'headscale-url': 'https://hs.example', 'tailnet-api-key-file': '/k' });
    expect(ok.admission).toMatchObject({ verifyTailnet: 'headscale', headscaleUrl: 'https://hs.example', apiKeyFile: '/k', refreshSeconds: 60, maxStaleSeconds: 900 });
  });

  it('settings that would be ignored are refused', () => {
    expect(problems(undefined, { dev: true, tailnet: 'x', 'tailscaled-socket': '/s', 'verify-client-url-fail-open': true })).toEqual([
      '--tailnet (admission.tailnet): only used with admission.verifyTailnet (--verify-tailnet): remove it or set admission.verifyTailnet (--verify-tailnet)',
      '--tailscaled-socket (admission.tailscaledSocket): only used with admission.verifyClients (--verify-clients): remove it or set admission.verifyClients (--verify-clients)',
      '--verify-client-url-fail-open (admission.verifyClientUrlFailOpen): only used with admission.verifyClientUrl (--verify-client-url): remove it or set admission.verifyClientUrl (--verify-client-url)',
    ]);
  });
});
