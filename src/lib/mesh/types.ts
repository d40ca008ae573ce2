/**
 * The shapes shared by the mesh's parts: what `--mesh-with` names (targets), what discovery turns them
 * into (endpoints: one per node to dial), and the lookup function tests inject.
 */
import type { LookupAddress } from 'node:dns';

/** One `--mesh-with` entry: `host[:port][/dialhost]` (derper's syntax), or a DNS name of the whole region. */
export interface MeshTarget {
  /** The entry as written (for messages). */
  spec: string;
  /** TLS server name and Host header; also the DNS name resolved when there is no dial host. */
  host: string;
  /** Absent = the node's own DERP port. */
  port?: number;
  /** derper's `/dialhost`: the address (or name) to dial instead of `host`. */
  dialHost?: string;
}

/** One node to keep a mesh link to. */
export interface MeshEndpoint {
  /** Stable identity across re-resolutions: `<dial address>:<port>` (the same node keeps its link). */
  id: string;
  /** TLS server name and Host header. */
  host: string;
  /** The address to dial: an IP literal after discovery, or a name (a dial host that is not resolved). */
  address: string;
  port: number;
  /** The `--mesh-with` entry it came from. */
  target: MeshTarget;
}

/** dns.promises.lookup with `{ all: true }`; tests pass their own resolver. */
export type MeshLookup = (hostname: string) => Promise<LookupAddress[]>;
