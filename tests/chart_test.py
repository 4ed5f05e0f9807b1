#!/usr/bin/env python3
"""Tests of the Helm chart (charts/spotd), run by tests/chart-test.sh.

Renders the chart with helm for several value sets and checks the objects
for what spotd needs of them (host network, DNS policy, probes, security
context, the exact RBAC rules, the environment of every agent option) and
what a working install needs that the API server accepts anyway. The API
server's own rules are checked by the real server: tests/kube/test_real.py
installs the same value sets into a real kube-apiserver.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helmlib  # noqa: E402

A = None  # parsed arguments
RESULTS = {"passed": 0, "failed": 0}

RESERVED = helmlib.RESERVED
KNOWN_KINDS = {
    ("v1", "ServiceAccount"): True, ("v1", "ConfigMap"): True,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): False,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): False,
    ("apps/v1", "DaemonSet"): True, ("monitoring.coreos.com/v1", "PodMonitor"): True,
}  # value: namespaced
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
EXPECTED_RULES = {
    ("", "nodes", "get"), ("", "nodes", "list"), ("", "nodes", "patch"),
    ("", "pods", "get"), ("", "pods", "list"),
    ("", "pods/eviction", "create"), ("", "events", "create"),
}


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def helm(*args, expect_ok=True):
    p = helmlib.run_helm(A.helm, A.tmp, args, timeout=120)
    if expect_ok:
        check(p.returncode == 0, f"helm {' '.join(args)} failed:\n{p.stderr}")
    return p


def values_file(values):
    return helmlib.values_file(A.tmp, values)


def render(values=None, *extra):
    args = ["template", "rel", A.chart, "--namespace", "spotd-system"]
    if values is not None:
        args += ["-f", values_file(values)]
    out = helm(*args, *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objs, kind):
    found = [o for o in objs if o["kind"] == kind]
    check(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0]


def get(d, path, default=None):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


# --- what a working install needs beyond what the API server checks ----------
#
# The structural rules the API server enforces (names, labels, ports, probes'
# periods, volume sources, tolerations, ...) are no longer written out here:
# tests/kube/test_real.py installs every value set below into a real
# kube-apiserver with helm, and its test_chart_server_decides shows, rule by
# rule, that the server rejects what these checks used to catch (39 of 48).
# What stays is what the server accepts but an install must not have (its
# "server accepts" list) and what the server cannot see from a template.

def check_object(o):
    api, kind = o.get("apiVersion"), o.get("kind")
    check((api, kind) in KNOWN_KINDS, f"unknown apiVersion/kind {api}/{kind}")
    md = o.get("metadata") or {}
    name = md.get("name", "")
    where = f"{kind}/{name}"
    if KNOWN_KINDS[(api, kind)]:
        check(md.get("namespace") and DNS1123_LABEL.match(md["namespace"]), f"{where}: namespaced, needs metadata.namespace")
    else:
        check("namespace" not in md, f"{where}: cluster-scoped, has a namespace (the server drops it silently)")
    if kind == "DaemonSet":
        check(len(name) <= 63 and DNS1123_LABEL.match(name), f"{where}: a DaemonSet name must be a DNS label (its pods' names derive from it)")
        check_pod_template(o, where)
    elif kind == "PodMonitor":
        eps = get(o, "spec.podMetricsEndpoints")
        check(isinstance(eps, list) and eps, f"{where}: no podMetricsEndpoints (accepted, scrapes nothing)")


def check_pod_template(ds, where):
    pod = get(ds["spec"], "template.spec")
    for v in pod.get("volumes", []):
        if "hostPath" in v:
            check(v["hostPath"].get("path", "").startswith("/"), f"{where}: hostPath must be absolute")
    for c in pod.get("containers") or []:
        cw = f"{where} container {c.get('name')}"
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            pr = c.get(probe)
            if pr:
                hg = pr.get("httpGet") or {}
                port = hg.get("port")
                check(port in ports or isinstance(port, int), f"{cw}: {probe} port {port} is not a container port")
                check(str(hg.get("path", "")).startswith("/"), f"{cw}: {probe} path")
        names = set()
        for e in c.get("env", []):
            check(ENV_NAME.match(e.get("name", "")), f"{cw}: env name {e.get('name')!r} is no name a shell or spotd reads")
            check(e["name"] not in names, f"{cw}: env {e['name']} twice (the later one silently wins)")
            names.add(e["name"])
        for m in c.get("volumeMounts", []):
            check(m.get("mountPath", "").startswith("/"), f"{cw}: mountPath")


def rules_of(objs):
    triples = set()
    for r in by_kind(objs, "ClusterRole")["rules"]:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    triples.add((g, res, v))
    return triples


def container(objs):
    return by_kind(objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def env_of(objs):
    return {e["name"]: e for e in container(objs).get("env", [])}


def render_and_check(values=None, kinds=None):
    objs = render(values)
    for o in objs:
        check_object(o)
    got = sorted(o["kind"] for o in objs)
    if kinds is not None:
        check(got == sorted(kinds), f"rendered kinds {got}, expected {sorted(kinds)}")
    return objs


BASE_KINDS = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]


# --- the tests ---------------------------------------------------------------

def test_lint():
    helm("lint", "--strict", A.chart)
    for v in ({"forceDelete": True}, {"journal": {"enabled": True}}, {"podMonitor": {"enabled": True}},
              {"grafanaDashboard": {"enabled": True}}, {"dryRun": True}):
        helm("lint", "--strict", A.chart, "-f", values_file(v))


def test_defaults():
    objs = render_and_check(None, BASE_KINDS)
    ds = by_kind(objs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = container(objs)
    check(pod.get("hostNetwork") is True, "hostNetwork must be true (IMDSv2 hop limit)")
    check(pod.get("dnsPolicy") == "ClusterFirstWithHostNet", "dnsPolicy must be ClusterFirstWithHostNet")
    check(pod.get("priorityClassName") == "system-node-critical", "priorityClassName")
    check(pod.get("tolerations") == [{"operator": "Exists"}], f"tolerations {pod.get('tolerations')}")
    sa = by_kind(objs, "ServiceAccount")
    check(pod.get("serviceAccountName") == sa["metadata"]["name"], "the pod must run as the chart's ServiceAccount")
    check(pod.get("automountServiceAccountToken") is True, "the agent needs its token (in-cluster configuration)")
    # Security context: pod and container.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532, f"pod securityContext {psc}")
    check(get(psc, "seccompProfile.type") == "RuntimeDefault", "pod seccompProfile")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    check(csc.get("runAsNonRoot") is True and csc.get("runAsUser") == 65532 and csc.get("runAsGroup") == 65532, f"container user {csc}")
    check(get(csc, "capabilities.drop") == ["ALL"] and not get(csc, "capabilities.add"), "capabilities must drop ALL, add none")
    check(get(csc, "seccompProfile.type") == "RuntimeDefault", "container seccompProfile")
    check(not csc.get("privileged"), "privileged")
    # Probes on the health port, which the agent binds on all addresses.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"http": 9808}, f"ports {ports}")
    check(get(c, "livenessProbe.httpGet.path") == "/healthz" and ports.get(get(c, "livenessProbe.httpGet.port")) == 9808, "liveness /healthz")
    check(get(c, "readinessProbe.httpGet.path") == "/readyz" and ports.get(get(c, "readinessProbe.httpGet.port")) == 9808, "readiness /readyz")
    env = env_of(objs)
    check(env["SPOTD_HEALTH_ADDR"]["value"] == "0.0.0.0:9808", f"SPOTD_HEALTH_ADDR {env['SPOTD_HEALTH_ADDR']}")
    check(get(env["SPOTD_NODE_NAME"], "valueFrom.fieldRef.fieldPath") == "spec.nodeName", "SPOTD_NODE_NAME from the downward API")
    check(env["SPOTD_DRY_RUN"]["value"] == "false" and env["SPOTD_FORCE_DELETE"]["value"] == "false", "dry run and force delete off")
    check(env["SPOTD_LOG_FORMAT"]["value"] == "json", "logFormat")
    check(c.get("args") == ["run"], f"args {c.get('args')}")
    # Resources from the measured footprint; no CPU limit.
    check(c["resources"] == {"requests": {"cpu": "10m", "memory": "24Mi"}, "limits": {"memory": "64Mi"}}, f"resources {c['resources']}")
    # Spot nodes only: two alternative terms.
    terms = get(pod, "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms")
    check(terms == [
        {"matchExpressions": [{"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}]},
        {"matchExpressions": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]},
    ], f"node affinity {terms}")
    check("volumes" not in pod and "volumeMounts" not in c, "no volumes by default")
    # RBAC: exactly these rules, bound to the ServiceAccount.
    check(rules_of(objs) == EXPECTED_RULES, f"rules {sorted(rules_of(objs) ^ EXPECTED_RULES)} differ from the expected")
    crb = by_kind(objs, "ClusterRoleBinding")
    check(crb["roleRef"]["name"] == by_kind(objs, "ClusterRole")["metadata"]["name"], "binding names the ClusterRole")
    check(crb["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "spotd-system"}], "binding subject")
    check(ds["metadata"]["namespace"] == "spotd-system" and sa["metadata"]["namespace"] == "spotd-system", "namespace")


def test_force_delete():
    objs = render_and_check({"forceDelete": True}, BASE_KINDS)
    check(rules_of(objs) == EXPECTED_RULES | {("", "pods", "delete")}, f"forceDelete rules {sorted(rules_of(objs))}")
    check(env_of(objs)["SPOTD_FORCE_DELETE"]["value"] == "true", "SPOTD_FORCE_DELETE")


def test_dry_run():
    objs = render_and_check({"dryRun": True}, BASE_KINDS)
    check(env_of(objs)["SPOTD_DRY_RUN"]["value"] == "true", "SPOTD_DRY_RUN")
    check(rules_of(objs) == EXPECTED_RULES, "dry run keeps the rules")
    notes = helm("install", "rel", A.chart, "--namespace", "spotd-system", "--dry-run=client", "--set", "dryRun=true").stdout
    check("DRY RUN" in notes, "NOTES.txt says dry run")
    notes = helm("install", "rel", A.chart, "--namespace", "spotd-system", "--dry-run=client").stdout
    check("NOTES:" in notes and "DRY RUN" not in notes and "kubectl -n spotd-system" in notes, "NOTES.txt")


def test_journal():
    objs = render_and_check({"journal": {"enabled": True}}, BASE_KINDS)
    pod = by_kind(objs, "DaemonSet")["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    check(vols["journal"]["hostPath"] == {"path": "/run/systemd/journal", "type": "Directory"}, f"journal volume {vols}")
    mounts = {m["name"]: m for m in container(objs)["volumeMounts"]}
    check(mounts["journal"]["mountPath"] == "/run/systemd/journal", "journal mount")
    check(container(objs)["securityContext"]["readOnlyRootFilesystem"] is True, "still read-only")


def test_pod_monitor():
    objs = render_and_check({"podMonitor": {"enabled": True, "labels": {"release": "prom"}}}, BASE_KINDS + ["PodMonitor"])
    pm = by_kind(objs, "PodMonitor")
    tlabels = by_kind(objs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    sel = pm["spec"]["selector"]["matchLabels"]
    check(all(tlabels.get(k) == v for k, v in sel.items()), "PodMonitor selects the agent's pods")
    ep = pm["spec"]["podMetricsEndpoints"][0]
    check(ep["port"] in {p["name"] for p in container(objs)["ports"]} and ep["path"] == "/metrics", f"endpoint {ep}")
    check(pm["metadata"]["labels"].get("release") == "prom", "PodMonitor labels")
    check(pm["spec"]["namespaceSelector"] == {"matchNames": ["spotd-system"]}, "namespaceSelector")


def test_dashboard():
    objs = render_and_check({"grafanaDashboard": {"enabled": True}}, BASE_KINDS + ["ConfigMap"])
    cm = by_kind(objs, "ConfigMap")
    check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "the sidecar's label")
    dash = json.loads(cm["data"]["spotd.json"])
    titles = [p["title"] for p in dash["panels"]]
    for want in ("Notices by kind", "Handling timeline by node", "TaskManager evictions by result", "Rescale outcomes"):
        check(want in titles, f"dashboard has no panel {want!r}: {titles}")
    # Every spotd metric a panel queries is one the agent exports.
    exported = set()
    for root, _, files in os.walk(os.path.join(A.src, "agent")):
        for f in files:
            if f.endswith(".c"):
                exported |= set(re.findall(r'"(spotd_[a-z_]+)', open(os.path.join(root, f)).read()))
    queried = set()
    for p in dash["panels"]:
        for t in p.get("targets", []):
            queried |= set(re.findall(r"\b(spotd_[a-z_]+)", t.get("expr", "")))
    check(queried and queried <= exported, f"the dashboard queries metrics spotd does not export: {sorted(queried - exported)}")
    objs = render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}})
    check(by_kind(objs, "ConfigMap")["metadata"]["namespace"] == "monitoring", "dashboard namespace")


def test_custom_affinity():
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "node.kubernetes.io/lifecycle", "operator": "In", "values": ["spot"]}]}]}}}
    objs = render_and_check({"affinity": aff}, BASE_KINDS)
    check(by_kind(objs, "DaemonSet")["spec"]["template"]["spec"]["affinity"] == aff, "a custom affinity replaces the default")
    objs = render_and_check({"affinity": None}, BASE_KINDS)
    check("affinity" not in by_kind(objs, "DaemonSet")["spec"]["template"]["spec"], "affinity: null removes it")


def test_other_values():
    objs = render_and_check({
        "image": {"repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/spotd", "tag": "1.2.3"},
        "health": {"port": 9100, "bindAddress": "$(HOST_IP)", "maxConnections": 8},
        "serviceAccount": {"name": "agent", "annotations": {"a": "b"}},
        "podAnnotations": {"team": "data"}, "podLabels": {"team": "data"}, "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "extraEnv": [{"name": "SPOTD_WEBHOOK_HEADER", "valueFrom": {"secretKeyRef": {"name": "hook", "key": "header"}}}],
        "extraVolumes": [{"name": "cfg", "configMap": {"name": "spotd-cfg"}}],
        "extraVolumeMounts": [{"name": "cfg", "mountPath": "/etc/spotd", "readOnly": True}],
        "config": {"config": "/etc/spotd/spotd.conf"},
    }, BASE_KINDS)
    c = container(objs)
    env = env_of(objs)
    check(c["image"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/spotd:1.2.3", c["image"])
    check(env["SPOTD_HEALTH_ADDR"]["value"] == "$(HOST_IP):9100" and list(env).index("HOST_IP") < list(env).index("SPOTD_HEALTH_ADDR"),
          "HOST_IP defined before its use")
    check(c["ports"][0]["containerPort"] == 9100 and env["SPOTD_HEALTH_MAX_CONNECTIONS"]["value"] == "8", "health port")
    check(by_kind(objs, "ClusterRoleBinding")["subjects"][0]["name"] == "agent", "serviceAccount.name")
    check(env["SPOTD_CONFIG"]["value"] == "/etc/spotd/spotd.conf" and "SPOTD_WEBHOOK_HEADER" in env, "config file and extraEnv")
    objs = render({"image": {"repository": "r/spotd", "digest": "sha256:" + "a" * 64}})
    check(container(objs)["image"] == "r/spotd@sha256:" + "a" * 64, "digest")
    objs = render_and_check({"serviceAccount": {"create": False, "name": "existing"}, "rbac": {"create": False}}, ["DaemonSet"])
    check(by_kind(objs, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "existing", "existing ServiceAccount")


def agent_options():
    """(name, env, default) of every option `spotd --help` lists."""
    opts = helmlib.agent_options(A.spotd)
    check(len(opts) > 20, "cannot read the options from spotd --help")
    return opts


def test_every_option_reachable():
    opts = agent_options()
    schema = json.load(open(os.path.join(A.chart, "values.schema.json")))
    cprops = schema["properties"]["config"]["properties"]
    names = {n for n, _, _ in opts}
    missing = sorted(names - set(RESERVED) - set(cprops))
    check(not missing, f"values.schema.json documents no config.<option> for {missing}: add them under properties.config.properties")
    stale = sorted(set(cprops) - names)
    check(not stale, f"values.schema.json lists options spotd no longer has: {stale}")
    check(not (set(RESERVED) - names), f"reserved options unknown to spotd: {sorted(set(RESERVED) - names)}")
    # Every option through config:, at its default, typed as the schema says.
    config = helmlib.every_option_config(opts, A.chart, RESERVED)
    objs = render_and_check({"config": config}, BASE_KINDS)
    env = env_of(objs)
    for name, envname, default in opts:
        check(envname in env, f"option --{name} does not reach the agent (no {envname})")
        if name not in RESERVED:
            check(env[envname]["value"] == default, f"{envname}={env[envname]['value']!r}, expected {default!r}")
    # A non-default value of each kind renders as the agent reads it.
    objs = render({"config": {"poll-interval": "250ms", "watch-asg": False, "kube-max-connections": 16,
                              "webhook-url": ["https://a.example/hook", "https://b.example/hook"]}})
    env = env_of(objs)
    check(env["SPOTD_POLL_INTERVAL"]["value"] == "250ms" and env["SPOTD_WATCH_ASG"]["value"] == "false", "values")
    check(env["SPOTD_KUBE_MAX_CONNECTIONS"]["value"] == "16", "integer without exponent")
    check(env["SPOTD_WEBHOOK_URL"]["value"] == "https://a.example/hook\nhttps://b.example/hook", "a list, one per line")
    # The agent itself accepts the rendered environment: no value rejected,
    # no variable unknown to it.
    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    plain["SPOTD_NODE_NAME"] = "ip-10-0-0-1.eu-west-1.compute.internal"
    plain["HOST_IP"] = "10.0.0.1"
    plain["SPOTD_HEALTH_ADDR"] = plain["SPOTD_HEALTH_ADDR"].replace("$(HOST_IP)", plain["HOST_IP"])
    p = subprocess.run([A.spotd, "run", "--help"], capture_output=True, text=True, timeout=10, env=plain)
    check(p.returncode == 0 and "unknown" not in p.stderr and "invalid" not in p.stderr,
          f"spotd rejects the chart's environment (exit {p.returncode}): {p.stderr}")
    objs = render({"config": config})
    plain = {k: e["value"] for k, e in env_of(objs).items() if "value" in e}
    plain["SPOTD_NODE_NAME"] = "node-1"
    p = subprocess.run([A.spotd, "run", "--help"], capture_output=True, text=True, timeout=10, env=plain)
    check(p.returncode == 0 and not p.stderr, f"spotd rejects the environment of every option (exit {p.returncode}): {p.stderr}")


def test_rejected_values():
    # Options with first-class values: the schema rejects them, and the
    # template too when the schema is skipped.
    for key, want in (("dry-run", "set dryRun instead"), ("force-delete", "forceDelete"), ("node-name", "downward API")):
        for extra in ([], ["--skip-schema-validation"]):
            p = helm("template", "rel", A.chart, "-f", values_file({"config": {key: "x"}}), *extra, expect_ok=False)
            check(p.returncode != 0, f"config.{key} was accepted")
            check((want if extra else key) in p.stderr, f"config.{key}: error does not mention {want!r}: {p.stderr}")
    cases = [
        ({"config": {"pol-interval": "1s"}}, "pol-interval"),
        ({"config": {"poll-interval": 5}}, "poll-interval"),
        ({"config": {"rebalance-action": "drain"}}, "rebalance-action"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"health": {"port": 70000}}, "port"),
        ({"forceDelete": "yes"}, "forceDelete"),
        ({"unknownKey": 1}, "unknownKey"),
    ]
    for values, want in cases:
        p = helm("template", "rel", A.chart, "-f", values_file(values), expect_ok=False)
        check(p.returncode != 0, f"{values} was accepted")
        check(want in p.stderr, f"{values}: error does not mention {want!r}: {p.stderr}")


TESTS = [test_lint, test_defaults, test_force_delete, test_dry_run, test_journal, test_pod_monitor,
         test_dashboard, test_custom_affinity, test_other_values, test_every_option_reachable, test_rejected_values]


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True)
    ap.add_argument("--spotd", required=True)
    ap.add_argument("--src", required=True)
    A = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        A.tmp = tmp
        for t in TESTS:
            try:
                t()
                RESULTS["passed"] += 1
                print(f"ok   {t.__name__}")
            except Failure as e:
                RESULTS["failed"] += 1
                print(f"FAIL {t.__name__}: {e}")
    print(f"chart: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
