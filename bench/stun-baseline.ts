/**
 * The STUN baseline: the least a Node process must do to answer Binding requests. Each datagram of at
 * least a STUN header gets a hand-built 32-byte success response (header + XOR-MAPPED-ADDRESS, IPv4);
 * no parsing, FINGERPRINT, validation, rate limit or cache.
 *
 * Run: node --import tsx bench/stun-baseline.ts [--port 0]
 * Prints one JSON line {"msg":"listening","url":"stun:…","stunPort":…} like bench/stun-server.ts.
 */
import * as dgram from 'node:dgram';

const HEADER = 20;
const RESPONSE_LEN = 32;
const BINDING_SUCCESS = 0x0101;
const XOR_MAPPED_ADDRESS = 0x0020;
const MAGIC_COOKIE = 0x2112a442;

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
const socket = dgram.createSocket('udp4');
socket.on('message', (msg, rinfo) => {
  if (msg.length < HEADER) return;
  const res = Buffer.allocUnsafe(RESPONSE_LEN);
  res.writeUInt16BE(BINDING_SUCCESS, 0);
  res.writeUInt16BE(RESPONSE_LEN - HEADER, 2);
  msg.copy(res, 4, 4, HEADER); // magic cookie + transaction ID, as sent
  res.writeUInt16BE(XOR_MAPPED_ADDRESS, 20);
  res.writeUInt16BE(8, 22);
  res.writeUInt16BE(1, 24); // reserved 0, family IPv4
  res.writeUInt16BE(rinfo.port ^ (MAGIC_COOKIE >>> 16), 26);
  const [a, b, c, d] = rinfo.address.split('.').map(Number) as [number, number, number, number];
  res.writeUInt32BE((((a << 24) | (b << 16) | (c << 8) | d) ^ MAGIC_COOKIE) >>> 0, 28);
  socket.send(res, rinfo.port, rinfo.address);
});
socket.bind(port, '127.0.0.1', () => {
  const p = socket.address().port;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', url: `stun:127.0.0.1:${p}`, stunPort: p })}\n`);
});
const stop = (): void => {
  socket.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
