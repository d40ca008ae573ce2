/** The bench's relay command line: --dev, with the production warm-up unless the arguments give one. */
import { describe, expect, it } from 'vitest';
import { relayArgs } from '../../bench/procs.js';
import { DEFAULT_WARM_UP_HANDSHAKES } from '../../src/lib/config/constants.js';

describe('relayArgs', () => {
  it('adds the production warm-up to --dev', () => {
    const args = relayArgs(['--workers', '1']);
    expect(args.slice(args.indexOf('serve'))).toEqual(['serve', '--dev', '--addr', '127.0.0.1:0', '--json', '--warm-up-handshakes', String(DEFAULT_WARM_UP_HANDSHAKES), '--workers', '1']);
  });

  it('leaves a warm-up given in either flag form alone (oclif refuses a flag given twice)', () => {
    for (const extra of [['--warm-up-handshakes', '0'], ['--warm-up-handshakes=0']]) {
      const args = relayArgs(extra);
      expect(args.filter((a) => a.startsWith('--warm-up-handshakes'))).toEqual([extra[0]]);
    }
  });
});
