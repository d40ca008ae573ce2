/** Address helpers shared by the relay's loopback-only endpoints and listeners. */
import { isIP } from 'node:net';

/** 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.y.z), as a socket reports them. */
export function isLoopbackAddress(addr: string | undefined): boolean {
  if (addr === undefined) return false;
  const a = addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
  if (isIP(a) === 4) return a.startsWith('127.');
  return a === '::1';
}
