// Regression tests for counterexamples the property tests (properties.test.ts) found in frames.ts.
import { describe, expect, it } from 'vitest';
import { ipTo16 } from '../../src/lib/protocol/index.js';
import { encodeAddressValue } from '../../src/lib/stun/index.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('ipTo16', () => {
  it('reads IPv6 text that ends in a dotted quad (was: 16 zero bytes)', () => {
    expect(hex(ipTo16('::0:0.0.1.0'))).toBe('00000000000000000000000000000100');
    expect(hex(ipTo16('1:2:3:4:5:6:1.2.3.4'))).toBe('00010002000300040005000601020304');
    expect(hex(ipTo16('64:ff9b::192.0.2.33'))).toBe('0064ff9b0000000000000000c0000221');
    expect(hex(ipTo16('::FFFF:10.0.0.1'))).toBe('00000000000000000000ffff0a000001');
    // So a STUN reply to such a source names it, not "::".
    expect(encodeAddressValue('1:2:3:4:5:6:1.2.3.4', 5).subarray(4).toString('hex')).toBe('00010002000300040005000601020304');
  });

  it('gives 16 zero bytes for more than seven groups around "::" (was: RangeError)', () => {
    expect(hex(ipTo16('::0:0:0:0:0:0:0:0:0'))).toBe('0'.repeat(32));
    expect(hex(ipTo16('1:2:3:4:5:6:7:8::9'))).toBe('0'.repeat(32));
    expect(hex(ipTo16('1:2:3:4:5:6:7::'))).toBe('00010002000300040005000600070000');
  });

  it('gives 16 zero bytes for a dotted quad with an octet above 255 (was: the octet taken mod 256)', () => {
    expect(hex(ipTo16('1.2.3.256'))).toBe('0'.repeat(32));
    expect(hex(ipTo16('::ffff:1.2.3.256'))).toBe('0'.repeat(32));
    expect(hex(ipTo16('::1.2.300.4'))).toBe('0'.repeat(32));
  });
});
