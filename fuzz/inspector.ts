/**
 * A full garbage collection in the relay, asked for over its inspector (the relay was started with
 * --inspect on loopback by the fuzzer): so "RSS after" measures what the relay still holds, not
 * garbage V8 leaves until allocation resumes.
 */
import WebSocket from 'ws';
import { ConnectError } from '../src/lib/errors.js';

const CALL_TIMEOUT_MS = 30_000;

/** `ws://127.0.0.1:PORT/UUID` from the inspector's "Debugger listening on …" stderr line. */
export function inspectorUrlOf(line: string): string | null {
  return /^Debugger listening on (ws:\/\/\S+)/.exec(line)?.[1] ?? null;
}

/** Runs HeapProfiler.collectGarbage twice (the second frees what the first's finalizers released). */
export async function collectGarbage(inspectorUrl: string): Promise<void> {
  const ws = new WebSocket(inspectorUrl);
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', (err) => reject(new ConnectError(`inspector ${inspectorUrl}: ${err.message}`, { cause: err })));
    });
    let id = 0;
    const call = (method: string): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        const my = ++id;
        const timer = setTimeout(() => reject(new ConnectError(`inspector ${method}: no answer in ${CALL_TIMEOUT_MS} ms`)), CALL_TIMEOUT_MS);
        const onMessage = (data: WebSocket.RawData): void => {
          if ((JSON.parse(data.toString()) as { id?: number }).id !== my) return;
          clearTimeout(timer);
          ws.off('message', onMessage);
          resolve();
        };
        ws.on('message', onMessage);
        ws.send(JSON.stringify({ id: my, method }));
      });
    await call('HeapProfiler.enable');
    await call('HeapProfiler.collectGarbage');
    await call('HeapProfiler.collectGarbage');
  } finally {
    ws.close();
  }
}
