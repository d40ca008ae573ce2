/**
 * Property tests of the config file reader (src/lib/config/load.ts): parseConfigText and
 * loadConfigFile return a config or throw ConfigFileError (a ConfigError, code DERP_ERR_CONFIG, with at
 * least one issue) on any input: arbitrary text, edits of `exampleConfig()` and of its uncommented
 * form, wrong types at every field path, deep nesting, odd numbers, `__proto__` keys, a `derp.servers`
 * section built from the map fixtures, invalid UTF-8 bytes in a real file. Seed and run counts:
 * test/helpers/fc.ts.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { parse as yamlParse, stringify as yamlStringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigFileError, FIELD_PATHS, exampleConfig, loadConfigFile, parseConfigText } from '../../src/lib/config/index.js';
import { ConfigError } from '../../src/lib/errors.js';
import { fcParams } from '../helpers/fc.js';
import { hostileDocs, mutatedValue, oddValue, serialised, setAt } from '../helpers/fc-docs.js';

const example = exampleConfig();
const exampleValue = yamlParse(example) as unknown;
/** The example with every commented-out field enabled: more paths to break. */
const uncommented = example.replace(/^(\s*)# ([A-Za-z][\w]*: .*)$/gm, '$1$2');
const uncommentedValue = ((): unknown => {
  try {
    return yamlParse(uncommented) as unknown;
  } catch {
    return exampleValue;
  }
})();
const seedYaml = readFileSync(resolve(import.meta.dirname, '../fixtures/derpmap/seed.yaml'), 'utf8');
/** The example plus the seed's `derp.servers`. */
const withServers = { ...(exampleValue as Record<string, unknown>), ...(yamlParse(seedYaml) as Record<string, unknown>) };

/** Returns normally or throws ConfigFileError with issues; anything else fails the property. */
function typed(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof ConfigFileError)) throw e;
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.code).toBe('DERP_ERR_CONFIG');
    expect(e.issues.length).toBeGreaterThan(0);
  }
}

/** A wrong value at a field's dotted path (every field the schema knows). */
const wrongField = fc.tuple(fc.constantFrom(...FIELD_PATHS), oddValue, fc.constantFrom(exampleValue, withServers)).map(([path, v, base]) => setAt(base, path.split('.'), v));

const docs = fc.oneof(
  hostileDocs(example, exampleValue),
  hostileDocs(uncommented, uncommentedValue),
  hostileDocs(yamlStringify(withServers), withServers),
  wrongField.chain(serialised),
  mutatedValue(withServers).chain(serialised),
);

describe('the config reader throws only ConfigFileError', () => {
  it('the example config and the generated valid one parse', () => {
    expect(parseConfigText(example, 'example.yaml').format).toBe('yaml');
    expect(parseConfigText(JSON.stringify(exampleValue), 'example.json').format).toBe('json');
    expect(parseConfigText(yamlStringify(withServers), 'servers.yaml').derpMap).not.toBeNull();
  });

  it('parseConfigText on hostile text, edited examples, wrong types at every field, deep nesting, prototype keys', () => {
    fc.assert(
      fc.property(docs, (text) => {
        typed(() => parseConfigText(text, 'prop.yaml'));
        expect(({} as Record<string, unknown>).x).toBeUndefined();
      }),
      fcParams(150),
    );
  });

  describe('loadConfigFile on real files', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'derp-config-props-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('any bytes, invalid UTF-8 and a BOM included', async () => {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            docs.map((t) => Buffer.from(t)),
            fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
            docs.map((t) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(t)])),
            fc.tuple(docs, fc.nat(), fc.integer({ min: 0x80, max: 0xff })).map(([t, at, byte]) => {
              const b = Buffer.from(t);
              if (b.length > 0) b[at % b.length] = byte;
              return b;
            }),
          ),
          async (bytes) => {
            const file = join(dir, `c${n++}.yaml`);
            await writeFile(file, bytes);
            try {
              await loadConfigFile(file);
            } catch (e) {
              expect(e).toBeInstanceOf(ConfigFileError);
            }
          },
        ),
        fcParams(100),
      );
    });
  });
});
