/**
 * `tls`: handshake, chain (system roots plus --ca-file), name (CertName, else the host name) or a
 * `sha256-raw:` pin of the leaf, and days until the certificate expires.
 */
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls';
import { checkPinnedCert, dialSocket } from '../../client/dial.js';
import { SHA256_RAW_PREFIX, resolveTarget } from '../../client/target.js';
import { describeError } from '../../errors.js';
import { bad, relaySkip, round, skipped, type Check } from '../context.js';

const DAY_MS = 24 * 60 * 60 * 1000;

function dn(x: PeerCertificate['subject'] | undefined): string {
  if (!x) return '';
  return Object.entries(x)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : String(v)}`)
    .join(', ');
}

export const tls: Check = async (ctx) => {
  const node = ctx.target.node;
  const skip = relaySkip(node);
  if (skip) return skip;
  if (node.plainHttp) return skipped('plain HTTP node');
  const { ca, caFile, insecure } = ctx.opts.tls;
  // Verification is done here, on the presented certificate, so a failure can say what was presented.
  const target = resolveTarget(node, { ...(ca !== undefined ? { ca } : {}), ...(caFile !== undefined ? { caFile } : {}), insecure: true });
  let sock: TLSSocket;
  try {
    sock = (await dialSocket(target, ctx.signal)) as TLSSocket;
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    return bad(`TLS handshake with ${node.hostname}:${node.derpPort} failed: ${describeError(err)}`);
  }
  ctx.defer(() => void sock.destroy());
  const cert = sock.getPeerCertificate();
  if (!cert?.raw) return bad(`${node.hostname}:${node.derpPort} presented no certificate`);
  const notAfter = new Date(cert.valid_to);
  const days = (notAfter.getTime() - ctx.opts.now()) / DAY_MS;
  const details = {
    notAfter: notAfter.toISOString(),
    notBefore: new Date(cert.valid_from).toISOString(),
    subject: dn(cert.subject),
    issuer: dn(cert.issuer),
    ...(cert.subjectaltname ? { altNames: cert.subjectaltname } : {}),
    ...(sock.getProtocol() ? { protocol: sock.getProtocol()! } : {}),
  };
  const certName = node.certName;
  const skipVerify = insecure || node.insecureForTests === true;
  let verified: string;
  if (skipVerify) {
    verified = 'not verified (--insecure / InsecureForTests)';
  } else if (certName?.startsWith(SHA256_RAW_PREFIX)) {
    const e = checkPinnedCert(sock, target.serverName, certName.slice(SHA256_RAW_PREFIX.length), new Date(ctx.opts.now()));
    if (e) return bad(`${node.hostname}:${node.derpPort}: ${e.message}`, details);
    verified = 'pinned leaf matches';
  } else {
    const name = certName ?? target.serverName;
    // Expiry is reported below with its date, and the name is checked next against the right name
    // (Node's own identity check ran against the dialled socket, not CertName).
    const chainErr = sock.authorized ? undefined : String(sock.authorizationError);
    if (chainErr !== undefined && chainErr !== 'CERT_HAS_EXPIRED' && chainErr !== 'ERR_TLS_CERT_ALTNAME_INVALID') {
      return bad(`${node.hostname}:${node.derpPort}: certificate chain is not trusted (${String(sock.authorizationError)}; issuer ${details.issuer}); give its CA with --ca-file`, details);
    }
    const idErr = checkServerIdentity(name, cert);
    if (idErr) {
      return bad(`${node.hostname}:${node.derpPort}: certificate is not valid for the expected name ${name} (it is for ${cert.subjectaltname ?? details.subject})`, details);
    }
    verified = `chain and name ${name} ok`;
  }
  const value = round(days, 1);
  const left = `expires ${details.notAfter} (${value} days)`;
  if (days <= 0) return { status: 'bad', value, unit: 'days', message: `certificate expired ${details.notAfter}`, details };
  if (days <= ctx.opts.failDays) return { status: 'bad', value, unit: 'days', message: `certificate ${left}: within --fail-days ${ctx.opts.failDays}`, details };
  if (days <= ctx.opts.warnDays) return { status: 'warn', value, unit: 'days', message: `certificate ${left}: within --warn-days ${ctx.opts.warnDays}`, details };
  return { status: 'good', value, unit: 'days', message: `${verified}; ${left}`, details };
};
