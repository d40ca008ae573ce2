/** Disco magic "TS💬" (disco/disco.go): the server queues such packets separately and answers them with NotHere. */
const DISCO_MAGIC = Buffer.from([0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac]);
/** magic(6) + sender disco key(32) + nonce(24) (disco.go: LooksLikeDiscoWrapper). */
const DISCO_MIN_LEN = DISCO_MAGIC.length + 32 + 24;

export function looksLikeDisco(data: Uint8Array): boolean {
  if (data.length < DISCO_MIN_LEN) return false;
  for (let i = 0; i < DISCO_MAGIC.length; i++) if (data[i] !== DISCO_MAGIC[i]) return false;
  return true;
}
