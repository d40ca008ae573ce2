/** Shared setup for the relay tests: a server on an ephemeral loopback port with a MemoryLogger. */
import { NodePrivateKey } from '../../src/lib/protocol/index.js';
import { RelayServer, generateSelfSigned, type RelayServerInit } from '../../src/lib/server/index.js';
import { MemoryLogger } from '../../src/lib/util/logger.js';
import { RawClient, type RawClientOptions } from '../helpers/rawclient.js';

export interface Fixture {
  server: RelayServer;
  logger: MemoryLogger;
  /** PEM to trust when TLS is on. */
  ca: string | undefined;
  connect(o?: Partial<RawClientOptions>): Promise<RawClient>;
  open(o?: Partial<RawClientOptions>): Promise<RawClient>;
  clients: RawClient[];
  close(): Promise<void>;
}

let cachedCert: Promise<{ certPem: string; keyPem: string; certName: string }> | null = null;
/** One self-signed cert per test file is enough. */
export function testCert(): Promise<{ certPem: string; keyPem: string; certName: string }> {
  cachedCert ??= generateSelfSigned('127.0.0.1');
  return cachedCert;
}

export async function startRelay(init: Partial<RelayServerInit> & { withTls?: boolean } = {}): Promise<Fixture> {
  const logger = new MemoryLogger();
  const { withTls, ...rest } = init;
  let ca: string | undefined;
  if (withTls) {
    const c = await testCert();
    ca = c.certPem;
    rest.tls = { cert: c.certPem, key: c.keyPem };
  }
  const server = new RelayServer({ privateKey: NodePrivateKey.generate(), addr: '127.0.0.1:0', logger, ...rest });
  await server.start();
  const clients: RawClient[] = [];
  const base = (o: Partial<RawClientOptions>): RawClientOptions => ({ port: server.port, ca, ...o });
  return {
    server,
    logger,
    ca,
    clients,
    async connect(o = {}) {
      const c = await RawClient.connect(base(o));
      clients.push(c);
      return c;
    },
    async open(o = {}) {
      const c = await RawClient.open(base(o));
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.destroy();
      await server.stop({ restarting: false });
    },
  };
}
