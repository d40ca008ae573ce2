/**
 * What the relay consumes: one owner of the serving certificate (after certmagic's "managed cache"),
 * whatever the mode. The relay reads `current()` at start and swaps its TLS context on 'change'.
 */
import { EventEmitter } from 'node:events';
import { DerpError } from '../errors.js';
import type { CertInfo } from './validate.js';

export type CertMode = 'manual' | 'self-signed' | 'acme';

/** A certificate/key pair ready to serve, with what was learnt when it was validated. */
export interface CertMaterial extends CertInfo {
  cert: string;
  key: string;
  /** Where it came from: file paths, "self-signed", "acme:<host>", "placeholder". */
  origin: string;
}

/** Things the lead can log and count. `reason` is never a secret. */
export type CertEvent =
  | { type: 'loaded'; origin: string; notAfter: Date; sha256: string }
  | { type: 'issued'; origin: string; notAfter: Date; sha256: string }
  | { type: 'renewed'; origin: string; notAfter: Date; sha256: string }
  | { type: 'refused'; origin: string; reason: string }
  | { type: 'failed'; origin: string; reason: string; attempt: number; nextAttempt: Date }
  | { type: 'scheduled'; origin: string; nextAttempt: Date };

export interface ReloadResult {
  changed: boolean;
  /** Set when the new pair was refused (the old one keeps serving). */
  error?: Error;
}

/** Answers ACME challenges on behalf of a source (HTTP-01 on port 80, TLS-ALPN-01 on the DERP port). */
export interface ChallengeResponder {
  /** Key authorization for an HTTP-01 token, or undefined. */
  http01(token: string): string | undefined;
  /** True while a TLS-ALPN-01 challenge is pending (the relay only sniffs ClientHellos then). */
  tlsAlpnPending(): boolean;
  /** The acme-tls/1 certificate for this SNI name, if a challenge for it is pending. */
  tlsAlpn01(servername: string): { cert: string; key: string } | undefined;
}

export interface CertSourceEvents {
  change: [CertMaterial];
  event: [CertEvent];
  closed: [];
}

export interface CertSource {
  readonly mode: CertMode;
  /** Loads (or creates) the first pair; rejects with a CertificateError when there is none to serve. */
  start(): Promise<void>;
  /** The pair to serve now (after start()). */
  current(): CertMaterial;
  /** Re-reads / re-checks now (SIGHUP). A bad new pair is refused and the old one kept. */
  reload(): Promise<ReloadResult>;
  close(): Promise<void>;
  readonly challenges?: ChallengeResponder;
  on<K extends keyof CertSourceEvents>(event: K, listener: (...args: CertSourceEvents[K]) => void): this;
  off<K extends keyof CertSourceEvents>(event: K, listener: (...args: CertSourceEvents[K]) => void): this;
}

/** Shared plumbing: typed events and the current pair. */
export abstract class BaseCertSource extends EventEmitter<CertSourceEvents> {
  protected material: CertMaterial | null = null;

  current(): CertMaterial {
    if (this.material === null) throw new DerpError('DERP_ERR_CERT', 'certificate source not started: call start() first');
    return this.material;
  }

  protected setMaterial(m: CertMaterial): void {
    const changed = this.material !== null && this.material.sha256 !== m.sha256;
    this.material = m;
    if (changed) this.emit('change', m);
  }

  protected note(e: CertEvent): void {
    this.emit('event', e);
  }
}
