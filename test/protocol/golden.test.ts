// Reproduces the worked example of shared/spec/derp-protocol.md §15 byte for byte.
import { describe, expect, it } from 'vitest';
import {
  NodePrivateKey,
  buildClientInfoFrame,
  buildServerInfoFrame,
  buildUpgradeResponse,
  encode,
  ipTo16,
  open,
  openClientInfo,
  openServerInfo,
  shortKey,
  formatNodePublic,
  PROTOCOL_VERSION,
} from '../../src/lib/protocol/index.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const seq = (from: number, n: number) => Buffer.from(Array.from({ length: n }, (_, i) => from + i));

const server = NodePrivateKey.fromRaw(hex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e5f'));
const a = NodePrivateKey.fromRaw(hex('202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e7f'));
const b = NodePrivateKey.fromRaw(hex('404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f'));
const A = a.publicKey;
const B = b.publicKey;

describe('spec §15 worked example', () => {
  it('derives the public keys', () => {
    expect(server.publicKey.toString('hex')).toBe('8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f');
    expect(A.toString('hex')).toBe('358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254');
    expect(B.toString('hex')).toBe('79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a');
    expect(shortKey(A)).toBe('[NYBy1]');
    expect(formatNodePublic(A)).toBe('nodekey:358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254');
  });

  it('writes the 101 response', () => {
    expect(buildUpgradeResponse(server.publicKey)).toBe(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n' +
        'Derp-Public-Key: 8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f\r\n\r\n',
    );
  });

  it('encodes ServerKey', () => {
    expect(encode.serverKey(server.publicKey)).toEqual(
      hex('01 00000028 44455250f09f9491' + '8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f'),
    );
  });

  it('seals ClientInfo exactly and the server opens it', () => {
    const frame = buildClientInfoFrame(a.keyObject, A, server.publicKey, { version: 2, canAckPings: true }, seq(0xa0, 24));
    expect(frame).toEqual(
      hex(
        '02 00000068 358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254' +
          'a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7 17de701d87b44c624c5baf9ced5eb763' +
          '7290998345c4f87919ad718cb15f3acbc7681a0deb13a91b1cc6e58f566b0057',
      ),
    );
    const opened = openClientInfo(server.keyObject, frame.subarray(5));
    expect(opened.clientKey).toEqual(A);
    expect(opened.info).toEqual({ version: 2, canAckPings: true });
    expect(open(server.keyObject, A, frame.subarray(5 + 32)).toString()).toBe('{"version":2,"CanAckPings":true}');
  });

  it('seals ServerInfo exactly and the client opens it', () => {
    const frame = buildServerInfoFrame(server.keyObject, A, { version: PROTOCOL_VERSION }, seq(0xc0, 24));
    expect(frame).toEqual(hex('03 00000035 c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7 2a89115f509c63c25c2e0364c0785f65 1383647884a485efd35195b60a'));
    expect(openServerInfo(a.keyObject, server.publicKey, frame.subarray(5))).toEqual({ version: 2 });
  });

  it('encodes the steady-state frames', () => {
    const hello = Buffer.from('hello');
    expect(encode.notePreferred(true)).toEqual(hex('07 00000001 01'));
    expect(encode.sendPacket(B, hello)).toEqual(hex('04 00000025' + B.toString('hex') + '68656c6c6f'));
    expect(encode.recvPacket(A, hello)).toEqual(hex('05 00000025' + A.toString('hex') + '68656c6c6f'));
    expect(encode.keepAlive()).toEqual(hex('06 00000000'));
    expect(encode.ping(seq(1, 8))).toEqual(hex('12 00000008 0102030405060708'));
    expect(encode.pong(seq(1, 8))).toEqual(hex('13 00000008 0102030405060708'));
    expect(encode.peerGone(A, 0)).toEqual(hex('08 00000021' + A.toString('hex') + '00'));
    expect(encode.peerPresent(A, ipTo16('203.0.113.7'), 41641, 1)).toEqual(
      hex('09 00000033' + A.toString('hex') + '00000000000000000000ffffcb007107 a2a9 01'),
    );
    expect(encode.restarting(500, 5000)).toEqual(hex('15 00000008 000001f4 00001388'));
    expect(encode.health('duplicate')).toEqual(hex('14 00000009 6475706c6963617465'));
    expect(encode.watchConns()).toEqual(hex('10 00000000'));
    expect(encode.closePeer(B)).toEqual(hex('11 00000020' + B.toString('hex')));
    expect(encode.forwardPacket(A, B, hello)).toEqual(hex('0a 00000045' + A.toString('hex') + B.toString('hex') + '68656c6c6f'));
  });
});
