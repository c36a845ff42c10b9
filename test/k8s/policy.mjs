// What every rendered overlay must hold beyond the schemas: Pod Security "restricted" on every
// pod template, requests and limits, probes on every Deployment, no secret in plain text,
// deadlines on jobs, Services and probes naming ports the containers declare, one outbox mode
// per database, consumers capped by the partition count, nothing operational behind the
// Ingress, no replica count where an autoscaler owns it, release Jobs named by their content,
// each database role's Secret only where it belongs, egress only to the backends' addresses,
// and the pods holding the payment processor's key reaching DNS, Kafka, their database and the
// processor alone.
// Usage: node policy.mjs FILE            prints "ok ..." / "FAIL ..." lines, exit 1 on a FAIL
//        node policy.mjs --ports FILE    prints "DEPLOYMENT PORT ARGS_JSON" per port of an ordertrack container
//        node policy.mjs --command FILE KIND NAME
//                                        prints the first container's args as a JSON array, its
//                                        $(VAR)s filled from its env and ConfigMaps
//        node policy.mjs --json FILE     prints each object as one line of JSON (for jq)
//        node policy.mjs --egress FILE KIND NAME
//                                        prints where the pods of KIND NAME may connect, one
//                                        "POLICY PORT/PROTOCOL DESTINATION" line each, sorted
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

const mode = process.argv[2]?.startsWith('--') ? process.argv[2] : null;
const ports = mode === '--ports';
const file = process.argv[mode ? 3 : 2];
const objs = parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS()).filter(Boolean);
let fails = 0;
const fail = (what, why) => { console.log(`FAIL ${what}: ${why}`); fails++; };
const ok = (what) => console.log(`ok ${what}`);

// A generated name without kustomize's hash suffix: ordertrack-db-migrate-2hkgfhbd7d -> ordertrack-db-migrate.
const unhashed = (name) => name.replace(/-[a-z0-9]{10}$/, '');
const named = (kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);
// A container's environment as the kubelet builds it from ConfigMaps and plain values (Secrets
// are left out: their values are not the manifest's), and its args with $(VAR) filled from it.
function envOf(c) {
  const env = {};
  for (const f of c.envFrom ?? []) if (f.configMapRef) Object.assign(env, named('ConfigMap', f.configMapRef.name)?.data ?? {});
  for (const e of c.env ?? []) if (e.value != null) env[e.name] = e.value;
  return env;
}
// ordertrack's own image (registry/ordertrack:tag after the overlay's images:), not a third party's.
const ours = (c) => /(^|\/)ordertrack(:|@|$)/.test(c.image ?? '');
const expand = (c) => (c.args ?? c.command ?? []).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v) => envOf(c)[v] ?? m));

// Pod templates with their owner's name.
const pods = [];
for (const o of objs) {
  const t = o.kind === 'CronJob' ? o.spec?.jobTemplate?.spec?.template
    : ['Deployment', 'StatefulSet', 'DaemonSet', 'Job'].includes(o.kind) ? o.spec?.template : null;
  if (t) pods.push({ owner: o, what: `${o.kind} ${o.metadata.name}`, spec: t.spec, labels: t.metadata?.labels ?? {} });
  if (o.kind === 'Pod') pods.push({ owner: o, what: `Pod ${o.metadata.name}`, spec: o.spec, labels: o.metadata.labels ?? {} });
}

const secretish = /(PASS|SECRET|TOKEN|KEY|_DB$|_URL$|CREDENTIAL)/i;
const plaintext = /(password|passwd|secret)\s*[=:]/i;

if (mode === '--json') {
  for (const o of objs) console.log(JSON.stringify(o));
  process.exit(0);
}

// A label selector (matchLabels and matchExpressions) against a pod's labels; {} selects all.
function selects(sel, labels) {
  if (!Object.entries(sel?.matchLabels ?? {}).every(([k, v]) => labels[k] === v)) return false;
  return (sel?.matchExpressions ?? []).every((e) => {
    const has = Object.hasOwn(labels, e.key);
    if (e.operator === 'In') return has && e.values.includes(labels[e.key]);
    if (e.operator === 'NotIn') return !has || !e.values.includes(labels[e.key]);
    if (e.operator === 'Exists') return has;
    if (e.operator === 'DoesNotExist') return !has;
    return false;
  });
}
const selector = (sel) => [...Object.entries(sel.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`),
  ...(sel.matchExpressions ?? []).map((e) => `${e.key} ${e.operator} (${(e.values ?? []).join(',')})`)].join(',');
function destination(t) {
  if (t.ipBlock) return t.ipBlock.cidr + (t.ipBlock.except?.length ? ` except ${t.ipBlock.except.join(',')}` : '');
  const parts = [];
  if (t.namespaceSelector) parts.push(`namespace{${selector(t.namespaceSelector)}}`);
  if (t.podSelector) parts.push(`pod{${selector(t.podSelector)}}`);
  return parts.join(' ') || 'anywhere';
}
// Every egress rule that lets a pod template out, from each policy that selects it (policies
// add up): [{policy, port, line}].
function egressOf(labels) {
  const out = [];
  for (const np of objs.filter((o) => o.kind === 'NetworkPolicy' && (o.spec.policyTypes ?? []).includes('Egress'))) {
    if (!selects(np.spec.podSelector, labels)) continue;
    for (const r of np.spec.egress ?? []) {
      for (const port of r.ports ?? [{ port: 'any' }]) {
        for (const t of r.to ?? [{}])
          out.push({ policy: np.metadata.name, port: port.port, line: `${np.metadata.name} ${port.port}/${port.protocol ?? 'TCP'} ${destination(t)}` });
      }
    }
  }
  return out;
}

if (mode === '--egress') {
  const [kind, name] = process.argv.slice(4);
  const p = pods.find((x) => x.owner.kind === kind && x.owner.metadata.name === name);
  if (!p) { console.error(`no ${kind} ${name}`); process.exit(1); }
  for (const l of [...new Set(egressOf(p.labels).map((e) => e.line))].sort()) console.log(l);
  process.exit(0);
}

if (mode === '--command') {
  const [kind, name] = process.argv.slice(4);
  const o = objs.find((x) => x.kind === kind && (x.metadata.name === name || unhashed(x.metadata.name) === name));
  const t = o?.kind === 'CronJob' ? o.spec.jobTemplate.spec.template : o?.spec?.template;
  if (!t) { console.error(`no ${kind} ${name}`); process.exit(1); }
  console.log(JSON.stringify(expand(t.spec.containers[0])));
  process.exit(0);
}

if (ports) {
  for (const p of pods.filter((p) => p.owner.kind === 'Deployment')) {
    for (const c of p.spec.containers.filter(ours)) {
      for (const port of c.ports ?? []) console.log(`${p.owner.metadata.name} ${port.containerPort} ${JSON.stringify(c.args ?? c.command)}`);
    }
  }
  process.exit(0);
}

for (const p of pods) {
  const s = p.spec, what = p.what;
  const psc = s.securityContext ?? {};
  if (psc.runAsNonRoot !== true) fail(what, 'pod securityContext.runAsNonRoot is not true');
  if (!Number.isInteger(psc.runAsUser) || psc.runAsUser <= 0) fail(what, 'pod securityContext.runAsUser is not a fixed non-zero UID');
  if (psc.seccompProfile?.type !== 'RuntimeDefault') fail(what, 'pod seccompProfile is not RuntimeDefault');
  if (s.hostNetwork || s.hostPID || s.hostIPC) fail(what, 'uses a host namespace');
  for (const v of s.volumes ?? []) if (v.hostPath) fail(what, `volume ${v.name} is a hostPath`);
  if (s.automountServiceAccountToken !== false) fail(what, 'mounts a service account token');
  if (!Number.isInteger(s.terminationGracePeriodSeconds) && p.owner.kind === 'Deployment') fail(what, 'no terminationGracePeriodSeconds');
  for (const c of [...(s.initContainers ?? []), ...s.containers]) {
    const cw = `${what} container ${c.name}`;
    const sc = c.securityContext ?? {};
    if (sc.allowPrivilegeEscalation !== false) fail(cw, 'allowPrivilegeEscalation is not false');
    if (sc.readOnlyRootFilesystem !== true) fail(cw, 'readOnlyRootFilesystem is not true');
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) fail(cw, 'capabilities do not drop ALL');
    if ((sc.capabilities?.add ?? []).some((a) => a !== 'NET_BIND_SERVICE')) fail(cw, 'adds capabilities');
    if (sc.privileged) fail(cw, 'privileged');
    if (sc.runAsUser === 0) fail(cw, 'runs as root');
    for (const kind of ['requests', 'limits']) {
      for (const r of ['cpu', 'memory']) if (c.resources?.[kind]?.[r] == null) fail(cw, `no ${r} ${kind}`);
    }
    for (const e of c.env ?? []) {
      if (e.value != null && (secretish.test(e.name) && e.value !== '' && !/^:?\d+$/.test(e.value) || plaintext.test(e.value)))
        fail(cw, `env ${e.name} carries a value in plain text; use a secretKeyRef`);
      if (e.valueFrom?.configMapKeyRef && secretish.test(e.name)) fail(cw, `env ${e.name} comes from a ConfigMap`);
    }
    if (p.owner.kind === 'Deployment') {
      // /healthz, /readyz and OT_HTTP_ADDR are ordertrack's own; a third party's image (the
      // PostgreSQL exporter) is probed where it answers.
      const own = ours(c);
      const named = new Map((c.ports ?? []).map((x) => [x.name, x.containerPort]));
      const probes = { livenessProbe: '/healthz', readinessProbe: '/readyz', startupProbe: null };
      for (const [probe, path] of Object.entries(probes)) {
        const h = c[probe]?.httpGet;
        if (!h) { fail(cw, `no ${probe} over HTTP`); continue; }
        if (path && own && h.path !== path) fail(cw, `${probe} asks ${h.path}, not ${path}`);
        if (typeof h.port === 'string' ? !named.has(h.port) : ![...named.values()].includes(h.port))
          fail(cw, `${probe} port ${h.port} is not a port the container declares`);
      }
      // The port the tool is told to listen on is the one declared and probed.
      const addr = (c.env ?? []).find((e) => e.name === 'OT_HTTP_ADDR')?.value;
      if (!own) {
        // not ours: nothing more to read from its environment
      } else if (!addr) fail(cw, 'no OT_HTTP_ADDR: the tool would not listen');
      else if (![...named.values()].includes(Number(addr.split(':').pop()))) fail(cw, `OT_HTTP_ADDR ${addr} is not a declared port`);
    }
  }
  if (p.owner.kind === 'CronJob' || p.owner.kind === 'Job') {
    const js = p.owner.kind === 'CronJob' ? p.owner.spec.jobTemplate.spec : p.owner.spec;
    if (!Number.isInteger(js.activeDeadlineSeconds)) fail(what, 'no activeDeadlineSeconds');
  }
  ok(what);
}

// Services: every targetPort is a port the selected pods declare; names and appProtocol set.
for (const svc of objs.filter((o) => o.kind === 'Service')) {
  const what = `Service ${svc.metadata.name}`;
  const sel = svc.spec.selector ?? {};
  const matched = pods.filter((p) => Object.entries(sel).every(([k, v]) => p.labels[k] === v));
  if (!matched.length) { fail(what, 'selects no pod template'); continue; }
  for (const sp of svc.spec.ports) {
    if (!sp.name) fail(what, `port ${sp.port} has no name`);
    if (!sp.appProtocol) fail(what, `port ${sp.port} has no appProtocol`);
    const tp = sp.targetPort ?? sp.port;
    for (const p of matched) {
      const cps = p.spec.containers.flatMap((c) => c.ports ?? []);
      if (!cps.some((x) => (typeof tp === 'string' ? x.name === tp : x.containerPort === tp)))
        fail(what, `targetPort ${tp} is not declared by ${p.what}`);
    }
  }
  ok(what);
}

// ConfigMaps hold no passwords. Redis's and the payment processor's URLs are addresses (the
// processor's key travels in a header, from a Secret); credentials inside a URL are caught below.
const addresses = new Set(['OT_REDIS_URL', 'OT_PAY_URL']);
for (const cm of objs.filter((o) => o.kind === 'ConfigMap')) {
  for (const [k, v] of Object.entries(cm.data ?? {}))
    if (secretish.test(k) && !addresses.has(k) || plaintext.test(String(v)) || /:\/\/[^/@:]*:[^/@]*@/.test(String(v)))
      fail(`ConfigMap ${cm.metadata.name}`, `${k} looks like a secret`);
}

// Every namespace enforces the restricted profile.
const nss = objs.filter((o) => o.kind === 'Namespace');
if (!nss.length) fail('overlay', 'no Namespace');
for (const ns of nss) {
  if (ns.metadata.labels?.['pod-security.kubernetes.io/enforce'] !== 'restricted') fail(`Namespace ${ns.metadata.name}`, 'does not enforce restricted');
  else ok(`Namespace ${ns.metadata.name}`);
}

// One outbox mode per database: no poll sweep beside a relay in CDC mode.
const argsOf = (p) => (p.spec.containers[0].args ?? []).join(' ');
for (const p of pods.filter((x) => x.owner.kind === 'Deployment' && / --mode cdc/.test(argsOf(x)))) {
  const db = argsOf(p).match(/--db (\w+)/)?.[1];
  for (const q of pods.filter((x) => x.owner.kind === 'CronJob' && /^ot-relay /.test(argsOf(x)) && argsOf(x).includes(`--db ${db}`)))
    fail(q.what, `polls the ${db} outbox while ${p.what} streams it by CDC`);
  ok(`${p.what} alone on the ${db} outbox`);
}

// Consumers never scale past the partition count the topics Job creates.
const topics = pods.find((p) => / topics create/.test(argsOf(p)));
const partitions = Number(topics && expand(topics.spec.containers[0]).join(' ').match(/--partitions (\d+)/)?.[1]);
for (const so of objs.filter((o) => o.kind === 'ScaledObject')) {
  if (!(so.spec.maxReplicaCount <= partitions)) fail(`ScaledObject ${so.metadata.name}`, `maxReplicaCount ${so.spec.maxReplicaCount} exceeds ${partitions} partitions`);
  else ok(`ScaledObject ${so.metadata.name}`);
}

// Nothing operational is public: no Ingress path reaches the probes or the metrics, which
// share ot-serve's port. Prefix matches whole path elements; ImplementationSpecific is taken
// as a plain string prefix, as ingress-nginx does.
const operational = ['/metrics', '/readyz', '/healthz'];
function reaches(p, path) {
  const q = p.path ?? '/';
  if (p.pathType === 'Exact') return path === q;
  if (p.pathType === 'Prefix') { const b = q.replace(/\/+$/, ''); return b === '' || path === b || path.startsWith(`${b}/`); }
  return path.startsWith(q);
}
for (const ing of objs.filter((o) => o.kind === 'Ingress')) {
  const what = `Ingress ${ing.metadata.name}`;
  const before = fails;
  if (ing.spec.defaultBackend) fail(what, 'has a defaultBackend: every path reaches it');
  for (const r of ing.spec.rules ?? []) {
    for (const p of r.http?.paths ?? []) {
      for (const op of operational) if (reaches(p, op)) fail(what, `path ${p.path} (${p.pathType}) reaches ${op}`);
    }
  }
  if (fails === before) ok(what);
}

// Where an HPA or a ScaledObject owns a Deployment's count, the Deployment sets none: every
// apply would put it back to the manifest's number.
for (const a of objs.filter((o) => o.kind === 'HorizontalPodAutoscaler' || o.kind === 'ScaledObject')) {
  const ref = a.spec.scaleTargetRef, kind = ref.kind ?? 'Deployment';
  const d = named(kind, ref.name);
  if (!d) fail(`${a.kind} ${a.metadata.name}`, `scales ${kind} ${ref.name}, which is not there`);
  else if (d.spec.replicas != null) fail(`${kind} ${ref.name}`, `sets replicas ${d.spec.replicas} while ${a.kind} ${a.metadata.name} owns its count: every apply resets the scale`);
  else ok(`${kind} ${ref.name} scaled by ${a.kind} ${a.metadata.name}`);
}

// A Job's template cannot change: a Job is named by its content, the ConfigMap of its name
// (hash included) holding its settings and its image.
for (const p of pods.filter((x) => x.owner.kind === 'Job')) {
  const c = p.spec.containers[0];
  const cm = (c.envFrom ?? []).map((f) => f.configMapRef?.name).find((n) => n === p.owner.metadata.name);
  if (!cm || !named('ConfigMap', cm)) fail(p.what, 'its name is not that of a ConfigMap of its settings: a changed Job could not be applied');
  else if (named('ConfigMap', cm).data?.OT_RELEASE_IMAGE !== c.image) fail(p.what, `its ConfigMap ${cm} names image ${named('ConfigMap', cm).data?.OT_RELEASE_IMAGE}, not its ${c.image}: a new release would not rename it`);
  else ok(`${p.what} named by its content`);
}

// Each database role's connection strings go where that role belongs (lib/store/sql/roles.sql): the
// migration role's to the migrate Job alone, the replication role's to a relay in CDC mode
// alone, the runtime role's to everything else. Every Secret and ConfigMap named is rendered.
const refs = (c) => [...(c.envFrom ?? []).map((f) => f.secretRef ? ['Secret', f.secretRef.name] : ['ConfigMap', f.configMapRef?.name]),
  ...(c.env ?? []).flatMap((e) => e.valueFrom?.secretKeyRef ? [['Secret', e.valueFrom.secretKeyRef.name]]
    : e.valueFrom?.configMapKeyRef ? [['ConfigMap', e.valueFrom.configMapKeyRef.name]] : [])];
for (const p of pods) {
  for (const c of p.spec.containers) {
    const args = expand(c).join(' ');
    const dbs = refs(c).filter(([k, n]) => k === 'Secret' && /^ordertrack-db/.test(unhashed(n))).map(([, n]) => unhashed(n));
    const want = / migrate( |$)/.test(args) ? 'ordertrack-db-migrate' : / --mode cdc/.test(args) ? 'ordertrack-db-cdc' : 'ordertrack-db';
    for (const [k, n] of refs(c)) if (!named(k, n)) fail(p.what, `${k} ${n} is not rendered`);
    for (const d of dbs) if (d !== want) fail(p.what, `reads ${d}: it runs as the role of ${want}`);
  }
}

// The migration Job is applied alone, before the rest of a release (README, "Schema
// upgrade"): everything it reads carries its label, so `kubectl apply -l` takes it along.
const component = (o) => o?.metadata?.labels?.['app.kubernetes.io/component'];
for (const p of pods.filter((x) => component(x.owner) === 'migration')) {
  const before = fails;
  for (const c of p.spec.containers) {
    for (const [k, n] of refs(c)) if (named(k, n) && component(named(k, n)) !== 'migration') fail(p.what, `reads ${k} ${n}, which is not applied with it (label app.kubernetes.io/component: migration)`);
  }
  if (fails === before) ok(`${p.what} applied alone with what it reads`);
}

// Egress only to the backends' addresses: every rule names where it goes, none is the whole
// internet, and no overlay kept the base's documentation address (192.0.2.0/24, RFC 5737).
for (const np of objs.filter((o) => o.kind === 'NetworkPolicy' && (o.spec.policyTypes ?? []).includes('Egress'))) {
  const what = `NetworkPolicy ${np.metadata.name}`;
  const before = fails;
  for (const r of np.spec.egress ?? []) {
    if (!r.to?.length) fail(what, `egress to port ${(r.ports ?? []).map((x) => x.port).join(',') || 'any'} goes anywhere: name its destinations`);
    for (const t of r.to ?? []) {
      const cidr = t.ipBlock?.cidr ?? '';
      if (/\/0$/.test(cidr)) fail(what, `egress to ${cidr}: anywhere`);
      if (/^192\.0\.2\./.test(cidr)) fail(what, `egress to ${cidr}, the base's placeholder: the overlay names no address for it`);
      if (t.podSelector && !Object.keys(t.podSelector).length && !t.namespaceSelector) fail(what, 'egress to every pod of the namespace');
    }
  }
  if (fails === before) ok(what);
}

// The processor's key can move money: a pod that holds it reaches DNS, Kafka, the payments
// database and the processor, through the policies made for them, and nothing else (not the
// other databases, Redis or the span collector, which every other tool may reach).
const paymentsEgress = new Set(['allow-dns', 'allow-kafka', 'allow-ot-pay-postgres', 'allow-ot-pay-processor']);
for (const p of pods) {
  const keyed = p.spec.containers.some((c) => (c.env ?? []).some((e) => e.name === 'OT_PAY_KEY'));
  if (!keyed) continue;
  const before = fails;
  for (const c of p.spec.containers) {
    const e = (c.env ?? []).find((x) => x.name === 'OT_PAY_KEY');
    if (e && !e.valueFrom?.secretKeyRef) fail(p.what, `container ${c.name}: OT_PAY_KEY does not come from a Secret`);
  }
  const eg = egressOf(p.labels);
  for (const e of eg) if (!paymentsEgress.has(e.policy)) fail(p.what, `holds the processor's key, and NetworkPolicy ${e.policy} lets it reach port ${e.port}`);
  for (const want of paymentsEgress) if (!eg.some((e) => e.policy === want)) fail(p.what, `holds the processor's key, and no NetworkPolicy ${want} selects it`);
  if (fails === before) ok(`${p.what} holds the processor's key and reaches DNS, Kafka, its database and the processor only`);
}

console.log(fails ? `${fails} failed` : 'all held');
process.exit(fails ? 1 : 0);
