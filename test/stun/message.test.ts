import stunLib from '@msimerson/stun';
import { describe, expect, it } from 'vitest';
import {
  AttrType,
  MessageType,
  StunClass,
  bindingSuccessLength,
  buildBindingRequest,
  bytesToIp,
  classOf,
  decodeAddressValue,
  decodeMessage,
  encodeAddressValue,
  encodeErrorCodeValue,
  encodeMessage,
  encodeXorAddressValue,
  decodeErrorCodeValue,
  decodeUnknownAttributesValue,
  encodeUnknownAttributesValue,
  getAttribute,
  ipToBytes,
  longTermKey,
  messageType,
  methodOf,
  parseBindingResponse,
  parseMessage,
  saslPrep,
  shortTermKey,
  verifyFingerprint,
  verifyMessageIntegrity,
  writeBindingSuccess,
  type StunMessage,
} from '../../src/lib/stun/message.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const RFC5769_TXID = hex('b7e7a701 bc34d686 fa87dfae');
const RFC5769_PASSWORD = 'VOkJxbRl1RmTxUk/WvJxBt';

function ok(m: StunMessage | string): StunMessage {
  if (typeof m === 'string') throw new Error(`parse failed: ${m}`);
  return m;
}

describe('RFC 5769 test vectors', () => {
  const req21 = hex(`0001 0058 2112a442 b7e7a701 bc34d686 fa87dfae
    8022 0010 5354554e 20746573 7420636c 69656e74
    0024 0004 6e0001ff
    8029 0008 932ff9b1 51263b36
    0006 0009 6576746a 3a683676 59202020
    0008 0014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
    8028 0004 e57a3bcf`);

  it('2.1 request: decodes, FINGERPRINT and MESSAGE-INTEGRITY verify', () => {
    const m = decodeMessage(req21);
    expect(m.type).toBe(MessageType.BindingRequest);
    expect(m.transactionId).toEqual(RFC5769_TXID);
    expect(m.attributes.map((a) => a.type)).toEqual([0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]);
    expect(getAttribute(m, AttrType.Software)!.value.toString()).toBe('STUN test client');
    expect(getAttribute(m, AttrType.Username)!.value.toString()).toBe('evtj:h6vY');
    expect(verifyFingerprint(m)).toBe(true);
    expect(verifyMessageIntegrity(m, shortTermKey(RFC5769_PASSWORD))).toBe(true);
    expect(verifyMessageIntegrity(m, shortTermKey('wrong'))).toBe(false);
  });

  it('2.1 request: encoding the same attributes with 0x20 padding reproduces the exact bytes', () => {
    const m = decodeMessage(req21);
    const attributes = m.attributes.filter((a) => a.type !== AttrType.MessageIntegrity && a.type !== AttrType.Fingerprint);
    const out = encodeMessage({ type: m.type, transactionId: m.transactionId, attributes, integrityKey: shortTermKey(RFC5769_PASSWORD), fingerprint: true, padByte: 0x20 });
    expect(out.toString('hex')).toBe(req21.toString('hex'));
  });

  it('2.1 request: a flipped byte breaks FINGERPRINT and MESSAGE-INTEGRITY', () => {
    const bad = Buffer.from(req21);
    bad[30] = bad[30]! ^ 1;
    const m = decodeMessage(bad);
    expect(verifyFingerprint(m)).toBe(false);
    expect(verifyMessageIntegrity(m, shortTermKey(RFC5769_PASSWORD))).toBe(false);
  });

  for (const v of [
    { sec: '2.2', ip: '192.0.2.1', xor: '0001 a147 e112a643', len: 80, mi: '2b91f599fd9e90c38c7489f92af9ba53f06be7d7', fp: 'c07d4c96' },
    {
      sec: '2.3',
      ip: '2001:db8:1234:5678:11:2233:4455:6677',
      xor: '0002 a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9',
      len: 92,
      mi: 'a382954e4be67bf11784c97c8292c275bfe3ed41',
      fp: 'c8fb0b4c',
    },
  ]) {
    it(`${v.sec} response: encodes to the RFC's MESSAGE-INTEGRITY and FINGERPRINT, decodes back`, () => {
      const xorValue = encodeXorAddressValue(v.ip, 32853, RFC5769_TXID);
      expect(xorValue.toString('hex')).toBe(v.xor.replace(/\s/g, ''));
      const buf = encodeMessage({
        type: MessageType.BindingSuccess,
        transactionId: RFC5769_TXID,
        attributes: [
          { type: AttrType.Software, value: Buffer.from('test vector') },
          { type: AttrType.XorMappedAddress, value: xorValue },
        ],
        integrityKey: shortTermKey(RFC5769_PASSWORD),
        fingerprint: true,
        padByte: 0x20,
      });
      expect(buf.length).toBe(v.len);
      const m = decodeMessage(buf);
      expect(getAttribute(m, AttrType.MessageIntegrity)!.value.toString('hex')).toBe(v.mi);
      expect(getAttribute(m, AttrType.Fingerprint)!.value.toString('hex')).toBe(v.fp);
      expect(verifyFingerprint(m)).toBe(true);
      expect(verifyMessageIntegrity(m, shortTermKey(RFC5769_PASSWORD))).toBe(true);
      const r = parseBindingResponse(buf);
      expect(r).toMatchObject({ address: v.ip, port: 32853, family: v.ip.includes(':') ? 6 : 4, source: 'xor-mapped' });
    });
  }

  it('2.4 long-term credentials: SASLprep, MD5 key, MESSAGE-INTEGRITY without FINGERPRINT', () => {
    const username = '\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9';
    expect(Buffer.byteLength(username)).toBe(18);
    expect(saslPrep('The\u00ADM\u00AAtr\u2168')).toBe('TheMatrIX');
    const key = longTermKey(username, 'example.org', 'The\u00ADM\u00AAtr\u2168');
    const buf = encodeMessage({
      type: MessageType.BindingRequest,
      transactionId: hex('78ad3433c6ad72c029da412e'),
      attributes: [
        { type: AttrType.Username, value: Buffer.from(username) },
        { type: AttrType.Nonce, value: Buffer.from('f//499k954d6OL34oL9FSTvy64sA') },
        { type: AttrType.Realm, value: Buffer.from('example.org') },
      ],
      integrityKey: key,
    });
    expect(buf.length).toBe(116);
    expect(buf.readUInt16BE(2)).toBe(0x60);
    const m = decodeMessage(buf);
    expect(getAttribute(m, AttrType.MessageIntegrity)!.value.toString('hex')).toBe('f67024656dd64a3e02b8e0712e85c9a28ca89666');
    expect(m.fingerprintOffset).toBe(-1);
    expect(verifyFingerprint(m)).toBe(false);
    expect(verifyMessageIntegrity(m, key)).toBe(true);
  });
});

describe('Tailscale wire formats (spec §2, §3)', () => {
  const txid = hex('0102030405060708090a0b0c');

  it('builds the exact 40-byte Tailscale request', () => {
    expect(buildBindingRequest(txid).toString('hex')).toBe(
      '000100142112a442' + '0102030405060708090a0b0c' + '8022000874616' + '96c6e6f6465' + '80280004b32c370f',
    );
  });

  it('XOR-MAPPED-ADDRESS worked example 203.0.113.7:41641', () => {
    expect(encodeXorAddressValue('203.0.113.7', 41641, txid).toString('hex')).toBe('000183bbea12d545');
  });

  it("parses derper's single-attribute responses (IPv4, IPv4-mapped, IPv6)", () => {
    const v4 = hex('0101000c2112a4420102030405060708090a0b0c 00200008 0001 83bb ea12d545');
    expect(parseBindingResponse(v4)).toMatchObject({ address: '203.0.113.7', port: 41641, family: 4 });
    const mapped = hex('010100182112a4420102030405060708090a0b0c 00200014 0002 83bb 2112a442 01020304 0506f8f7 c20a7a0b');
    expect(parseBindingResponse(mapped)).toMatchObject({ address: '203.0.113.7', port: 41641, family: 4 });
    const v6 = hex('010100182112a4420102030405060708090a0b0c 00200014 0002 83bb 0113a9fa 01020304 05060708 090a0b0d');
    expect(parseBindingResponse(v6)).toMatchObject({ address: '2001:db8::1', port: 41641, family: 6 });
  });

  it('hand-built success response: XOR-MAPPED first, MAPPED, FINGERPRINT; sizes', () => {
    const res = writeBindingSuccess(txid, ipToBytes('203.0.113.7'), 41641, true, true);
    expect(res.length).toBe(bindingSuccessLength(false, true, true));
    expect(res.length).toBe(52);
    const m = decodeMessage(res);
    expect(m.attributes.map((a) => a.type)).toEqual([AttrType.XorMappedAddress, AttrType.MappedAddress, AttrType.Fingerprint]);
    expect(verifyFingerprint(m)).toBe(true);
    expect(decodeAddressValue(getAttribute(m, AttrType.MappedAddress)!.value)).toEqual({ address: '203.0.113.7', port: 41641, family: 4 });
    // Equal to the general encoder's output.
    const general = encodeMessage({
      type: MessageType.BindingSuccess,
      transactionId: txid,
      attributes: [
        { type: AttrType.XorMappedAddress, value: encodeXorAddressValue('203.0.113.7', 41641, txid) },
        { type: AttrType.MappedAddress, value: encodeAddressValue('203.0.113.7', 41641) },
      ],
      fingerprint: true,
    });
    expect(res.equals(general)).toBe(true);
    const v6 = writeBindingSuccess(txid, ipToBytes('2001:db8::1'), 41641, false, false);
    expect(v6.toString('hex')).toBe('010100182112a4420102030405060708090a0b0c' + '002000140002' + '83bb0113a9fa0102030405060708090a0b0d');
  });

  it('an independent implementation (@msimerson/stun) reads our response', () => {
    const res = writeBindingSuccess(txid, ipToBytes('203.0.113.7'), 41641, true, true);
    const lib = stunLib.decode(res);
    expect(lib.getXorAddress()).toMatchObject({ address: '203.0.113.7', port: 41641 });
    expect(lib.getAddress()).toMatchObject({ address: '203.0.113.7', port: 41641 });
    expect(stunLib.validateFingerprint(lib)).toBe(true);
    // Byte-identical to what the library builds for the same response.
    const built = stunLib.createMessage(MessageType.BindingSuccess, txid);
    built.addXorAddress('203.0.113.7', 41641);
    built.addAddress('203.0.113.7', 41641);
    built.addFingerprint();
    expect(res.equals(built.toBuffer())).toBe(true);
    // IPv6: the library un-XORs with an all-zero transaction ID (it parses attributes before it sets the
    // ID), so only its MAPPED-ADDRESS reading is comparable; our XOR value is pinned by RFC 5769 2.3.
    const lib6 = stunLib.decode(writeBindingSuccess(txid, ipToBytes('2001:db8::1'), 41641, true, true));
    expect(lib6.getAddress()).toMatchObject({ address: '2001:db8::1', port: 41641 });
  });
});

// net/stun/stun_test.go responseTests (captured from real servers).
describe('real-world responses (Tailscale responseTests)', () => {
  const cases: { name: string; data: string; tid: string; addr: string; port: number }[] = [
    { name: 'google-1', data: '0101000c2112a4422360b11e3ec68ffa93e08007002000080001c7866957856f', tid: '2360b11e3ec68ffa93e08007', addr: '72.69.33.45', port: 59028 },
    { name: 'google-2', data: '0101000c2112a442f9f121cbde7d7c75923ce271002000080001c7876957856f', tid: 'f9f121cbde7d7c75923ce271', addr: '72.69.33.45', port: 59029 },
    {
      name: 'stun.sipgate.net (MAPPED + 0x8020 + SOFTWARE)',
      data: '010100442112a442482eb64715e8b28eaead6444000100080001e4ab4845212d0004000800012710d90a449800050008' + '00012711d9747a8a802000080001c5b96957856f80220010566f766964612e6f726720302e393600',
      tid: '482eb64715e8b28eaead6444',
      addr: '72.69.33.45',
      port: 58539,
    },
    {
      name: 'stun.powervoip.com (MAPPED only)',
      data: '010100242112a4427e57966829f444609d1deaa6000100080001e9d34845212d0004000800010d964d48a9d4000500080001' + '0d974d48a9d5',
      tid: '7e57966829f444609d1deaa6',
      addr: '72.69.33.45',
      port: 59859,
    },
    {
      name: 'in-process pion server (SOFTWARE + FINGERPRINT, trailing bytes)',
      data: '010100242112a442ebc2d36ef471217c4f3e308e8022000a656e64706f696e74657200000020000800' + '01ce665e12a443' + '80280004b699bb02' + '010100242112a442',
      tid: 'ebc2d36ef471217c4f3e308e',
      addr: '127.0.0.1',
      port: 61300,
    },
    {
      name: 'stuntman-server ipv6',
      data:
        '010100482112a44206f56685d28af3e69ce341e200010014000290ce260200d1b4cfc10038b231fffeef96f6802b00140002' +
        '0d962604a880000200d10000000000c57001002000140002b1dc0710a493b23aa785ea38c219620cd714',
      tid: '06f56685d28af3e69ce341e2',
      addr: '2602:d1:b4cf:c100:38b2:31ff:feef:96f6',
      port: 37070,
    },
    { name: 'software-a (padding 1)', data: '010100142112a442ebc2d36ef471217c4f3e308e80220001610000000020000800' + '01ce665e12a443', tid: 'ebc2d36ef471217c4f3e308e', addr: '127.0.0.1', port: 61300 },
    // Upstream's vector has type 0x0001 here (its parser did not check the type then); 0x0101 is the response.
    { name: 'software-abc (padding 3)', data: '010100142112a442ebc2d36ef471217c4f3e308e80220003616263000020000800' + '01ce665e12a443', tid: 'ebc2d36ef471217c4f3e308e', addr: '127.0.0.1', port: 61300 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = parseBindingResponse(hex(c.data));
      if (typeof r === 'string') throw new Error(r);
      expect(r.transactionId.toString('hex')).toBe(c.tid);
      expect(r.address).toBe(c.addr);
      expect(r.port).toBe(c.port);
    });
  }

  it('no-4in6: family 2 carrying ::ffff:209.180.207.193 parses as IPv4', () => {
    const txid = hex('0102030405060708090a0b0c');
    const mapped = Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff, 209, 180, 207, 193])]);
    const value = Buffer.alloc(20);
    value[1] = 2;
    value.writeUInt16BE(60463 ^ 0x2112, 2);
    const pad = Buffer.concat([hex('2112a442'), txid]);
    for (let i = 0; i < 16; i++) value[4 + i] = mapped[i]! ^ pad[i]!;
    const buf = encodeMessage({ type: MessageType.BindingSuccess, transactionId: txid, attributes: [{ type: AttrType.XorMappedAddress, value }] });
    expect(parseBindingResponse(buf)).toMatchObject({ address: '209.180.207.193', port: 60463, family: 4 });
  });

  it('rejects a request type, an error response, a bad FINGERPRINT, and a response without address', () => {
    const txid = hex('0102030405060708090a0b0c');
    expect(parseBindingResponse(buildBindingRequest(txid))).toBe('not_binding_success');
    expect(parseBindingResponse(encodeMessage({ type: MessageType.BindingError, transactionId: txid }))).toBe('not_binding_success');
    const res = writeBindingSuccess(txid, ipToBytes('1.2.3.4'), 1, false, true);
    res[res.length - 1]! ^= 1;
    expect(parseBindingResponse(res)).toBe('bad_fingerprint');
    expect(parseBindingResponse(encodeMessage({ type: MessageType.BindingSuccess, transactionId: txid }))).toBe('no_address');
  });
});

describe('parseMessage rules', () => {
  const txid = hex('0102030405060708090a0b0c');
  const req = buildBindingRequest(txid);

  it('accepts the Tailscale request', () => {
    expect(verifyFingerprint(ok(parseMessage(req)))).toBe(true);
  });
  it('too short / high bits / bad cookie', () => {
    expect(parseMessage(req.subarray(0, 19))).toBe('too_short');
    const hb = Buffer.from(req);
    hb[0] = 0x40;
    expect(parseMessage(hb)).toBe('high_bits');
    const bc = Buffer.from(req);
    bc[5] = 0;
    expect(parseMessage(bc)).toBe('bad_cookie');
  });
  it('length not a multiple of 4, and length ≠ datagram (strict) vs trailing bytes (lenient)', () => {
    const odd = Buffer.from(req);
    odd.writeUInt16BE(18, 2);
    expect(parseMessage(odd)).toBe('bad_length');
    const trailing = Buffer.concat([req, Buffer.alloc(4)]);
    expect(parseMessage(trailing)).toBe('length_mismatch');
    expect(typeof parseMessage(trailing, { strict: false })).toBe('object');
    expect(parseMessage(req.subarray(0, 36))).toBe('length_mismatch');
  });
  it('attribute running past the end; attribute after FINGERPRINT', () => {
    const b = encodeMessage({ type: 1, transactionId: txid, attributes: [{ type: 0x8022, value: Buffer.alloc(4) }] });
    b.writeUInt16BE(5, 22); // value length 5 → padded 8 > 4 available
    expect(parseMessage(b)).toBe('truncated_attribute');
    const after = Buffer.concat([req, hex('80220000')]);
    after.writeUInt16BE(after.length - 20, 2);
    expect(parseMessage(after)).toBe('attribute_after_fingerprint');
  });
  it('message type packing', () => {
    expect(messageType(1, StunClass.Request)).toBe(0x0001);
    expect(messageType(1, StunClass.Indication)).toBe(0x0011);
    expect(messageType(1, StunClass.SuccessResponse)).toBe(0x0101);
    expect(messageType(1, StunClass.ErrorResponse)).toBe(0x0111);
    expect(methodOf(0x0111)).toBe(1);
    expect(classOf(0x0111)).toBe(StunClass.ErrorResponse);
    expect(methodOf(messageType(0xabc, StunClass.Indication))).toBe(0xabc);
  });
  it('ERROR-CODE and UNKNOWN-ATTRIBUTES values', () => {
    expect(decodeErrorCodeValue(encodeErrorCodeValue(420, 'Unknown Attribute'))).toEqual({ code: 420, reason: 'Unknown Attribute' });
    expect(encodeErrorCodeValue(420, '').toString('hex')).toBe('00000414');
    expect(decodeUnknownAttributesValue(encodeUnknownAttributesValue([0x24, 0x6, 0x8]))).toEqual([0x24, 0x6, 0x8]);
  });
  it('IPv6 text is RFC 5952 (longest zero run compressed)', () => {
    expect(bytesToIp(ipToBytes('2001:db8:0:0:1:0:0:1'))).toBe('2001:db8::1:0:0:1');
    expect(bytesToIp(ipToBytes('2001:0:0:1:0:0:0:1'))).toBe('2001:0:0:1::1');
    expect(bytesToIp(ipToBytes('::1'))).toBe('::1');
    expect(bytesToIp(ipToBytes('::'))).toBe('::');
    expect(bytesToIp(ipToBytes('1::'))).toBe('1::');
  });
});
