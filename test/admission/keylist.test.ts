/** Key list parsing: comments, blanks, duplicates, and precise errors naming file:line. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { keySetOf, loadKeyList, parseKeyList } from '../../src/lib/admission/index.js';
import { KeyListError } from '../../src/lib/errors.js';
import { newKey } from './helpers.js';

describe('parseKeyList', () => {
  it('reads keys, skips comments and blank lines, folds duplicates and case', () => {
    const a = newKey();
    const b = newKey();
    const text = `# relays allowed\n\n${a.text}\n  ${b.text.toUpperCase().replace('NODEKEY:', 'nodekey:')}  # laptop\n${a.text}\r\n`;
    expect([...parseKeyList(text, 'allow.txt')].sort()).toEqual([a.text, b.text].sort());
  });

  it('names the file and line of a bad key and says what is wrong', () => {
    const a = newKey();
    const cases: [string, RegExp][] = [
      [`${a.text}\nnodekey:abc\n`, /^allow\.txt:2: expected 64 hex digits after "nodekey:", found 3 characters: "nodekey:abc"$/],
      [`\n\n${a.text.slice(8)}`, /^allow\.txt:3: lacks the "nodekey:" prefix/],
      [`privkey:${'0'.repeat(64)}`, /^allow\.txt:1: expected "nodekey:" followed by 64 hex digits/],
      [`${a.text} ${a.text}`, /^allow\.txt:1: one key per line/],
      [`nodekey:${'z'.repeat(64)}`, /^allow\.txt:1: .*\(not all hex\)/],
    ];
    for (const [text, re] of cases) {
      const err = (() => {
        try {
          parseKeyList(text, 'allow.txt');
        } catch (e) {
          return e;
        }
        return null;
      })();
      expect(err).toBeInstanceOf(KeyListError);
      expect((err as KeyListError).message).toMatch(re);
      expect((err as KeyListError).code).toBe('DERP_ERR_KEY_LIST');
    }
  });

  it('checks inline keys by index', () => {
    expect(() => keySetOf([newKey().text, 'nope'], 'admission.allowKeys')).toThrow(/^admission\.allowKeys\[1\]: expected "nodekey:"/);
  });

  it('loads files and reports unreadable ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keylist-'));
    const k = newKey();
    writeFileSync(join(dir, 'ok'), `${k.text}\n`);
    expect([...(await loadKeyList(join(dir, 'ok')))]).toEqual([k.text]);
    await expect(loadKeyList(join(dir, 'missing'))).rejects.toThrow(/missing: cannot read the key list: .*ENOENT/);
    await expect(loadKeyList(dir)).rejects.toThrow(/not a regular file/);
  });
});
