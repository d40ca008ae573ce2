/** `derp config example` and the README's field table, both generated from the field table. */
import { stringify } from 'yaml';
import { defaultPhrase, FIELD_PATHS, fieldSpec, type FieldSpec } from './fields.js';
import { FIELD_TREE } from './schema.js';

type Node = typeof FIELD_TREE;

/** One YAML value, indented to sit after `key:` at `indent`. */
function yamlValue(v: unknown, indent: string): string {
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x !== 'object')) return ` [${v.map((x) => JSON.stringify(x)).join(', ')}]`;
  if (typeof v !== 'object' || v === null) return ` ${stringify(v).trimEnd()}`;
  const body = stringify(v).trimEnd().split('\n').map((l) => `${indent}  ${l}`);
  return `\n${body.join('\n')}`;
}

function emit(g: Node, indent: string, out: string[]): void {
  for (const [name, child] of g.children) {
    if (child.kind === 'group') {
      out.push(`${indent}${name}:`);
      emit(child, `${indent}  `, out);
      continue;
    }
    const spec: FieldSpec = fieldSpec(child.path);
    const flag = spec.flag === undefined ? 'file only' : `--${spec.flag.name}`;
    out.push(`${indent}# ${spec.description} (${flag}; ${defaultPhrase(spec) || 'no default'})`);
    const line = `${name}:${yamlValue(spec.example, indent)}`;
    const prefix = spec.exampleCommented ? '# ' : '';
    out.push(...line.split('\n').map((l, i) => (i === 0 ? `${indent}${prefix}${l}` : prefix ? l.replace(indent, `${indent}${prefix}`) : l)));
  }
}

/** A complete, commented example (every field; alternatives to the chosen cert mode commented out). */
export function exampleConfig(): string {
  const out = [
    '# derp serve configuration (YAML; JSON works too). Flags given on the command line win over this file.',
    '# Check it with: derp config check derp.yaml',
    '# A production relay with a Let\'s Encrypt certificate; for a manual certificate or a self-signed one,',
    '# set tls.certMode and uncomment tls.certFile/tls.keyFile or tls.selfSigned instead of the acme fields.',
  ];
  emit(FIELD_TREE, '', out);
  return `${out.join('\n')}\n`;
}

/** The README's `| flag | field | default | meaning |` table. */
export function fieldTableMarkdown(): string {
  const rows = ['| flag | field | default | meaning |', '|---|---|---|---|'];
  for (const path of FIELD_PATHS) {
    const s = fieldSpec(path);
    const flag = s.flag === undefined ? '(file only)' : `\`--${s.flag.name}\`${s.flag.allowNo ? ` / \`--no-${s.flag.name}\`` : ''}`;
    rows.push(`| ${flag} | \`${path}\` | ${s.defaultText} | ${s.description} |`);
  }
  return `${rows.join('\n')}\n`;
}
