#!/bin/bash
# Tool test: the Kubernetes manifests of tools/kubernetes/ (issue 10), parsed
# with PyYAML and checked against the resource.k8s.io/v1 shapes (Kubernetes
# 1.34+) and against what pcifs-kube needs:
#   - every document has a known apiVersion/kind, and the DRA objects use
#     only v1 field names (the v1beta1 shape, or a typo, fails);
#   - the DaemonSet runs pcifs-kube with only the agent's flags
#     (--node-name=$(NODE_NAME) from spec.nodeName), hostPath volumes that
#     cover the registry dir, the DRA socket and state dirs, the control
#     socket's directory and /var/run/cdi, each mounted at its host path;
#     root in the host's user namespace, not privileged; only on nodes
#     labelled pcifs.io/host-daemon=true; the liveness probe tests the
#     registration socket;
#   - the ClusterRole grants exactly what the agent needs (no "*"); the
#     binding and the admission policy name the DaemonSet's ServiceAccount;
#   - the DeviceClass selects driver pcifs.io;
#   - the example claim asks for exactly one pcifs.io device and its opaque
#     config is a pcifs.io/v1 ViewPolicy with only the S6 fields, each of the
#     right type; the pod uses the claim.
# When $PCIFS_BUILD_DIR/pcifs-kube is built, the flags the DaemonSet passes
# must also appear in its --help.
# Negative controls: each check must fail on a copy of the manifests broken
# in the way it guards against.
# Needs: PCIFS_SOURCE_DIR, python3 with yaml (python3-yaml). Exit 77: skipped.
set -u

SRC=${PCIFS_SOURCE_DIR:?PCIFS_SOURCE_DIR not set}
BUILD=${PCIFS_BUILD_DIR:-}
KDIR=$SRC/tools/kubernetes
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
python3 -c 'import yaml' 2>/dev/null || { echo "SKIP: python3-yaml not installed"; exit 77; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; }

cat >"$TMP/check.py" <<'PY'
"""Checks the manifests in argv[1]; prints one 'bad: ...' line per problem,
'flags: ...' with the agent flags the DaemonSet passes; exit 1 on any."""
import json, os, re, sys
import yaml

DIR = sys.argv[1]
problems = []
def bad(msg): problems.append(msg)

# The agent's command line (fs/kube/main.cpp): flag -> default.
AGENT_FLAGS = {
    "node-name": None, "control": "/run/pcifs/control.sock",
    "registry-dir": "/var/lib/kubelet/plugins_registry",
    "plugins-dir": "/var/lib/kubelet/plugins",
    "state-dir": "/var/lib/kubelet/plugins/pcifs.io",
    "api-server": None, "token-file": None, "ca-file": None, "log-level": None,
}
LOG_LEVELS = {"trace", "debug", "info", "warn", "error"}
DRIVER = "pcifs.io"
CDI_DIR = "/var/run/cdi"
KNOWN = {  # file -> the (apiVersion, kind) pairs it may hold
    "daemonset.yaml": {("v1", "Namespace"), ("v1", "ServiceAccount"), ("apps/v1", "DaemonSet")},
    "rbac.yaml": {("rbac.authorization.k8s.io/v1", "ClusterRole"),
                  ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
                  ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
                  ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding")},
    "deviceclass.yaml": {("resource.k8s.io/v1", "DeviceClass")},
    "example.yaml": {("v1", "Namespace"), ("resource.k8s.io/v1", "ResourceClaimTemplate"),
                     ("v1", "Pod")},
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "DeviceClass",
                  "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
# resource.k8s.io/v1 field names (k8s.io/api/resource/v1/types.go).
V1_FIELDS = {
    "DeviceClassSpec": {"selectors", "config", "extendedResourceName"},
    "DeviceSelector": {"cel"},
    "CELDeviceSelector": {"expression"},
    "ResourceClaimTemplateSpec": {"metadata", "spec"},
    "ResourceClaimSpec": {"devices"},
    "DeviceClaim": {"requests", "constraints", "config"},
    "DeviceRequest": {"name", "exactly", "firstAvailable"},
    "ExactDeviceRequest": {"deviceClassName", "selectors", "allocationMode", "count",
                           "adminAccess", "tolerations", "capacity"},
    "DeviceClaimConfiguration": {"requests", "opaque"},
    "OpaqueDeviceConfiguration": {"driver", "parameters"},
}
# The S6 policy fields a claim may set, with their checks.
def is_int(v): return isinstance(v, int) and not isinstance(v, bool)
POLICY = {
    "config_read": lambda v: v in ("full", "header", "none"),
    "config_write": lambda v: isinstance(v, bool),
    "bar_access": lambda v: isinstance(v, bool),
    "mask_addresses": lambda v: isinstance(v, bool),
    "hide": lambda v: isinstance(v, list) and all(x in ("dsn", "vpd") for x in v),
    "doe_protocols": lambda v: isinstance(v, list) and all(
        isinstance(x, str) and re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}", x) for x in v),
    "low_power_access": lambda v: v in ("deny", "wake"),
    "uid": lambda v: is_int(v) and v >= 0,
    "gid": lambda v: is_int(v) and v >= 0,
}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

def fields(obj, shape, where):
    if not isinstance(obj, dict):
        bad(f"{where}: expected an object ({shape})"); return {}
    for k in obj:
        if k not in V1_FIELDS[shape]:
            bad(f"{where}: unknown field '{k}' for resource.k8s.io/v1 {shape}")
    return obj

def under(path, root):
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path == root or path.startswith(root + "/")

for f in sorted(os.listdir(DIR)):
    if f.endswith((".yaml", ".yml")) and f not in KNOWN:
        bad(f"{f}: a manifest this test does not know (add its checks)")
docs = []  # (file, doc)
for f in sorted(KNOWN):
    p = os.path.join(DIR, f)
    try:
        with open(p) as fh:
            loaded = [d for d in yaml.safe_load_all(fh) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        bad(f"{f}: cannot parse: {e}"); continue
    if not loaded:
        bad(f"{f}: no documents")
    for d in loaded:
        if not isinstance(d, dict):
            bad(f"{f}: a document that is not an object"); continue
        key = (d.get("apiVersion"), d.get("kind"))
        if key not in KNOWN[f]:
            bad(f"{f}: unexpected apiVersion/kind {key[0]}/{key[1]}"); continue
        md = d.get("metadata") or {}
        if not md.get("name"):
            bad(f"{f}: {key[1]} without metadata.name")
        if key[1] in CLUSTER_SCOPED and "namespace" in md:
            bad(f"{f}: {key[1]} {md.get('name')} is cluster-scoped but has a namespace")
        if key[1] not in CLUSTER_SCOPED and not md.get("namespace"):
            bad(f"{f}: {key[1]} {md.get('name')} has no namespace")
        docs.append((f, d))

def find(kind, f=None):
    return [d for (ff, d) in docs if d["kind"] == kind and (f is None or ff == f)]

def one(kind, f=None):
    found = find(kind, f)
    if len(found) != 1:
        bad(f"expected one {kind}{' in ' + f if f else ''}, found {len(found)}")
        return None
    return found[0]

# --- DaemonSet, ServiceAccount, Namespace.
sa = one("ServiceAccount", "daemonset.yaml")
ds = one("DaemonSet")
sa_name = sa["metadata"]["name"] if sa else None
sa_ns = sa["metadata"].get("namespace") if sa else None
flags = {}
if ds:
    ns = ds["metadata"].get("namespace")
    if not any(n["metadata"]["name"] == ns for n in find("Namespace", "daemonset.yaml")):
        bad(f"daemonset.yaml: the DaemonSet's namespace {ns} is not created there")
    if ns != sa_ns:
        bad(f"daemonset.yaml: DaemonSet in {ns}, ServiceAccount in {sa_ns}")
    spec = ds.get("spec") or {}
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    if not sel or any(labels.get(k) != v for k, v in sel.items()):
        bad("daemonset.yaml: selector.matchLabels do not match the pod template's labels")
    pod = tmpl.get("spec") or {}
    if pod.get("serviceAccountName") != sa_name:
        bad(f"daemonset.yaml: serviceAccountName {pod.get('serviceAccountName')} != ServiceAccount {sa_name}")
    if pod.get("automountServiceAccountToken") is False:
        bad("daemonset.yaml: the service-account token is not mounted (in-cluster API client)")
    if pod.get("hostUsers") is False:
        bad("daemonset.yaml: hostUsers false: the control socket admits only the host's uid 0")
    if (pod.get("nodeSelector") or {}).get("pcifs.io/host-daemon") != "true":
        bad("daemonset.yaml: nodeSelector lacks pcifs.io/host-daemon: \"true\"")
    if not pod.get("tolerations"):
        bad("daemonset.yaml: no tolerations")
    ctrs = pod.get("containers") or []
    if len(ctrs) != 1:
        bad(f"daemonset.yaml: expected one container, found {len(ctrs)}")
    c = ctrs[0] if ctrs else {}
    cmd = c.get("command") or []
    if not cmd or os.path.basename(cmd[0]) != "pcifs-kube":
        bad(f"daemonset.yaml: the container does not run pcifs-kube (command {cmd})")
    for a in cmd[1:] + (c.get("args") or []):
        m = re.fullmatch(r"--([a-z-]+)=(.*)", str(a))
        if not m:
            bad(f"daemonset.yaml: argument {a!r} is not --FLAG=VALUE"); continue
        if m.group(1) not in AGENT_FLAGS:
            bad(f"daemonset.yaml: --{m.group(1)} is not a pcifs-kube flag"); continue
        if m.group(1) in flags:
            bad(f"daemonset.yaml: --{m.group(1)} given twice")
        flags[m.group(1)] = m.group(2)
    env = {e.get("name"): e for e in c.get("env") or []}
    node_env = ((env.get("NODE_NAME") or {}).get("valueFrom") or {}).get("fieldRef") or {}
    if node_env.get("fieldPath") != "spec.nodeName":
        bad("daemonset.yaml: env NODE_NAME is not the downward API's spec.nodeName")
    if flags.get("node-name", "$(NODE_NAME)") != "$(NODE_NAME)":
        bad(f"daemonset.yaml: --node-name={flags['node-name']}, not $(NODE_NAME)")
    overrides = [k for k in ("api-server", "token-file", "ca-file") if k in flags]
    if overrides and len(overrides) != 3:
        bad(f"daemonset.yaml: {overrides} without the other API-server flags")
    if "log-level" in flags and flags["log-level"] not in LOG_LEVELS:
        bad(f"daemonset.yaml: --log-level={flags['log-level']}")
    path = {k: flags.get(k, v) for k, v in AGENT_FLAGS.items()}
    for k in ("control", "registry-dir", "plugins-dir", "state-dir"):
        if not str(path[k]).startswith("/"):
            bad(f"daemonset.yaml: --{k}={path[k]} is not absolute")
    # Security: root in the host's user namespace, not privileged.
    csc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    if csc.get("privileged"):
        bad("daemonset.yaml: the container is privileged (it needs only root)")
    if csc.get("runAsUser", psc.get("runAsUser")) != 0:
        bad("daemonset.yaml: the agent does not run as uid 0 (the control socket is root-only)")
    if not ((c.get("resources") or {}).get("requests")):
        bad("daemonset.yaml: no resource requests")
    # Volumes: hostPath mounted at its own path; the agent's paths covered.
    host = {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes") or [] if "hostPath" in v}
    mounts = {}
    for m in c.get("volumeMounts") or []:
        if m.get("name") in host:
            if m.get("mountPath") != host[m["name"]]:
                bad(f"daemonset.yaml: hostPath {host[m['name']]} mounted at {m.get('mountPath')}, not at the same path")
            if m.get("subPath"):
                bad(f"daemonset.yaml: hostPath {host[m['name']]} mounted with a subPath")
            if m.get("mountPropagation") == "Bidirectional":
                bad(f"daemonset.yaml: {m.get('mountPath')}: Bidirectional propagation (needs privileged)")
            mounts[m["mountPath"]] = m
    for v in host:
        if host[v] not in mounts:
            bad(f"daemonset.yaml: hostPath volume {v} ({host[v]}) is not mounted")
    need = {
        "the registration dir (--registry-dir)": path["registry-dir"],
        "the DRA socket's dir (--plugins-dir/pcifs.io)": os.path.join(str(path["plugins-dir"]), DRIVER),
        "the checkpoint dir (--state-dir)": path["state-dir"],
        "the control socket's dir (--control)": os.path.dirname(str(path["control"])),
        "the CDI spec dir": CDI_DIR,
    }
    covering = {}
    for what, p in need.items():
        cover = [mp for mp in mounts if under(p, mp)]
        if not cover:
            bad(f"daemonset.yaml: no hostPath mount covers {what}: {p}")
        else:
            covering[what] = max(cover, key=len)
    for what in ("the registration dir (--registry-dir)", "the DRA socket's dir (--plugins-dir/pcifs.io)",
                 "the checkpoint dir (--state-dir)"):
        mp = covering.get(what)
        if mp and mounts[mp].get("readOnly"):
            bad(f"daemonset.yaml: {mp} is read-only; the agent writes {what}")
    mp = covering.get("the control socket's dir (--control)")
    if mp and mounts[mp].get("mountPropagation") != "HostToContainer":
        bad(f"daemonset.yaml: {mp}: not HostToContainer (the pod would keep copies of removed views' mounts)")
    mp = covering.get("the CDI spec dir")
    if mp and not mounts[mp].get("readOnly"):
        bad(f"daemonset.yaml: {mp} is writable; the agent only reads the CDI specs")
    reg_sock = os.path.join(str(path["registry-dir"]), DRIVER + "-reg.sock")
    probe = " ".join(((c.get("livenessProbe") or {}).get("exec") or {}).get("command") or [])
    if reg_sock not in probe:
        bad(f"daemonset.yaml: the liveness probe does not check {reg_sock}")

# --- RBAC.
cr = one("ClusterRole")
need_grants = {("resource.k8s.io", "resourceclaims", v) for v in ("get", "list", "watch")}
need_grants |= {("resource.k8s.io", "resourceslices", v)
                for v in ("get", "list", "watch", "create", "update", "patch", "delete")}
need_grants |= {("", "nodes", "get")}
if cr:
    grants = set()
    for r in cr.get("rules") or []:
        for k in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if any("*" in str(x) for x in r.get(k) or []):
                bad(f"rbac.yaml: ClusterRole rule with a wildcard in {k}: {r}")
        if r.get("nonResourceURLs"):
            bad(f"rbac.yaml: ClusterRole grants non-resource URLs: {r}")
        for g in r.get("apiGroups") or []:
            for res in r.get("resources") or []:
                for v in r.get("verbs") or []:
                    grants.add((g, res, v))
    for g in sorted(need_grants - grants):
        bad(f"rbac.yaml: ClusterRole lacks {g[2]} on {g[1]} ({g[0] or 'core'})")
    for g in sorted(grants - need_grants):
        bad(f"rbac.yaml: ClusterRole grants more than the agent needs: {g[2]} on {g[1]} ({g[0] or 'core'})")
crb = one("ClusterRoleBinding")
if crb and cr:
    ref = crb.get("roleRef") or {}
    if (ref.get("kind"), ref.get("name"), ref.get("apiGroup")) != (
            "ClusterRole", cr["metadata"]["name"], "rbac.authorization.k8s.io"):
        bad(f"rbac.yaml: roleRef {ref} does not name ClusterRole {cr['metadata']['name']}")
    subj = crb.get("subjects") or []
    if subj != [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns}]:
        bad(f"rbac.yaml: binding subjects {subj} are not ServiceAccount {sa_ns}/{sa_name}")
vap = one("ValidatingAdmissionPolicy")
vapb = one("ValidatingAdmissionPolicyBinding")
if vap:
    user = f"system:serviceaccount:{sa_ns}:{sa_name}"
    conds = " ".join(m.get("expression", "") for m in (vap.get("spec") or {}).get("matchConditions") or [])
    if user not in conds:
        bad(f"rbac.yaml: the admission policy does not match {user}")
    rules = ((vap.get("spec") or {}).get("matchConstraints") or {}).get("resourceRules") or []
    if not any("resourceslices" in (r.get("resources") or []) for r in rules):
        bad("rbac.yaml: the admission policy does not match resourceslices")
    if vapb and ((vapb.get("spec") or {}).get("policyName") != vap["metadata"]["name"]
                 or "Deny" not in ((vapb.get("spec") or {}).get("validationActions") or [])):
        bad("rbac.yaml: the policy binding does not Deny with the policy")

# --- DeviceClass.
dc = one("DeviceClass")
dc_name = None
if dc:
    dc_name = dc["metadata"]["name"]
    if dc_name != DRIVER:
        bad(f"deviceclass.yaml: DeviceClass {dc_name}, expected {DRIVER}")
    s = fields(dc.get("spec"), "DeviceClassSpec", "deviceclass.yaml: spec")
    exprs = []
    for i, sel in enumerate(s.get("selectors") or []):
        sel = fields(sel, "DeviceSelector", f"deviceclass.yaml: selectors[{i}]")
        cel = fields(sel.get("cel"), "CELDeviceSelector", f"deviceclass.yaml: selectors[{i}].cel")
        exprs.append(" ".join(str(cel.get("expression", "")).split()))
    if not any(re.fullmatch(r"device\.driver == (['\"])pcifs\.io\1", e) for e in exprs):
        bad(f"deviceclass.yaml: no selector is device.driver == 'pcifs.io' (got {exprs})")

# --- Example: claim template and pod.
rct = one("ResourceClaimTemplate", "example.yaml")
pod = one("Pod", "example.yaml")
policy = {}
if rct:
    where = "example.yaml: ResourceClaimTemplate"
    t = fields(rct.get("spec"), "ResourceClaimTemplateSpec", f"{where} spec")
    cs = fields(t.get("spec"), "ResourceClaimSpec", f"{where} spec.spec")
    dv = fields(cs.get("devices"), "DeviceClaim", f"{where} spec.spec.devices")
    reqs = dv.get("requests") or []
    names = []
    if len(reqs) != 1:
        bad(f"{where}: expected one request, found {len(reqs)}")
    for i, r in enumerate(reqs):
        r = fields(r, "DeviceRequest", f"{where} requests[{i}]")
        names.append(r.get("name"))
        if not DNS_LABEL.fullmatch(str(r.get("name"))):
            bad(f"{where}: request name {r.get('name')!r} is not a DNS label")
        ex = fields(r.get("exactly"), "ExactDeviceRequest", f"{where} requests[{i}].exactly")
        if ex.get("deviceClassName") != dc_name:
            bad(f"{where}: request {r.get('name')} uses class {ex.get('deviceClassName')}, not {dc_name}")
        if ex.get("allocationMode", "ExactCount") != "ExactCount" or ex.get("count", 1) != 1:
            bad(f"{where}: request {r.get('name')} is not for exactly one device")
        for j, sel in enumerate(ex.get("selectors") or []):
            sel = fields(sel, "DeviceSelector", f"{where} requests[{i}].selectors[{j}]")
            fields(sel.get("cel"), "CELDeviceSelector", f"{where} requests[{i}].selectors[{j}].cel")
    cfgs = [fields(x, "DeviceClaimConfiguration", f"{where} config[{i}]")
            for i, x in enumerate(dv.get("config") or [])]
    ours = [x for x in cfgs if (x.get("opaque") or {}).get("driver") == DRIVER]
    if len(ours) != 1:
        bad(f"{where}: expected one opaque config for {DRIVER}, found {len(ours)}")
    for x in ours:
        for n in x.get("requests") or []:
            if n not in names:
                bad(f"{where}: config names request {n!r}, which the claim lacks")
        op = fields(x["opaque"], "OpaqueDeviceConfiguration", f"{where} opaque")
        policy = op.get("parameters") or {}
        if not isinstance(policy, dict):
            bad(f"{where}: opaque parameters are not an object"); policy = {}
        if (policy.get("apiVersion"), policy.get("kind")) != ("pcifs.io/v1", "ViewPolicy"):
            bad(f"{where}: parameters are {policy.get('apiVersion')}/{policy.get('kind')}, not pcifs.io/v1/ViewPolicy")
        for k, v in policy.items():
            if k in ("apiVersion", "kind"):
                continue
            if k not in POLICY:
                bad(f"{where}: ViewPolicy field {k!r} is not one a claim may set")
            elif not POLICY[k](v):
                bad(f"{where}: ViewPolicy {k}: {v!r} has the wrong type or value")
        if len(json.dumps(policy)) > 10 * 1024:
            bad(f"{where}: opaque parameters over 10 KiB")
if pod and rct:
    ps = pod.get("spec") or {}
    claims = {}
    for rc in ps.get("resourceClaims") or []:
        if rc.get("resourceClaimTemplateName") != rct["metadata"]["name"] or "resourceClaimName" in rc:
            bad(f"example.yaml: pod claim {rc.get('name')} is not from template {rct['metadata']['name']}")
        claims[rc.get("name")] = rc
    if pod["metadata"].get("namespace") != rct["metadata"].get("namespace"):
        bad("example.yaml: the pod and the claim template are in different namespaces")
    used = False
    for c in ps.get("containers") or []:
        for cl in (c.get("resources") or {}).get("claims") or []:
            used = True
            if cl.get("name") not in claims:
                bad(f"example.yaml: container {c.get('name')} uses claim {cl.get('name')}, not in the pod's resourceClaims")
        if "lspci" in " ".join(c.get("command") or []) and "-vvv" not in (c.get("command") or []) + (c.get("args") or []):
            bad("example.yaml: lspci runs without -vvv")
    if not used:
        bad("example.yaml: no container uses the claim")
    run_as = (ps.get("securityContext") or {}).get("runAsUser")
    if "uid" in policy and run_as != policy["uid"]:
        bad(f"example.yaml: the pod runs as uid {run_as}, the view's privileged uid is {policy['uid']}")

for p in problems:
    print("bad:", p)
print("flags:", " ".join(f"--{k}" for k in flags))
sys.exit(1 if problems else 0)
PY

# check DIR: runs the checker on DIR, its output in $TMP/out.
check() { python3 "$TMP/check.py" "$1" >"$TMP/out" 2>&1; }

# --- 1. The manifests as committed.
if check "$KDIR"; then
  echo "ok: tools/kubernetes passes every check"
else
  fail "tools/kubernetes:"$'\n'"$(cat "$TMP/out")"
fi
read -r -a ds_flags <<<"$(sed -n 's/^flags: //p' "$TMP/out")"

# --- 2. The flags exist in the agent, when it is built.
AGENT=${BUILD:+$BUILD/pcifs-kube}
if [ -n "$AGENT" ] && [ -x "$AGENT" ]; then
  help=$(timeout 10 "$AGENT" --help 2>&1) || fail "pcifs-kube --help exited $?"
  missing=0
  for f in "${ds_flags[@]}"; do
    grep -q -- "$f\b" <<<"$help" && continue
    fail "the DaemonSet passes $f, which pcifs-kube --help does not list"
    missing=1
  done
  [ "$missing" = 1 ] || echo "ok: pcifs-kube --help lists ${ds_flags[*]}"
else
  echo "note: pcifs-kube not built here; flags checked against the test's list only"
fi

# The image the DaemonSet runs has the agent where the command says.
grep -q '^COPY pcifs-kube /usr/local/bin/pcifs-kube$' "$KDIR/Containerfile" \
  || fail "Containerfile does not install /usr/local/bin/pcifs-kube"
grep -q 'command: \["/usr/local/bin/pcifs-kube"\]' "$KDIR/daemonset.yaml" \
  || fail "daemonset.yaml does not run /usr/local/bin/pcifs-kube"

# --- 3. Negative controls: each broken copy must fail, naming what broke.
# broken NAME FILE SED-EXPR EXPECTED: a copy of the manifests with FILE edited
# by SED-EXPR (which must change it) must fail with EXPECTED in the output.
broken() {
  local name=$1 file=$2 expr=$3 want=$4 dir=$TMP/broken-$1
  mkdir -p "$dir" && cp "$KDIR"/*.yaml "$dir"/
  sed -i -e "$expr" "$dir/$file"
  if cmp -s "$dir/$file" "$KDIR/$file"; then
    fail "control $name: the edit '$expr' changed nothing in $file"
    return
  fi
  if check "$dir"; then
    fail "control $name: the checker passed a broken copy ($file: $expr)"
  elif ! grep -qF -- "$want" "$TMP/out"; then
    fail "control $name: failed, but without '$want':"$'\n'"$(cat "$TMP/out")"
  else
    echo "ok: control $name caught: $(grep -F -- "$want" "$TMP/out" | head -1)"
  fi
}
broken v1beta1 deviceclass.yaml 's|resource.k8s.io/v1$|resource.k8s.io/v1beta1|' \
  'unexpected apiVersion/kind resource.k8s.io/v1beta1/DeviceClass'
broken exact-typo example.yaml 's|exactly:|exact:|' "unknown field 'exact'"
broken cdi-path daemonset.yaml 's|path: /var/run/cdi|path: /etc/cdi|' \
  'mounted at /var/run/cdi, not at the same path'
broken no-cdi daemonset.yaml 's|mountPath: /var/run/cdi|mountPath: /etc/cdi|' \
  'no hostPath mount covers the CDI spec dir'
broken registry daemonset.yaml 's|mountPath: /var/lib/kubelet/plugins_registry|mountPath: /var/lib/kubelet/registry|' \
  'no hostPath mount covers the registration dir'
broken run-pcifs daemonset.yaml 's|--control=/run/pcifs/control.sock|--control=/run/pcifs-other/control.sock|' \
  "no hostPath mount covers the control socket's dir"
broken propagation daemonset.yaml '/mountPropagation: HostToContainer/d' 'not HostToContainer'
broken flag daemonset.yaml 's|--control=|--control-socket=|' '--control-socket is not a pcifs-kube flag'
broken node-env daemonset.yaml 's|fieldPath: spec.nodeName|fieldPath: metadata.name|' \
  'env NODE_NAME is not'
broken privileged daemonset.yaml 's|privileged: false|privileged: true|' 'the container is privileged'
broken wildcard rbac.yaml 's|verbs: \["get"\]|verbs: ["*"]|' 'wildcard in verbs'
broken extra-grant rbac.yaml 's|resources: \["nodes"\]|resources: ["nodes", "secrets"]|' \
  'grants more than the agent needs: get on secrets'
broken missing-grant rbac.yaml 's|"create", "update", "patch", "delete"|"create", "update", "patch"|' \
  'lacks delete on resourceslices'
broken binding rbac.yaml '/^subjects:/,/^roleRef:/s|name: pcifs-kube$|name: pcifs-agent|' \
  'are not ServiceAccount pcifs-system/pcifs-kube'
broken driver deviceclass.yaml "s|device.driver == 'pcifs.io'|device.driver == 'pcifs.example'|" \
  "no selector is device.driver == 'pcifs.io'"
broken policy-field example.yaml 's|low_power_access: deny|allow_dma: true|' \
  "ViewPolicy field 'allow_dma' is not one a claim may set"
broken policy-type example.yaml 's|config_write: false .*|config_write: "no"|' \
  "ViewPolicy config_write: 'no' has the wrong type"
broken policy-kind example.yaml 's|kind: ViewPolicy|kind: GpuConfig|' 'not pcifs.io/v1/ViewPolicy'
broken count example.yaml 's|count: 1|count: 2|' 'is not for exactly one device'
broken pod-claim example.yaml '/^      claims:$/{n;s|- name: pci|- name: gpu|}' \
  'uses claim gpu, not in the pod'

exit $FAILED
