// check.mjs — render every overlay of deploy/k8s and check what comes out, offline.
//
// For each deploy/k8s/overlays/NAME: `kubectl kustomize` renders it, then
//   1. every object is validated against the Kubernetes JSON schemas bundled by the npm package
//      kubernetes-models (core API groups) and @kubernetes-models/prometheus-operator
//      (ServiceMonitor) — ajv validators compiled from the upstream OpenAPI, no network;
//   2. the hardening list of the deployment issue is checked on the rendered objects: no replicas
//      (the HPA scales), rolling update, probes, requests and limits, non-root, read-only root filesystem,
//      capabilities, seccomp, secrets as files through _FILE, preStop + grace period against
//      the 10 s drain, topology spread, Service/Ingress/HPA/PDB/NetworkPolicy/ServiceMonitor
//      wiring, the Namespace, NetworkPolicy peers exactly as written in the sources (kustomize
//      must not rewrite them), the optional monitoring component (ServiceMonitor, and a
//      PrometheusRule equal to the alert table of deploy/README.md), and the overlay-specific parts (dev Redis with AOF and a volume, production TLS
//      sidecar).
// Prints PASS/FAIL lines and ends with "checks: N passed, M failed"; exit 1 on any failure.
// Usage: node tests/k8s/check.mjs [overlay …]   (default: every overlay)
import { spawnSync } from "node:child_process";
import { readdirSync, existsSync, readFileSync, writeFileSync, cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..", "..");
const K8S_DIR = join(ROOT, "deploy", "k8s");
const OVERLAYS_DIR = join(K8S_DIR, "overlays");
const KUBECTL = process.env.KUBECTL || "kubectl";

const DRAIN_MAX_S = 10; // the broker's SIGTERM drain bound (CONTRACT §7)
const GRACE_MARGIN_S = 5; // room left for the kubelet between drain end and SIGKILL
const SECRET_VARS = [
  "BROKER_ENCRYPTION_KEYS", "BROKER_ADMIN_TOKEN",
  "STRIPE_SECRET_KEY_TEST", "STRIPE_SECRET_KEY_LIVE",
  "STRIPE_WEBHOOK_SECRET_TEST", "STRIPE_WEBHOOK_SECRET_LIVE",
];
const REQUIRED_FILE_VARS = ["BROKER_ENCRYPTION_KEYS_FILE", "BROKER_ADMIN_TOKEN_FILE"];
const SHELLS = ["/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "sh", "bash"];
const PUBLIC_PATHS = ["/v1", "/setup", "/oauth", "/webhooks"];
const PRIVATE_PATHS = ["/metrics", "/healthz", "/readyz"];

let passed = 0;
let failed = 0;
let quiet = false; // during the self-test: count, print nothing

function check(name, ok, detail = "") {
  if (ok) passed++;
  else failed++;
  if (quiet) return ok;
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${!ok && detail ? `: ${detail}` : ""}`);
  return ok;
}

// ===== schemas =====

const MODULES = {
  v1: "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "autoscaling/v2": "kubernetes-models/autoscaling/v2",
  "policy/v1": "kubernetes-models/policy/v1",
  "networking.k8s.io/v1": "kubernetes-models/networking.k8s.io/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

async function modelFor(apiVersion, kind) {
  const mod = MODULES[apiVersion];
  if (!mod) return null;
  const m = await import(mod);
  return m[kind] || null;
}

async function validateSchema(obj) {
  const Model = await modelFor(obj.apiVersion, obj.kind);
  if (!Model) return `no schema for ${obj.apiVersion} ${obj.kind}`;
  try {
    new Model(obj).validate();
    return null;
  } catch (e) {
    const errs = (e.errors || []).map((x) => `${x.instancePath} ${x.message}`).join("; ");
    return errs || String(e.message || e);
  }
}

// ===== helpers over the rendered objects =====

function render(overlay, overlaysDir = OVERLAYS_DIR) {
  const r = spawnSync(KUBECTL, ["kustomize", join(overlaysDir, overlay)], {
    encoding: "utf8", timeout: 60000,
  });
  if (r.error || r.status !== 0) {
    return { error: (r.error && r.error.message) || r.stderr.trim() };
  }
  const docs = parseAllDocuments(r.stdout).map((d) => d.toJS()).filter(Boolean);
  return { docs };
}

const find = (docs, kind, name) =>
  docs.find((d) => d.kind === kind && (!name || d.metadata?.name === name));
const labelsMatch = (selector, labels) =>
  !!selector && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

function allContainers(podSpec) {
  return [...(podSpec.initContainers || []), ...(podSpec.containers || [])];
}

function quantityToCores(q) {
  if (q === undefined) return NaN;
  const s = String(q);
  return s.endsWith("m") ? Number(s.slice(0, -1)) / 1000 : Number(s);
}

// The environment a container starts with: envFrom ConfigMaps (rendered) then env.
function effectiveEnv(docs, c) {
  const env = {};
  for (const ef of c.envFrom || []) {
    if (ef.configMapRef) {
      const cm = find(docs, "ConfigMap", ef.configMapRef.name);
      Object.assign(env, cm?.data || {});
    }
    if (ef.secretRef) env[`<secretRef ${ef.secretRef.name}>`] = "";
  }
  for (const e of c.env || []) env[e.name] = e.value !== undefined ? e.value : e.valueFrom;
  return env;
}

// Hardening of one container, under its pod's security context.
function checkContainer(prefix, pod, c) {
  const sc = c.securityContext || {};
  const psc = pod.securityContext || {};
  const r = c.resources || {};
  check(`${prefix}: requests and limits for cpu and memory`,
    !!(r.requests?.cpu && r.requests?.memory && r.limits?.cpu && r.limits?.memory),
    JSON.stringify(r));
  check(`${prefix}: readOnlyRootFilesystem`, sc.readOnlyRootFilesystem === true);
  check(`${prefix}: allowPrivilegeEscalation false`, sc.allowPrivilegeEscalation === false);
  check(`${prefix}: not privileged`, sc.privileged !== true);
  check(`${prefix}: all capabilities dropped, none added`,
    (sc.capabilities?.drop || []).includes("ALL") && !(sc.capabilities?.add || []).length,
    JSON.stringify(sc.capabilities));
  check(`${prefix}: runAsNonRoot`,
    (sc.runAsNonRoot ?? psc.runAsNonRoot) === true && (sc.runAsUser ?? psc.runAsUser) !== 0);
  check(`${prefix}: seccompProfile RuntimeDefault`,
    (sc.seccompProfile?.type ?? psc.seccompProfile?.type) === "RuntimeDefault");
  check(`${prefix}: image pinned (a tag, not latest)`,
    /:[^/]+$/.test(c.image || "") && !/:latest$/.test(c.image), c.image);
}

function checkPodSpec(prefix, pod) {
  const psc = pod.securityContext || {};
  check(`${prefix}: pod runAsNonRoot with a non-zero numeric user`,
    psc.runAsNonRoot === true && Number.isInteger(psc.runAsUser) && psc.runAsUser > 0,
    JSON.stringify(psc));
  check(`${prefix}: pod seccompProfile RuntimeDefault`, psc.seccompProfile?.type === "RuntimeDefault");
  check(`${prefix}: no service account token mounted`, pod.automountServiceAccountToken === false);
  check(`${prefix}: no host namespaces or hostPath volumes`,
    !pod.hostNetwork && !pod.hostPID && !pod.hostIPC &&
    !(pod.volumes || []).some((v) => v.hostPath));
  for (const c of allContainers(pod)) checkContainer(`${prefix}/${c.name}`, pod, c);
}

// ===== the broker =====

function checkBroker(o, docs) {
  const dep = find(docs, "Deployment", "stripe-token-broker");
  if (!check(`${o}: Deployment stripe-token-broker rendered`, !!dep)) return;
  const pod = dep.spec.template.spec;
  const podLabels = dep.spec.template.metadata.labels;
  const broker = pod.containers.find((c) => c.name === "broker");
  if (!check(`${o}: container broker`, !!broker)) return;

  check(`${o}: no replicas in the Deployment (the HPA owns the scale)`, dep.spec.replicas === undefined,
    String(dep.spec.replicas));
  const ru = dep.spec.strategy?.rollingUpdate || {};
  check(`${o}: rolling update with surge and no unavailability`,
    dep.spec.strategy?.type === "RollingUpdate" && String(ru.maxUnavailable) === "0" &&
    ru.maxSurge !== undefined && String(ru.maxSurge) !== "0" && String(ru.maxSurge) !== "0%",
    JSON.stringify(dep.spec.strategy));
  check(`${o}: selector matches the pod template`, labelsMatch(dep.spec.selector.matchLabels, podLabels));

  checkPodSpec(`${o}: broker pod`, pod);

  // probes
  const port = (broker.ports || []).find((p) => p.name === "http");
  const portOk = (p) => p === "http" || p === port?.containerPort;
  check(`${o}: containerPort 8080 named http`, port?.containerPort === 8080);
  check(`${o}: readinessProbe GET /readyz`,
    broker.readinessProbe?.httpGet?.path === "/readyz" && portOk(broker.readinessProbe.httpGet.port));
  check(`${o}: livenessProbe GET /healthz`,
    broker.livenessProbe?.httpGet?.path === "/healthz" && portOk(broker.livenessProbe.httpGet.port));
  check(`${o}: startupProbe GET /healthz`,
    broker.startupProbe?.httpGet?.path === "/healthz" && portOk(broker.startupProbe.httpGet.port));

  // environment and secrets
  const env = effectiveEnv(docs, broker);
  check(`${o}: BROKER_LISTEN=0.0.0.0:8080`, env.BROKER_LISTEN === "0.0.0.0:8080", env.BROKER_LISTEN);
  check(`${o}: BROKER_PUBLIC_URL is https`, /^https:\/\//.test(env.BROKER_PUBLIC_URL || ""));
  check(`${o}: BROKER_THREADS follows the CPU limit`,
    env.BROKER_THREADS?.resourceFieldRef?.resource === "limits.cpu");
  const secretMounts = (broker.volumeMounts || []).filter((m) =>
    (pod.volumes || []).some((v) => v.name === m.name && v.secret));
  const noPlain = SECRET_VARS.filter((n) => env[n] !== undefined);
  check(`${o}: no secret as a plain or secretKeyRef env value`, noPlain.length === 0 &&
    !(broker.env || []).some((e) => e.valueFrom?.secretKeyRef) &&
    !(broker.envFrom || []).some((e) => e.secretRef), noPlain.join(","));
  check(`${o}: required secrets read through _FILE`, REQUIRED_FILE_VARS.every((n) => env[n]));
  const fileVars = Object.keys(env).filter((n) => n.endsWith("_FILE"));
  const badFile = fileVars.filter((n) =>
    !secretMounts.some((m) => m.readOnly === true && String(env[n]).startsWith(m.mountPath + "/")));
  check(`${o}: every _FILE is in a read-only Secret mount`, fileVars.length > 0 && !badFile.length,
    badFile.join(","));
  const both = fileVars.filter((n) => env[n.slice(0, -5)] !== undefined);
  check(`${o}: no variable set both as NAME and NAME_FILE`, !both.length, both.join(","));
  for (const mode of ["TEST", "LIVE"]) {
    const id = env[`STRIPE_CLIENT_ID_${mode}`] !== undefined;
    const key = env[`STRIPE_SECRET_KEY_${mode}_FILE`] !== undefined;
    check(`${o}: ${mode.toLowerCase()} mode has both client id and secret key, or neither`, id === key);
  }
  const secretVol = (pod.volumes || []).find((v) => v.secret);
  check(`${o}: Secret volume files not world-readable`,
    secretVol && (secretVol.secret.defaultMode ?? 0o644) <= 0o440, String(secretVol?.secret?.defaultMode));

  // shutdown timing
  const pre = broker.lifecycle?.preStop;
  let preS = NaN;
  if (pre?.sleep) preS = Number(pre.sleep.seconds);
  else if (pre?.exec?.command) {
    const cmd = pre.exec.command;
    if (!SHELLS.includes(cmd[0]) && /(^|\/)sleep$/.test(cmd[0]) && cmd[0].startsWith("/")) {
      preS = Number(cmd[1]);
    }
  }
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  check(`${o}: preStop sleeps without a shell (the image has none)`, preS > 0,
    JSON.stringify(pre));
  check(`${o}: preStop ${preS} s + drain ${DRAIN_MAX_S} s + ${GRACE_MARGIN_S} s margin fit the grace period ${grace} s`,
    preS + DRAIN_MAX_S + GRACE_MARGIN_S <= grace);

  // topology spread
  const tsc = pod.topologySpreadConstraints || [];
  for (const key of ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]) {
    const t = tsc.find((x) => x.topologyKey === key);
    check(`${o}: topology spread over ${key}`, !!t && labelsMatch(t.labelSelector?.matchLabels, podLabels));
  }

  // Service
  const svc = find(docs, "Service", "stripe-token-broker");
  check(`${o}: Service selects the broker pods`, !!svc && labelsMatch(svc.spec.selector, podLabels));
  const svcPort = svc?.spec.ports.find((p) => p.name === "http");
  check(`${o}: Service port http targets the container port`,
    !!svcPort && (svcPort.targetPort === "http" || svcPort.targetPort === 8080));

  // Ingress
  const ing = find(docs, "Ingress", "stripe-token-broker");
  if (check(`${o}: Ingress rendered`, !!ing)) {
    const tlsHosts = (ing.spec.tls || []).flatMap((t) => t.hosts || []);
    const rules = ing.spec.rules || [];
    check(`${o}: Ingress TLS covers every host`, rules.length > 0 && (ing.spec.tls || []).every((t) => t.secretName) &&
      rules.every((r) => tlsHosts.includes(r.host)), JSON.stringify(ing.spec.tls));
    const paths = rules.flatMap((r) => r.http?.paths || []);
    const routed = (p) => paths.some((x) => x.backend?.service?.name === svc?.metadata.name &&
      (x.pathType === "Prefix" ? p === x.path || p.startsWith(x.path.replace(/\/$/, "") + "/") : p === x.path));
    check(`${o}: Ingress routes the API, setup pages, OAuth callback and webhooks`,
      ["/v1/orgs/x/access-token", "/setup", "/setup/authorize", "/oauth/callback", "/webhooks/stripe",
        "/openapi.yaml"].every(routed));
    check(`${o}: Ingress does not expose /metrics, /healthz, /readyz`, !PRIVATE_PATHS.some(routed));
    check(`${o}: Ingress backends use the Service's port`, paths.every((x) =>
      svc?.spec.ports.some((p) => p.name === x.backend?.service?.port?.name || p.port === x.backend?.service?.port?.number)));
  }

  // HPA
  const hpa = find(docs, "HorizontalPodAutoscaler");
  check(`${o}: HPA scales the Deployment from 3 up`, !!hpa &&
    hpa.spec.scaleTargetRef.kind === "Deployment" && hpa.spec.scaleTargetRef.name === dep.metadata.name &&
    hpa.spec.minReplicas >= 3 && hpa.spec.maxReplicas > hpa.spec.minReplicas);

  // PDB
  const pdb = find(docs, "PodDisruptionBudget");
  check(`${o}: PDB selects the broker pods and allows one disruption`, !!pdb &&
    labelsMatch(pdb.spec.selector.matchLabels, podLabels) &&
    (pdb.spec.maxUnavailable === 1 || (pdb.spec.minAvailable !== undefined && pdb.spec.minAvailable < hpa?.spec.minReplicas)));

  // NetworkPolicy
  const np = docs.find((d) => d.kind === "NetworkPolicy" && labelsMatch(d.spec.podSelector.matchLabels, podLabels));
  if (check(`${o}: NetworkPolicy selects the broker pods`, !!np)) {
    check(`${o}: NetworkPolicy restricts ingress and egress`,
      ["Ingress", "Egress"].every((t) => (np.spec.policyTypes || []).includes(t)));
    const from = (np.spec.ingress || []).flatMap((r) => r.from || []);
    const nsOf = (f) => f.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"];
    check(`${o}: ingress only from the ingress controller and the metrics scraper`,
      from.length === 2 && from.every((f) => f.namespaceSelector && f.podSelector && !f.ipBlock) &&
      from.some((f) => /ingress/.test(nsOf(f))) && from.some((f) => /monitoring/.test(nsOf(f))) &&
      (np.spec.ingress || []).every((r) => (r.ports || []).length > 0), JSON.stringify(from));
    const egress = np.spec.egress || [];
    const ports = (r) => (r.ports || []).map((p) => p.port);
    check(`${o}: every egress rule names its destination and ports`,
      egress.every((r) => (r.to || []).length > 0 && (r.ports || []).length > 0));
    check(`${o}: egress to DNS`, egress.some((r) => ports(r).includes(53) &&
      (r.ports || []).some((p) => p.protocol === "UDP")));
    check(`${o}: egress to HTTPS (Stripe) on public addresses only`, egress.some((r) =>
      ports(r).length === 1 && ports(r)[0] === 443 &&
      (r.to || []).every((t) => t.ipBlock && (t.ipBlock.except || []).includes("10.0.0.0/8"))));
    check(`${o}: egress to Redis`, egress.some((r) => ports(r).some((p) => p === 6379 || p === 6380)));
    check(`${o}: no other egress`, egress.every((r) => ports(r).every((p) => [53, 443, 6379, 6380].includes(p))));
  }

  checkPeers(o, docs);

  // ServiceMonitor and PrometheusRule: only from the optional component, where an overlay lists it
  const withMonitoring = /components\/monitoring/.test(
    readFileSync(join(OVERLAYS_DIR, o, "kustomization.yaml"), "utf8").replace(/#.*$/gm, ""));
  const operatorObjs = docs.filter((d) => d.apiVersion === "monitoring.coreos.com/v1");
  if (!withMonitoring) {
    check(`${o}: no Prometheus Operator object without the monitoring component`, operatorObjs.length === 0,
      operatorObjs.map((d) => d.kind).join(","));
  } else {
    const sm = find(docs, "ServiceMonitor");
    check(`${o}: ServiceMonitor scrapes /metrics on the Service's http port`, !!sm && !!svc &&
      labelsMatch(sm.spec.selector.matchLabels, svc.metadata.labels) &&
      sm.spec.endpoints.some((e) => e.port === "http" && e.path === "/metrics"));
    checkAlerts(o, docs);
  }

  return { dep, pod, broker, env };
}

// ===== NetworkPolicy peers: rendered exactly as written =====

// A canonical string of a JSON value (object keys sorted).
function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

// Every peer (an element of a `from` or `to` list) written in the sources under deploy/k8s:
// the YAML files and the inline patches of the kustomizations.
function writtenPeers() {
  const peers = new Set();
  const walk = (v) => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (!v || typeof v !== "object") return;
    for (const [k, x] of Object.entries(v)) {
      if ((k === "from" || k === "to") && Array.isArray(x)) {
        x.forEach((p) => peers.add(canon(p)));
      } else if (k === "patch" && typeof x === "string") {
        parseAllDocuments(x).forEach((d) => walk(d.toJS()));
      } else walk(x);
    }
  };
  const files = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [join(dir, e.name)] : []);
  for (const f of files(K8S_DIR)) parseAllDocuments(readFileSync(f, "utf8")).forEach((d) => walk(d.toJS()));
  return peers;
}
const WRITTEN_PEERS = writtenPeers();

// kustomize's labels with includeSelectors: true rewrote the peers' pod selectors (ingress-nginx,
// Prometheus, kube-dns became the broker's own labels): no traffic on a cluster that enforces it.
function checkPeers(o, docs) {
  const bad = [];
  let n = 0;
  for (const np of docs.filter((d) => d.kind === "NetworkPolicy")) {
    const peers = [...(np.spec.ingress || []).flatMap((r) => r.from || []),
      ...(np.spec.egress || []).flatMap((r) => r.to || [])];
    for (const p of peers) {
      n++;
      if (!WRITTEN_PEERS.has(canon(p))) bad.push(`${np.metadata.name}: ${canon(p)}`);
    }
  }
  check(`${o}: all ${n} NetworkPolicy peer selectors exactly as written in deploy/k8s`, n > 0 && !bad.length,
    bad.join("; "));
}

// ===== alerts: the PrometheusRule carries the table of deploy/README.md =====

function readmeAlerts() {
  const text = readFileSync(join(ROOT, "deploy", "README.md"), "utf8");
  const sec = text.split("### Metrics worth alerting on")[1] || "";
  const rows = [];
  for (const line of sec.split("\n").slice(1)) {
    if (!line.startsWith("|")) {
      if (rows.length) break;
      continue;
    }
    const cells = line.trim().slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim());
    const m = /^`(.*)`(?: for (\w+))?$/.exec(cells[1] || "");
    if (m) rows.push({ name: cells[0], expr: m[1].replace(/\\\|/g, "|"), for: m[2] });
  }
  return rows;
}
const README_ALERTS = readmeAlerts();

function checkAlerts(o, docs) {
  const rule = find(docs, "PrometheusRule");
  if (!check(`${o}: PrometheusRule rendered`, !!rule)) return;
  const rules = (rule.spec.groups || []).flatMap((g) => g.rules || []);
  check(`${o}: deploy/README.md's alert table read (${README_ALERTS.length} rows)`, README_ALERTS.length >= 10);
  const missing = README_ALERTS.filter((a) => !rules.some((r) => r.alert && r.expr === a.expr && r.for === a.for));
  check(`${o}: PrometheusRule has every alert of deploy/README.md (same expression and duration)`,
    !missing.length, missing.map((a) => a.name).join(", "));
  check(`${o}: PrometheusRule has no alert the README does not list`, rules.length === README_ALERTS.length,
    `${rules.length} rules`);
}

// ===== overlay-specific =====

function checkDev(o, docs, b) {
  const sts = find(docs, "StatefulSet");
  if (!check(`${o}: Redis StatefulSet`, !!sts)) return;
  checkPodSpec(`${o}: redis pod`, sts.spec.template.spec);
  const conf = docs.filter((d) => d.kind === "ConfigMap").map((d) => Object.values(d.data || {}).join("\n")).join("\n");
  check(`${o}: Redis AOF on`, /^\s*appendonly\s+yes\s*$/m.test(conf));
  check(`${o}: Redis data on a persistent volume`,
    (sts.spec.volumeClaimTemplates || []).some((v) => sts.spec.template.spec.containers[0].volumeMounts
      .some((m) => m.name === v.metadata.name)));
  const svc = docs.find((d) => d.kind === "Service" && labelsMatch(d.spec.selector, sts.spec.template.metadata.labels));
  check(`${o}: broker's BROKER_REDIS_URL names the Redis Service`, !!svc &&
    new RegExp(`^redis://${svc.metadata.name}(\\.|:)`).test(b.env.BROKER_REDIS_URL || ""), b.env.BROKER_REDIS_URL);
  const rnp = docs.find((d) => d.kind === "NetworkPolicy" && labelsMatch(d.spec.podSelector.matchLabels, sts.spec.template.metadata.labels));
  check(`${o}: Redis accepts only the broker pods`, !!rnp && (rnp.spec.ingress || []).length === 1 &&
    rnp.spec.ingress[0].from.every((f) => labelsMatch(f.podSelector?.matchLabels, b.pod && b.dep.spec.template.metadata.labels)));
}

function checkProduction(o, docs, b) {
  const side = (b.pod.initContainers || []).find((c) => c.restartPolicy === "Always");
  if (!check(`${o}: TLS tunnel runs as a native sidecar`, !!side)) return;
  check(`${o}: sidecar is probed before the broker starts`, !!side.startupProbe?.tcpSocket);
  check(`${o}: BROKER_REDIS_URL comes from a Secret file`, !!b.env.BROKER_REDIS_URL_FILE && b.env.BROKER_REDIS_URL === undefined);
  const vol = (b.pod.volumes || []).find((v) => (side.volumeMounts || []).some((m) => m.name === v.name) && v.configMap);
  const cm = vol && find(docs, "ConfigMap", vol.configMap.name);
  const conf = cm ? Object.values(cm.data || {}).join("\n") : "";
  check(`${o}: tunnel is a TLS client on 127.0.0.1:6379`, /^client\s*=\s*yes/m.test(conf) &&
    /^accept\s*=\s*127\.0\.0\.1:6379/m.test(conf));
  check(`${o}: tunnel verifies the Redis certificate and host name`,
    /^verifyChain\s*=\s*yes/m.test(conf) && /^checkHost\s*=\s*\S+/m.test(conf) && /^CAfile\s*=/m.test(conf));
  check(`${o}: tunnel writes no pid file (read-only root)`, /^pid\s*=\s*$/m.test(conf) && /^foreground\s*=\s*yes/m.test(conf));
  check(`${o}: live mode enabled with its secret files`,
    !!b.env.STRIPE_CLIENT_ID_LIVE && !!b.env.STRIPE_SECRET_KEY_LIVE_FILE && !!b.env.STRIPE_WEBHOOK_SECRET_LIVE_FILE);
  check(`${o}: images come from a registry`, allContainers(b.pod).every((c) => !c.image.startsWith("localhost/")));
}

// ===== self-test: the checks must catch broken manifests =====

// Run fn on a mutated deep copy of docs, silently; true when it reported at least one failure.
async function catches(docs, mutate, fn) {
  const copy = structuredClone(docs);
  mutate(copy);
  const [p0, f0] = [passed, failed];
  quiet = true;
  try {
    await fn(copy);
  } catch {
    failed++;
  } finally {
    quiet = false;
  }
  const caught = failed > f0;
  [passed, failed] = [p0, f0];
  return caught;
}

async function selfTest(o, docs) {
  const brokerOf = (d) => find(d, "Deployment", "stripe-token-broker").spec.template.spec;
  const hard = (d) => checkBroker(o, d);
  const schema = async (d) => {
    for (const x of d) {
      const err = await validateSchema(x);
      if (err) check("schema", false, err);
    }
  };
  const cases = [
    ["a string where the schema wants an integer", (d) => { find(d, "Deployment").spec.replicas = "3"; }, schema],
    ["a container without a name", (d) => { delete brokerOf(d).containers[0].name; }, schema],
    ["a writable root filesystem", (d) => { brokerOf(d).containers[0].securityContext.readOnlyRootFilesystem = false; }, hard],
    ["a capability added", (d) => { brokerOf(d).containers[0].securityContext.capabilities.add = ["NET_ADMIN"]; }, hard],
    ["a secret as a plain env value", (d) => { brokerOf(d).containers[0].env.push({ name: "BROKER_ADMIN_TOKEN", value: "x" }); }, hard],
    ["a grace period shorter than preStop + drain", (d) => { brokerOf(d).terminationGracePeriodSeconds = 12; }, hard],
    ["a shell in preStop", (d) => { brokerOf(d).containers[0].lifecycle.preStop.exec.command = ["/bin/sh", "-c", "sleep 5"]; }, hard],
    ["egress open to everything", (d) => { d.find((x) => x.kind === "NetworkPolicy").spec.egress.push({}); }, hard],
    ["/metrics routed by the Ingress", (d) => { find(d, "Ingress").spec.rules[0].http.paths.push({ path: "/", pathType: "Prefix", backend: { service: { name: "stripe-token-broker", port: { name: "http" } } } }); }, hard],
    ["maxUnavailable 1 in the rollout", (d) => { find(d, "Deployment").spec.strategy.rollingUpdate.maxUnavailable = 1; }, hard],
    ["replicas in the Deployment", (d) => { find(d, "Deployment").spec.replicas = 3; }, hard],
    ["a peer selector widened by the common labels", (d) => {
      const np = find(d, "NetworkPolicy", "stripe-token-broker");
      Object.assign(np.spec.ingress[0].from[0].podSelector.matchLabels, { "app.kubernetes.io/name": "stripe-token-broker" });
    }, hard],
  ];
  if (find(docs, "PrometheusRule")) {
    cases.push(["an alert of the README missing", (d) => { find(d, "PrometheusRule").spec.groups[0].rules.pop(); }, hard]);
    cases.push(["an alert with another duration", (d) => { find(d, "PrometheusRule").spec.groups[0].rules[0].for = "1m"; }, hard]);
  }
  for (const [what, mutate, fn] of cases) {
    check(`${o}: self-test: the checks catch ${what}`, await catches(docs, mutate, fn));
  }
}

// ===== main =====

const wanted = process.argv.slice(2);
const overlays = wanted.length ? wanted : readdirSync(OVERLAYS_DIR).filter((d) =>
  existsSync(join(OVERLAYS_DIR, d, "kustomization.yaml"))).sort();
check("overlays found (dev, production)", ["dev", "production"].every((x) => overlays.includes(x) || wanted.length));

for (const o of overlays) {
  const r = render(o);
  if (!check(`${o}: kubectl kustomize renders`, !r.error, r.error)) continue;
  const docs = r.docs;
  let schemaFail = 0;
  for (const d of docs) {
    const err = await validateSchema(d);
    if (err) {
      schemaFail++;
      check(`${o}: schema ${d.kind}/${d.metadata?.name}`, false, err);
    }
  }
  check(`${o}: all ${docs.length} objects valid against the Kubernetes schemas`, schemaFail === 0);
  const ns = find(docs, "Namespace");
  check(`${o}: the overlay's Namespace rendered, enforcing Pod Security "restricted"`, !!ns &&
    ns.metadata.labels?.["pod-security.kubernetes.io/enforce"] === "restricted");
  const scoped = docs.filter((d) => d.kind !== "Namespace");
  check(`${o}: every other object in that namespace`,
    !!ns && scoped.every((d) => d.metadata?.namespace === ns.metadata.name),
    scoped.filter((d) => d.metadata?.namespace !== ns?.metadata.name).map((d) => d.kind).join(","));
  const b = checkBroker(o, docs);
  if (!b) continue;
  await selfTest(o, docs);
  if (o === "dev") checkDev(o, docs, b);
  if (o === "production") checkProduction(o, docs, b);
}

// The broken variant that was shipped: the base's labels with includeSelectors: true, rendered
// from a copy of deploy/k8s; the peer check must catch it.
{
  const tmp = mkdtempSync(join(tmpdir(), "stb-k8s-"));
  try {
    cpSync(K8S_DIR, tmp, { recursive: true });
    const kf = join(tmp, "base", "kustomization.yaml");
    const text = readFileSync(kf, "utf8");
    const broken = text.replace(/includeSelectors: false/, "includeSelectors: true");
    writeFileSync(kf, broken);
    const r = render(overlays[0], join(tmp, "overlays"));
    const name = `self-test: peer selectors rewritten by includeSelectors: true (${relative(ROOT, K8S_DIR)} copy) are caught`;
    if (broken === text || r.error) check(name, false, r.error || "includeSelectors: false not found");
    else check(name, await catches(r.docs, () => {}, (d) => checkPeers(overlays[0], d)));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

console.log(`checks: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
