/**
 * deploy/k8s/: every manifest parsed as kubectl parses it (YAML 1.1, several documents a file) and the
 * pieces checked against each other and against the real `derp serve`: selectors, the headless
 * Service, named ports by protocol, probes, Secrets and their keys, the config file through the real
 * loader, the flags against the oclif manifest, drain and grace, resources, scrape annotations. No
 * cluster needed. `checkBundle` returns every problem; each mutation below breaks one thing and must
 * be reported, so no check passes vacuously. Then the ConfigMap's file and the StatefulSet's args run
 * in a real `derp serve` (built: `npm run build`) on loopback, with the cert Secret laid out as the
 * kubelet writes Secret volumes: probes, scrape path, a cert-manager renewal, the drain.
 */
import { execFile } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import * as http from 'node:http';
import { basename, join, posix } from 'node:path';
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { generateSelfSigned } from '../../src/lib/certs/selfsigned-cert.js';
import { FIELD_OF_FLAG, FIELD_PATHS, fieldSpec } from '../../src/lib/config/fields.js';
import { parseConfigText, resolveServeConfig } from '../../src/lib/config/index.js';
import { describeError } from '../../src/lib/errors.js';
import { parseListenAddr } from '../../src/lib/server/relay.js';
import { STOP_GRACE_MS } from '../../src/lib/server/constants.js';
import { ROOT } from '../helpers/cli.js';
import { FaultScene, serve, until, type Serve } from '../faults/helpers.js';

const DIR = join(ROOT, 'deploy/k8s');
/** Flags of the mesh work landing in parallel (issue 10 §1/§2); tolerated only until fields.ts has `mesh.*`. */
const PENDING_FLAGS = ['workers', 'mesh-with', 'mesh-psk-file', 'mesh-ca-file'];
const MESH_KNOWN = FIELD_PATHS.some((p) => p.startsWith('mesh.'));

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- manifests are untyped YAML; every access is checked
type Obj = Record<string, any>;

interface Bundle {
  /** File name → its documents (kustomization.yaml included). */
  files: Map<string, Obj[]>;
}

/** Every document of a YAML stream, as kubectl reads it (YAML 1.1: `0400` is octal). */
function parseDocs(text: string, name: string): Obj[] {
  const docs = parseAllDocuments(text, { version: '1.1' });
  const list = Array.isArray(docs) ? docs : [];
  for (const d of list) if (d.errors.length > 0 || d.warnings.length > 0) throw new Error(`${name}: ${[...d.errors, ...d.warnings].map((e) => e.message).join('; ')}`);
  return list.map((d) => d.toJS() as Obj).filter((o) => o !== null);
}

function loadBundle(): Bundle {
  const files = new Map<string, Obj[]>();
  for (const name of readdirSync(DIR).filter((f) => f.endsWith('.yaml')).sort()) files.set(name, parseDocs(readFileSync(join(DIR, name), 'utf8'), name));
  return { files };
}

const clone = (b: Bundle): Bundle => ({ files: new Map([...b.files].map(([k, v]) => [k, structuredClone(v)])) });

function serveFlags(): Map<string, { type: string; allowNo?: boolean }> {
  const m = JSON.parse(readFileSync(join(ROOT, 'oclif.manifest.json'), 'utf8')) as { commands: { serve: { flags: Record<string, { type: string; allowNo?: boolean }> } } };
  return new Map(Object.entries(m.commands.serve.flags));
}

/** `--name value`, `--name=value`, `--flag` (boolean per the manifest) → name → values. */
function parseArgs(args: string[], known: Map<string, { type: string; allowNo?: boolean }>, problems: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) {
      problems.push(`args: unexpected positional "${a}"`);
      continue;
    }
    const eq = a.indexOf('=');
    let name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    // `--no-stun` is the `stun` flag (allowNo) set to false.
    const negated = name.startsWith('no-') && known.get(name.slice(3))?.allowNo === true;
    if (negated) name = name.slice(3);
    const boolean = known.get(name)?.type === 'boolean';
    const value = eq >= 0 ? a.slice(eq + 1) : boolean ? String(!negated) : args[++i];
    if (value === undefined) problems.push(`args: --${name} has no value`);
    else out.set(name, [...(out.get(name) ?? []), value]);
  }
  return out;
}

const portOf = (addr: string): number => parseListenAddr(addr).port;
const matches = (selector: Obj | undefined, labels: Obj): boolean => selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

/** Every problem found; [] = the manifests fit together and with `derp serve`. */
function checkBundle(b: Bundle): string[] {
  const p: string[] = [];
  const all = [...b.files].flatMap(([file, docs]) => docs.map((doc) => ({ file, doc })));
  const kinds = (kind: string) => all.filter((x) => x.doc.kind === kind).map((x) => x.doc);
  const one = (kind: string): Obj | undefined => {
    const k = kinds(kind);
    if (k.length !== 1) p.push(`expected one ${kind}, found ${k.length}`);
    return k[0];
  };

  // kustomization: every manifest applied, the namespace, the generated mesh key.
  const kust = b.files.get('kustomization.yaml')?.[0];
  if (kust === undefined) return ['kustomization.yaml missing'];
  const resources = [...(kust.resources ?? [])].sort();
  const manifests = [...b.files.keys()].filter((f) => f !== 'kustomization.yaml').sort();
  if (JSON.stringify(resources) !== JSON.stringify(manifests)) p.push(`kustomization resources ${JSON.stringify(resources)} ≠ files ${JSON.stringify(manifests)}`);
  const ns: string | undefined = kust.namespace;
  if (!kinds('Namespace').some((n) => n.metadata?.name === ns)) p.push(`namespace ${ns} is not created by a Namespace manifest`);

  // Secrets that exist, with their keys: manifests, kustomize generators, cert-manager Certificates.
  const secrets = new Map<string, Set<string>>();
  for (const s of kinds('Secret')) secrets.set(s.metadata.name, new Set(Object.keys({ ...s.data, ...s.stringData })));
  for (const g of kust.secretGenerator ?? []) secrets.set(g.name, new Set((g.files ?? []).map((f: string) => (f.includes('=') ? f.split('=')[0]! : basename(f)))));
  for (const c of kinds('Certificate')) secrets.set(c.spec?.secretName, new Set(['tls.crt', 'tls.key']));
  const configMaps = new Map(kinds('ConfigMap').map((c) => [c.metadata.name as string, c.data as Obj]));

  const sts = one('StatefulSet');
  if (sts === undefined) return p;
  const pod = sts.spec.template;
  const labels: Obj = pod.metadata?.labels ?? {};
  if (!matches(sts.spec.selector?.matchLabels, labels)) p.push('StatefulSet selector does not match its pod labels');
  const containers: Obj[] = pod.spec.containers;
  if (containers.length !== 1) p.push(`expected one container, found ${containers.length}`);
  const c = containers[0]!;
  const ports = new Map<string, Obj>((c.ports ?? []).map((x: Obj) => [x.name, x]));
  for (const x of c.ports ?? []) if (typeof x.name !== 'string') p.push(`container port ${x.containerPort} has no name`);

  // Services: selectors, the headless one, target ports by name and protocol.
  const services = kinds('Service');
  for (const s of services) {
    if (!matches(s.spec.selector, labels)) p.push(`Service ${s.metadata.name}: selector does not match the pod labels`);
    for (const sp of s.spec.ports ?? []) {
      const cp = ports.get(sp.targetPort);
      if (typeof sp.targetPort !== 'string' || cp === undefined) p.push(`Service ${s.metadata.name} port ${sp.port}: targetPort ${sp.targetPort} is not a named container port`);
      else if ((cp.protocol ?? 'TCP') !== (sp.protocol ?? 'TCP')) p.push(`Service ${s.metadata.name} port ${sp.port}: ${sp.protocol ?? 'TCP'} to ${cp.protocol ?? 'TCP'} container port ${cp.name}`);
    }
  }
  const headless = services.find((s) => s.metadata.name === sts.spec.serviceName);
  if (headless === undefined) p.push(`StatefulSet serviceName ${sts.spec.serviceName} is not a Service`);
  else if (headless.spec.clusterIP !== 'None' || headless.spec.publishNotReadyAddresses !== true) p.push(`Service ${headless.metadata.name}: not headless with publishNotReadyAddresses`);
  const lb = services.find((s) => s.spec.type === 'LoadBalancer');
  const lbPorts = (lb?.spec.ports ?? []).map((x: Obj) => `${x.protocol ?? 'TCP'}/${x.port}`);
  if (lb === undefined || lb.spec.externalTrafficPolicy !== 'Local' || !lbPorts.includes('TCP/443') || !lbPorts.includes('UDP/3478')) p.push(`no LoadBalancer Service with externalTrafficPolicy Local, TCP 443 and UDP 3478 (${lbPorts.join(', ')})`);

  // Volumes: Secrets and ConfigMaps that exist, with the keys asked for, key files 0400.
  const volumes = new Map<string, Obj>((pod.spec.volumes ?? []).map((v: Obj) => [v.name, v]));
  for (const v of volumes.values()) {
    if (v.secret !== undefined) {
      const keys = secrets.get(v.secret.secretName);
      if (keys === undefined) p.push(`volume ${v.name}: Secret ${v.secret.secretName} is not declared`);
      else for (const it of v.secret.items ?? []) if (!keys.has(it.key)) p.push(`volume ${v.name}: Secret ${v.secret.secretName} has no key ${it.key}`);
      if (v.secret.defaultMode !== 0o400) p.push(`volume ${v.name}: defaultMode ${v.secret.defaultMode?.toString(8)}, expected 0400`);
    }
    if (v.configMap !== undefined && !configMaps.has(v.configMap.name)) p.push(`volume ${v.name}: ConfigMap ${v.configMap.name} is not declared`);
  }
  for (const ref of all.flatMap((x) => JSON.stringify(x.doc).match(/"secretKeyRef":\{[^}]*\}/g) ?? [])) {
    const r = JSON.parse(ref.slice('"secretKeyRef":'.length)) as { name: string; key: string };
    if (secrets.get(r.name)?.has(r.key) !== true) p.push(`secretKeyRef ${r.name}/${r.key} is not declared`);
  }
  const mounts: Obj[] = c.volumeMounts ?? [];
  for (const m of mounts) if (!volumes.has(m.name)) p.push(`volumeMount ${m.name} has no volume`);
  /** What a path in the container is: the volume mounted over it and the key/file name inside. */
  const mounted = (path: string): { volume: Obj; rel: string } | undefined => {
    const m = mounts.filter((x) => path.startsWith(`${x.mountPath}/`)).sort((a, z) => z.mountPath.length - a.mountPath.length)[0];
    const volume = m === undefined ? undefined : volumes.get(m.name);
    return volume === undefined ? undefined : { volume, rel: posix.relative(m!.mountPath, path) };
  };
  const secretFile = (what: string, path: string | undefined): void => {
    if (path === undefined) return;
    const at = mounted(path);
    const s = at?.volume.secret;
    const keys = s === undefined ? undefined : secrets.get(s.secretName);
    const key = s?.items === undefined ? at?.rel : s.items.find((i: Obj) => i.path === at?.rel)?.key;
    if (keys === undefined || key === undefined || !keys.has(key)) p.push(`${what} ${path} is not a key of a mounted Secret`);
  };

  // args: real `derp serve` flags; the config file is a mounted ConfigMap key.
  const known = serveFlags();
  const args: string[] = c.args ?? [];
  if (args[0] !== 'serve') p.push(`args start with ${args[0]}, not serve`);
  const given = parseArgs(args.slice(1), known, p);
  for (const name of given.keys()) {
    if (known.has(name)) continue;
    if (!MESH_KNOWN && PENDING_FLAGS.includes(name)) continue;
    p.push(`args: --${name} is not a derp serve flag`);
  }
  const configPath = given.get('config')?.[0];
  const cfgAt = configPath === undefined ? undefined : mounted(configPath);
  const text: unknown = cfgAt?.volume.configMap === undefined ? undefined : configMaps.get(cfgAt.volume.configMap.name)?.[cfgAt.rel];
  if (typeof text !== 'string') {
    p.push(`--config ${configPath} is not a key of a mounted ConfigMap`);
    return p;
  }

  // The config file, through the real loader with the flags given; `mesh` left out until fields.ts knows it.
  const cfgDoc = parseAllDocuments(text, { version: '1.1' });
  const cfg = (Array.isArray(cfgDoc) ? cfgDoc[0]?.toJS() : {}) as Obj;
  let loadable = text;
  if (!MESH_KNOWN) {
    const { mesh: _mesh, ...rest } = cfg;
    loadable = JSON.stringify(rest);
  }
  const flags: Record<string, unknown> = {};
  for (const [name, values] of given) {
    const path = FIELD_OF_FLAG.get(name);
    if (path === undefined) continue;
    const kind = fieldSpec(path).flag!.kind;
    flags[name] = kind === 'strings' ? values : kind === 'integer' || kind === 'number' ? Number(values[0]) : kind === 'boolean' ? values[0] === 'true' : values[0];
  }
  let serve: ReturnType<typeof resolveServeConfig> | undefined;
  try {
    serve = resolveServeConfig(parseConfigText(loadable, `configmap ${cfgAt!.volume.configMap.name}/${cfgAt!.rel}`), flags);
  } catch (err) {
    p.push(`config does not load: ${describeError(err)}`);
  }

  // The mesh: discovery by the headless Service's name on the pods' DERP port, key and CA from Secrets.
  const mesh: Obj | undefined = cfg.mesh;
  const discovery = `${headless?.metadata.name}.${ns}.svc.cluster.local`;
  const withList: unknown[] = mesh?.with ?? [];
  // The public name (what the certificate names) with the headless Service as the dial host.
  const publicName = cfg.derp?.servers?.[0]?.hostname;
  const wantWith = `${publicName}:${ports.get('derp')?.containerPort}/${discovery}`;
  if (withList.length !== 1 || withList[0] !== wantWith) p.push(`mesh.with ${JSON.stringify(withList)}, expected ["${wantWith}"]`);
  if (mesh?.pskFile === undefined) p.push('mesh.pskFile missing');
  secretFile('mesh.pskFile', mesh?.pskFile);
  secretFile('mesh.caFile', mesh?.caFile);

  if (serve !== undefined) {
    secretFile('tls.certFile', serve.tls.certFile);
    secretFile('tls.keyFile', serve.tls.keyFile);
    if (serve.tls.certMode !== 'manual') p.push(`tls.certMode ${serve.tls.certMode}, expected manual (a mounted cert Secret)`);
    // Listeners and container ports agree; none below 1024 (no NET_BIND_SERVICE).
    const want: Array<[string, number | null]> = [['derp', portOf(serve.addr)], ['http', serve.httpPort], ['stun', serve.stun.enabled ? serve.stun.port : null], ['metrics', serve.metrics.addr === null ? null : portOf(serve.metrics.addr)]];
    for (const [name, port] of want) {
      if (ports.get(name)?.containerPort !== port) p.push(`container port ${name} ${ports.get(name)?.containerPort} ≠ the config's ${port}`);
      if (port !== null && port < 1024) p.push(`${name} listens on ${port}: below 1024 needs NET_BIND_SERVICE`);
    }
    const keyAt = serve.keyFile === null ? undefined : mounted(serve.keyFile);
    if (keyAt?.volume.emptyDir === undefined && keyAt?.volume.persistentVolumeClaim === undefined) p.push(`keyFile ${serve.keyFile} is not on a writable volume`);
    // Drain then stop inside the grace period; liveness cannot fire during the drain.
    const grace: number = pod.spec.terminationGracePeriodSeconds;
    if (!(grace > serve.drainSeconds + STOP_GRACE_MS / 1000)) p.push(`terminationGracePeriodSeconds ${grace} ≤ drainSeconds ${serve.drainSeconds} + stop grace ${STOP_GRACE_MS / 1000}`);
    const live = c.livenessProbe;
    if (live !== undefined && !((live.periodSeconds ?? 10) * (live.failureThreshold ?? 3) > serve.drainSeconds)) p.push('liveness could fail during the drain');
    const ready = c.readinessProbe;
    if (ready !== undefined && !((ready.periodSeconds ?? 10) * (ready.failureThreshold ?? 3) < serve.drainSeconds)) p.push('readiness may not fail before the drain ends');
  }

  // Probes on /healthz at a declared TCP port.
  for (const which of ['readinessProbe', 'livenessProbe']) {
    const g = c[which]?.httpGet;
    if (g === undefined) p.push(`${which} missing or not httpGet`);
    else if (g.path !== '/healthz' || ports.get(g.port)?.protocol !== 'TCP') p.push(`${which}: ${g.path} on ${g.port}, expected /healthz on a named TCP port`);
  }

  // Scrape annotations at the metrics port.
  const ann: Obj = pod.metadata?.annotations ?? {};
  if (ann['prometheus.io/scrape'] !== 'true' || ann['prometheus.io/path'] !== '/metrics' || ann['prometheus.io/port'] !== String(ports.get('metrics')?.containerPort)) p.push('prometheus.io annotations do not point at the metrics port');

  // Resources, and workers = the CPU limit (Node sees the node's CPUs, not the pod's).
  const lim = c.resources?.limits ?? {};
  const req = c.resources?.requests ?? {};
  for (const r of ['cpu', 'memory']) if (lim[r] === undefined || req[r] === undefined) p.push(`resources: ${r} request or limit missing`);
  const workers = given.get('workers')?.[0];
  if (workers === undefined || Number(workers) !== Number(lim.cpu)) p.push(`--workers ${workers} ≠ cpu limit ${lim.cpu}`);

  // Security context.
  const psc: Obj = pod.spec.securityContext ?? {};
  const sc: Obj = c.securityContext ?? {};
  if (psc.runAsNonRoot !== true || typeof psc.runAsUser !== 'number' || psc.runAsUser === 0) p.push('pod does not run as a numeric non-root user');
  if (sc.readOnlyRootFilesystem !== true || sc.allowPrivilegeEscalation !== false) p.push('container root filesystem writable or privilege escalation allowed');
  if (JSON.stringify(sc.capabilities?.drop) !== '["ALL"]' || (sc.capabilities?.add ?? []).length > 0) p.push('capabilities: not exactly drop ALL, add none');

  // PDB.
  const pdb = one('PodDisruptionBudget');
  if (pdb !== undefined) {
    if (!matches(pdb.spec.selector?.matchLabels, labels)) p.push('PodDisruptionBudget selector does not match the pod labels');
    if (pdb.spec.maxUnavailable !== 1) p.push(`PodDisruptionBudget maxUnavailable ${pdb.spec.maxUnavailable}, expected 1`);
  }
  return p;
}

const BASE = loadBundle();
const docOf = (b: Bundle, file: string, kind: string, name?: string): Obj => {
  const d = b.files.get(file)?.find((x) => x.kind === kind && (name === undefined || x.metadata?.name === name));
  if (d === undefined) throw new Error(`${file}: no ${kind} ${name ?? ''}`);
  return d;
};
const sts = (b: Bundle) => docOf(b, 'statefulset.yaml', 'StatefulSet');
const container = (b: Bundle) => sts(b).spec.template.spec.containers[0] as Obj;
/** Edits the ConfigMap's derp.yaml as text. */
const editConfig = (b: Bundle, from: RegExp, to: string): void => {
  const cm = docOf(b, 'configmap.yaml', 'ConfigMap');
  const before = cm.data['derp.yaml'] as string;
  cm.data['derp.yaml'] = before.replace(from, to);
  if (cm.data['derp.yaml'] === before) throw new Error(`config edit ${from} changed nothing`);
};

describe('deploy/k8s manifests', () => {
  it('parse as kubectl parses them and fit together with derp serve', () => {
    expect([...BASE.files.keys()]).toEqual(['certificate.yaml', 'configmap.yaml', 'kustomization.yaml', 'namespace.yaml', 'pdb.yaml', 'services.yaml', 'statefulset.yaml']);
    expect(checkBundle(BASE)).toEqual([]);
  });

  it('the README names every file', () => {
    const readme = readFileSync(join(DIR, 'README.md'), 'utf8');
    for (const f of BASE.files.keys()) expect(readme, f).toContain(`\`${f}\``);
  });

  // One break per check: [what, edit, the problem it must produce].
  const MUTATIONS: Array<[string, (b: Bundle) => void, RegExp]> = [
    ['a manifest left out of kustomization', (b) => docOf(b, 'kustomization.yaml', 'Kustomization').resources.pop(), /kustomization resources/],
    ['Service selector typo', (b) => (docOf(b, 'services.yaml', 'Service', 'derp').spec.selector['app.kubernetes.io/name'] = 'dep'), /Service derp: selector/],
    ['serviceName not the headless Service', (b) => (sts(b).spec.serviceName = 'derp-peers'), /serviceName derp-peers/],
    ['headless Service without publishNotReadyAddresses', (b) => delete docOf(b, 'services.yaml', 'Service', 'derp-mesh').spec.publishNotReadyAddresses, /not headless/],
    ['STUN target port of the wrong protocol', (b) => (docOf(b, 'services.yaml', 'Service', 'derp').spec.ports[2].protocol = 'TCP'), /UDP 3478|TCP to UDP/],
    ['target port name not declared', (b) => (docOf(b, 'services.yaml', 'Service', 'derp').spec.ports[0].targetPort = 'https'), /targetPort https/],
    ['externalTrafficPolicy Cluster', (b) => (docOf(b, 'services.yaml', 'Service', 'derp').spec.externalTrafficPolicy = 'Cluster'), /externalTrafficPolicy Local/],
    ['probe on an undeclared port', (b) => (container(b).readinessProbe.httpGet.port = 'health'), /readinessProbe/],
    ['probe on another path', (b) => (container(b).livenessProbe.httpGet.path = '/'), /livenessProbe/],
    ['secret volume of an undeclared Secret', (b) => (sts(b).spec.template.spec.volumes.find((v: Obj) => v.name === 'mesh-key').secret.secretName = 'mesh'), /Secret mesh is not declared/],
    ['secret item key not in the Secret', (b) => (sts(b).spec.template.spec.volumes.find((v: Obj) => v.name === 'mesh-key').secret.items[0].key = 'key'), /has no key key/],
    ['key files readable by all', (b) => (sts(b).spec.template.spec.volumes.find((v: Obj) => v.name === 'tls').secret.defaultMode = 0o444), /defaultMode 444/],
    ['a secretKeyRef to nothing', (b) => (container(b).env = [{ name: 'X', valueFrom: { secretKeyRef: { name: 'derp-tls', key: 'password' } } }]), /secretKeyRef derp-tls\/password/],
    ['a config field that does not exist', (b) => editConfig(b, /drainSeconds: 30/, 'drainSecs: 30'), /config does not load/],
    ['a config value out of range', (b) => editConfig(b, /maxConns: 24000/, 'maxConns: -1'), /config does not load/],
    ['a flag derp serve does not have', (b) => container(b).args.push('--drain', '5'), /--drain is not a derp serve flag/],
    ['--config not a ConfigMap key', (b) => (container(b).args[2] = '/etc/derp/derp.yaml'), /--config \/etc\/derp\/derp\.yaml/],
    ['mesh discovery name of another namespace', (b) => editConfig(b, /derp-mesh\.derp\.svc/, 'derp-mesh.default.svc'), /mesh\.with/],
    ['mesh key file not a mounted key', (b) => editConfig(b, /pskFile: \/etc\/derp\/mesh\/mesh\.key/, 'pskFile: /etc/derp/mesh/psk'), /mesh\.pskFile/],
    ['TLS key not in the cert Secret', (b) => editConfig(b, /keyFile: \/etc\/derp\/tls\/tls\.key/, 'keyFile: /etc/derp/tls/key.pem'), /tls\.keyFile/],
    ['container port not what the relay listens on', (b) => (container(b).ports[0].containerPort = 443), /container port derp 443/],
    ['relay on a privileged port', (b) => (editConfig(b, /addr: ":8443"/, 'addr: ":443"'), (container(b).ports[0].containerPort = 443)), /below 1024/],
    ['PDB selector typo', (b) => (docOf(b, 'pdb.yaml', 'PodDisruptionBudget').spec.selector.matchLabels['app.kubernetes.io/component'] = 'server'), /PodDisruptionBudget selector/],
    ['no memory limit', (b) => delete container(b).resources.limits.memory, /memory request or limit/],
    ['STUN turned off by a flag while the Service routes to it', (b) => container(b).args.push('--no-stun'), /container port stun 3478 ≠ the config's null/],
    ['more workers than CPUs', (b) => (container(b).args[4] = '8'), /--workers 8/],
    ['grace period shorter than the drain', (b) => (sts(b).spec.template.spec.terminationGracePeriodSeconds = 31), /terminationGracePeriodSeconds 31/],
    ['liveness that fires during the drain', (b) => (container(b).livenessProbe.failureThreshold = 2), /liveness could fail/],
    ['readiness slower than the drain', (b) => (container(b).readinessProbe.failureThreshold = 6), /readiness may not fail/],
    ['scrape annotation at the wrong port', (b) => (sts(b).spec.template.metadata.annotations['prometheus.io/port'] = '8443'), /prometheus\.io/],
    ['a capability added', (b) => (container(b).securityContext.capabilities.add = ['NET_BIND_SERVICE']), /capabilities/],
    ['root', (b) => (sts(b).spec.template.spec.securityContext.runAsUser = 0), /non-root/],
    ['state on the read-only root', (b) => editConfig(b, /keyFile: \/var\/lib\/derp\/derper\.key/, 'keyFile: /derper.key'), /writable volume/],
  ];

  it.each(MUTATIONS)('reports: %s', (_what, edit, problem) => {
    const b = clone(BASE);
    edit(b);
    const found = checkBundle(b);
    expect(found.some((x) => problem.test(x)), found.join('\n')).toBe(true);
  });
});

/** A Secret volume as the kubelet's AtomicWriter writes it: `..<time>/` files, a `..data` link, per-key links. */
class SecretVolume {
  private gen = 0;
  private current: string | null = null;
  constructor(readonly dir: string) {}

  async write(files: Record<string, string>): Promise<void> {
    const ts = `..2026_12_02_00_00_00.${String(++this.gen).padStart(9, '0')}`;
    await mkdir(join(this.dir, ts), { recursive: true });
    for (const [k, v] of Object.entries(files)) await writeFile(join(this.dir, ts, k), v, { mode: 0o440 });
    await symlink(ts, join(this.dir, '..data_tmp'));
    await rename(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    if (this.current === null) for (const k of Object.keys(files)) await symlink(join('..data', k), join(this.dir, k));
    else await rm(join(this.dir, this.current), { recursive: true });
    this.current = ts;
  }
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** The SHA-256 fingerprint of the certificate the relay serves now. */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'derp.example.com', rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.end();
    });
    s.on('error', reject);
  });
}

const fingerprintOf = (pem: string): string => new X509Certificate(pem).fingerprint256;

const KUBECTL = '/usr/bin/kubectl';
const haveKubectl = existsSync(KUBECTL);
if (!haveKubectl) console.warn(`[k8s.test] kustomize rendering SKIPPED: ${KUBECTL} is not installed`);

describe.skipIf(!haveKubectl)('deploy/k8s rendered by kubectl kustomize (what `kubectl apply -k` applies)', () => {
  const run = promisify(execFile);
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'derp-kustomize-'));
    await cp(DIR, dir, { recursive: true });
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('refuses to render without mesh.key', async () => {
    await expect(run(KUBECTL, ['kustomize', dir])).rejects.toThrow(/mesh\.key/);
  });

  it('renders, and the rendered documents pass every check (generated Secret name, namespace)', async () => {
    const key = randomBytes(32).toString('hex');
    await writeFile(join(dir, 'mesh.key'), `${key}\n`);
    const { stdout } = await run(KUBECTL, ['kustomize', dir]);
    const docs = parseDocs(stdout, 'kubectl kustomize');
    for (const d of docs) if (d.kind !== 'Namespace') expect(d.metadata.namespace, `${d.kind} ${d.metadata.name}`).toBe('derp');
    const secret = docs.find((d) => d.kind === 'Secret')!;
    expect(secret.metadata.name).toMatch(/^derp-mesh-key-[a-z0-9]+$/);
    expect(Buffer.from(secret.data['mesh.key'] as string, 'base64').toString()).toBe(`${key}\n`);
    const volumes = docs.find((d) => d.kind === 'StatefulSet')!.spec.template.spec.volumes as Obj[];
    expect(volumes.find((v) => v.name === 'mesh-key')!.secret.secretName).toBe(secret.metadata.name);
    const rendered: Bundle = { files: new Map([['kustomization.yaml', [{ kind: 'Kustomization', namespace: 'derp', resources: ['rendered.yaml'] }]], ['rendered.yaml', docs]]) };
    expect(checkBundle(rendered)).toEqual([]);
  });
});

describe('deploy/k8s configuration in a real derp serve', () => {
  const scene = new FaultScene();
  const certs: Array<{ certPem: string; keyPem: string }> = [];
  let tlsVolume: SecretVolume;
  let relay: Serve;
  let drainSeconds: number;

  beforeAll(async () => {
    const dir = await scene.tempDir('derp-k8s-');
    const cm = docOf(BASE, 'configmap.yaml', 'ConfigMap');
    const cfg = parseAllDocuments(cm.data['derp.yaml'] as string, { version: '1.1' });
    const c = (Array.isArray(cfg) ? cfg[0]!.toJS() : {}) as Obj;
    drainSeconds = c.drainSeconds;
    // The mesh of several nodes is the mesh tests' job; here one node, on ephemeral loopback ports.
    delete c.mesh;
    Object.assign(c, { addr: '127.0.0.1:0', httpPort: 0, keyFile: join(dir, 'state/derper.key') });
    Object.assign(c.stun, { port: 0 });
    Object.assign(c.metrics, { addr: '127.0.0.1:0' });
    const tlsDir = join(dir, 'tls');
    Object.assign(c.tls, { certFile: join(tlsDir, basename(c.tls.certFile)), keyFile: join(tlsDir, basename(c.tls.keyFile)) });
    for (let i = 0; i < 2; i++) certs.push(await generateSelfSigned('derp.example.com'));
    tlsVolume = new SecretVolume(tlsDir);
    await tlsVolume.write({ 'tls.crt': certs[0]!.certPem, 'tls.key': certs[0]!.keyPem });
    const file = join(dir, 'derp.yaml');
    await writeFile(file, JSON.stringify(c));
    // The StatefulSet's args, with this file; flags still landing in main are left out until they exist.
    const args: string[] = [...container(BASE).args.slice(1)];
    args[args.indexOf('--config') + 1] = file;
    for (const f of PENDING_FLAGS) {
      const i = args.indexOf(`--${f}`);
      if (i >= 0 && !MESH_KNOWN) args.splice(i, 2);
    }
    relay = await serve(args);
    scene.procs.push(relay);
  }, 30_000);
  afterAll(() => scene.cleanup());

  it('answers the probes and the scrape where the manifests point', async () => {
    expect(relay.metricsUrl).not.toBeNull();
    const base = new URL(relay.metricsUrl!).origin;
    expect(await get(`${base}/healthz`)).toEqual({ status: 200, body: 'ok\n' });
    const metrics = await get(`${base}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^derp_certificate_expiry_timestamp_seconds\{source="manual"\} /m);
  });

  it('serves a renewed certificate after the kubelet swaps the Secret volume', async () => {
    expect(await servedFingerprint(relay.port)).toBe(fingerprintOf(certs[0]!.certPem));
    await tlsVolume.write({ 'tls.crt': certs[1]!.certPem, 'tls.key': certs[1]!.keyPem });
    const want = fingerprintOf(certs[1]!.certPem);
    await until(async () => (await servedFingerprint(relay.port)) === want, 10_000, 'the renewed certificate');
    // With --workers every process must have it: new connections spread over them.
    for (let i = 0; i < 20; i++) expect(await servedFingerprint(relay.port)).toBe(want);
  });

  it('on SIGTERM fails readiness (draining) while still serving, and exits 0', async () => {
    expect(drainSeconds).toBeGreaterThan(0);
    const base = new URL(relay.metricsUrl!).origin;
    relay.proc.kill('SIGTERM');
    let last = { status: 0, body: '' };
    await until(async () => (last = await get(`${base}/healthz`)).status === 503, 10_000, '/healthz 503');
    expect(last.body).toContain('draining');
    // Still serving TLS during the drain: the load balancer takes it out, clients are not cut off yet.
    expect(await servedFingerprint(relay.port)).toBe(fingerprintOf(certs[1]!.certPem));
    // A second SIGTERM cuts the drain short (the kubelet sends one; the test does not wait 30 s).
    relay.proc.kill('SIGTERM');
    expect(await relay.exit).toBe(0);
  });
});
