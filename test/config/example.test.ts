/** `derp config example` is valid, names every field of the table, and the README carries the table. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIELD_PATHS, FIELDS, exampleConfig, fieldTableMarkdown, parseConfigText, resolveServeConfig, type FieldSpec } from '../../src/lib/config/index.js';
import { ROOT } from '../helpers/cli.js';

describe('exampleConfig', () => {
  it('passes the checks derp config check runs', () => {
    const c = resolveServeConfig(parseConfigText(exampleConfig(), 'example.yaml'));
    expect(c.tls.certMode).toBe('acme');
    expect(c.derpMap).not.toBeNull();
  });

  it('has every field of the table: active, or (alternatives) commented out', () => {
    const text = exampleConfig();
    const active = parseConfigText(text, 'example.yaml').values;
    const commented = FIELD_PATHS.filter((p) => (FIELDS[p] as FieldSpec).exampleCommented === true);
    expect(Object.keys(active).sort()).toEqual(FIELD_PATHS.filter((p) => !commented.includes(p)).sort());
    // Uncommenting the alternatives gives a document with every field (mutually exclusive, so not checked).
    const names = new Set(commented.map((p) => p.split('.').at(-1)!));
    const uncommented = text
      .split('\n')
      .map((l) => l.replace(/^(\s*)# (\w+):/, (m, indent: string, key: string) => (names.has(key) ? `${indent}${key}:` : m)))
      .join('\n');
    expect(Object.keys(parseConfigText(uncommented, 'all.yaml').values).sort()).toEqual([...FIELD_PATHS].sort());
  });

  it('the README has the field table exactly as generated from the table', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(fieldTableMarkdown());
  });

  it('the README shows the example exactly as `derp config example` prints it', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(`\`\`\`yaml\n${exampleConfig().trimEnd()}\n\`\`\``);
  });
});
