#!/usr/bin/env python3
"""Sends the same requests to the real API server (kubeenv.py) and to the
simulator (tests/sim k8s-sim), seeded with the same objects, and prints where
the answers differ: status code, Status reason, message, details.

    python3 tests/kube/sim_compare.py --build BUILD_DIR [--env DIR/env]

Without --env it starts (and stops) its own control plane. The requests are
the ones spotd sends and the answers k8s_sim.c models (its header comment:
"what the real API server rejects ... is rejected here with the same code and
Status reason"). Exit 0 whatever differs: this reports, tests/kube/README.md
lists the findings.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kubeclient  # noqa: E402
import kubeenv  # noqa: E402

TM = "component=taskmanager,type=flink-native-kubernetes,app=flink"


def labels(s):
    return dict(kv.split("=", 1) for kv in s.split(","))


def seed_real(c):
    def post(path, body):
        try:
            c.post(path, body)
        except kubeclient.ApiError as e:
            if e.code != 409:
                raise
    post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flink"}})
    post("/api/v1/namespaces/flink/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
    for name, lab in (("tm-1", TM), ("tm-2", TM), ("web", "app=web"), ("free", "app=free"), ("free2", "app=free"),
                      ("free3", "app=free")):
        post("/api/v1/namespaces/flink/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels(lab)},
            "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 30, "automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "x"}]}})
    for name, sel, mina in (("tm", {"component": "taskmanager"}, 2), ("web-1", {"app": "web"}, 0), ("web-2", {"app": "web"}, 0)):
        post("/apis/policy/v1/namespaces/flink/poddisruptionbudgets", {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
            "spec": {"minAvailable": mina, "selector": {"matchLabels": sel}}})
    end = time.time() + 30
    while time.time() < end:
        p = c.get("/apis/policy/v1/namespaces/flink/poddisruptionbudgets/tm")
        pods = [c.get(f"/api/v1/namespaces/flink/pods/{n}") for n in ("tm-1", "tm-2")]
        if p.get("status", {}).get("currentHealthy") == 2 and all(x["status"].get("phase") == "Running" for x in pods):
            return
        time.sleep(0.3)
    raise SystemExit("the real server's PDB never settled")


def start_sim(build, tmp):
    argv = [os.path.join(build, "tests", "sim", "k8s-sim"), "--dir", tmp, "--node", "node-a:kubernetes.io/hostname=node-a"]
    for name, lab in (("tm-1", TM), ("tm-2", TM), ("web", "app=web"), ("free", "app=free"), ("free2", "app=free"),
                      ("free3", "app=free")):
        argv += ["--pod", f"flink/{name}:node-a:{lab}:30"]
    argv += ["--pdb", "flink/tm:component=taskmanager:3600000", "--pdb", "flink/web-1:app=web", "--pdb", "flink/web-2:app=web"]
    log = open(os.path.join(tmp, "k8s-sim.log"), "w+")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.time() + 10
    while time.time() < end:
        log.seek(0)
        m = re.search(r"listening on (\S+) ca=(\S+) token-file=(\S+)", log.read())
        if m:
            tok = open(m.group(3)).read().strip()
            c = kubeclient.Client(m.group(1), m.group(2), token=tok)
            c.cafile = m.group(2)
            return p, c
        time.sleep(0.1)
    p.kill()
    raise SystemExit("k8s-sim did not start")


def ev(name, ns="flink", **kw):
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    body.update(kw)
    return body


def event(name, ns="default", io=None, **kw):
    body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "involvedObject": io or {"kind": "Node", "name": "node-a", "apiVersion": "v1"},
            "reason": "SpotdTest", "message": "a test", "type": "Normal", "source": {"component": "spotd"},
            "firstTimestamp": "2026-12-01T10:00:00Z", "lastTimestamp": "2026-12-01T10:00:00Z", "count": 1}
    body.update(kw)
    return body


JSON, MERGE = "application/json", "application/merge-patch+json"
EVICT = "/api/v1/namespaces/flink/pods/{}/eviction"
# (what, method, path, content type, body, uid precondition of which pod)
CASES = [
    ("GET a missing node", "GET", "/api/v1/nodes/nope", None, None),
    ("PATCH node, stale metadata.resourceVersion", "PATCH", "/api/v1/nodes/node-a", MERGE,
     {"metadata": {"resourceVersion": "1"}, "spec": {"unschedulable": True}}),
    ("PATCH node as application/json", "PATCH", "/api/v1/nodes/node-a", JSON, {"spec": {"unschedulable": True}}),
    ("PATCH node, taint effect Evict", "PATCH", "/api/v1/nodes/node-a", MERGE,
     {"spec": {"taints": [{"key": "spotd.io/interruption", "value": "spot", "effect": "Evict"}]}}),
    ("PATCH node, taint without effect", "PATCH", "/api/v1/nodes/node-a", MERGE,
     {"spec": {"taints": [{"key": "spotd.io/interruption", "value": "spot"}]}}),
    ("PATCH node, annotation key with a space", "PATCH", "/api/v1/nodes/node-a", MERGE,
     {"metadata": {"annotations": {"bad key": "x"}}}),
    ("PATCH node, annotation value a number", "PATCH", "/api/v1/nodes/node-a", MERGE,
     {"metadata": {"annotations": {"spotd.io/x": 5}}}),
    ("PATCH node, body not JSON", "PATCH", "/api/v1/nodes/node-a", MERGE, b"{not json"),
    ("list pods, unsupported field selector", "GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx", None, None),
    ("list pods, malformed label selector", "GET", "/api/v1/pods?labelSelector=a%20in%20", None, None),
    ("list pods, selector on node-a", "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&labelSelector="
     "component%3Dtaskmanager", None, None),
    ("evict, PDB blocks", "POST", EVICT.format("tm-1"), JSON, ev("tm-1")),
    ("evict, two PDBs", "POST", EVICT.format("web"), JSON, ev("web")),
    ("evict, missing pod", "POST", EVICT.format("nope"), JSON, ev("nope")),
    ("evict, name differs from the URL", "POST", EVICT.format("tm-1"), JSON, ev("tm-2")),
    ("evict, namespace differs", "POST", EVICT.format("tm-1"), JSON, ev("tm-1", ns="other")),
    ("evict, kind Pod", "POST", EVICT.format("tm-1"), JSON, {**ev("tm-1"), "kind": "Pod"}),
    ("evict, policy/v1beta1", "POST", EVICT.format("free2"), JSON, {**ev("free2"), "apiVersion": "policy/v1beta1",
                                                                    "deleteOptions": {"dryRun": ["All"]}}),
    ("evict, merge-patch media type", "POST", EVICT.format("tm-1"), MERGE, ev("tm-1")),
    ("evict, uid precondition of another pod", "POST", EVICT.format("free"), JSON,
     ev("free", deleteOptions={"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})),
    # its own pod: accepted, it terminates within 1 s and would be gone for the requests below
    ("evict, gracePeriodSeconds -1", "POST", EVICT.format("free3"), JSON, ev("free3", deleteOptions={"gracePeriodSeconds": -1})),
    ("evict, gracePeriodSeconds a string", "POST", EVICT.format("free"), JSON, ev("free", deleteOptions={"gracePeriodSeconds": "5"})),
    ("evict, accepted", "POST", EVICT.format("free"), JSON, ev("free", deleteOptions={"gracePeriodSeconds": 20})),
    ("evict again, pod terminating", "POST", EVICT.format("free"), JSON, ev("free")),
    ("DELETE pod, uid precondition of another pod", "DELETE", "/api/v1/namespaces/flink/pods/tm-2", JSON,
     {"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}}),
    ("DELETE pod, gracePeriodSeconds=abc", "DELETE", "/api/v1/namespaces/flink/pods/tm-2?gracePeriodSeconds=abc", None, None),
    ("event, valid", "POST", "/api/v1/namespaces/default/events", JSON, event("spotd-test-1")),
    ("event, same name again", "POST", "/api/v1/namespaces/default/events", JSON, event("spotd-test-1")),
    ("event, type Info", "POST", "/api/v1/namespaces/default/events", JSON, event("spotd-test-2", type="Info")),
    ("event, no reason", "POST", "/api/v1/namespaces/default/events", JSON, {**event("spotd-test-3"), "reason": ""}),
    ("event, no source.component", "POST", "/api/v1/namespaces/default/events", JSON, {**event("spotd-test-4"), "source": {}}),
    ("event, node event outside default", "POST", "/api/v1/namespaces/flink/events", JSON, event("spotd-test-5", ns="flink")),
    ("event, pod event, involvedObject.namespace differs", "POST", "/api/v1/namespaces/flink/events", JSON,
     event("spotd-test-6", ns="flink", io={"kind": "Pod", "name": "tm-1", "namespace": "default"})),
    ("event, missing namespace", "POST", "/api/v1/namespaces/nope/events", JSON, event("spotd-test-7", ns="nope")),
    ("event, message of 2000 characters", "POST", "/api/v1/namespaces/default/events", JSON,
     event("spotd-test-8", message="x" * 2000)),
    ("event, bad firstTimestamp", "POST", "/api/v1/namespaces/default/events", JSON,
     event("spotd-test-9", firstTimestamp="yesterday")),
    ("event, generateName", "POST", "/api/v1/namespaces/default/events", JSON,
     {**event(""), "metadata": {"generateName": "spotd-", "namespace": "default"}}),
]

NORM = [(re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uid>"),
        (re.compile(r"ResourceVersion in (precondition|object meta): \d+"), r"ResourceVersion in \1: <rv>")]


def norm(s):
    for r, t in NORM:
        s = r.sub(t, s)
    return s


def answer(c, method, path, ctype, body):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body)
    code, payload = c.request(method, path, data, ctype=ctype or JSON, raw=True)
    try:
        obj = json.loads(payload)
    except ValueError:
        obj = {"_raw": payload[:200].decode(errors="replace")}
    if isinstance(obj, dict) and obj.get("kind") == "Status":
        d = obj.get("details") or {}
        causes = [{k: norm(str(v)) for k, v in x.items()} for x in d.get("causes", [])]
        return {"code": code, "status": obj.get("status"), "reason": obj.get("reason"),
                "message": norm(obj.get("message", "")), "details": {k: v for k, v in d.items() if k != "causes"},
                "causes": causes}
    if isinstance(obj, dict) and obj.get("kind", "").endswith("List"):
        return {"code": code, "kind": obj["kind"], "items": sorted(i["metadata"]["name"] for i in obj["items"])}
    return {"code": code, "kind": obj.get("kind") if isinstance(obj, dict) else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--env", help="DIR/env of a running kubeenv (else one is started)")
    ap.add_argument("--json", help="write the comparison here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="spotd-cmp-") as tmp:
        env = None
        if a.env:
            real = kubeclient.from_env(a.env)
            kv = kubeclient.read_env(a.env)
        else:
            env = kubeenv.KubeEnv(os.path.join(tmp, "kube"), nodes=["node-a"]).start()
            real = env.client()
            kv = env.env
        try:
            seed_real(real)
            simp, sim = start_sim(a.build, tmp)
            try:
                rows = []
                for what, method, path, ctype, body in CASES:
                    r, s = answer(real, method, path, ctype, body), answer(sim, method, path, ctype, body)
                    diff = sorted(k for k in set(r) | set(s) if r.get(k) != s.get(k))
                    rows.append({"case": what, "request": f"{method} {path}", "real": r, "sim": s, "differs": diff})
                    mark = "same" if not diff else "DIFF " + ",".join(diff)
                    print(f"{mark:24} {what}: real {r['code']} {r.get('reason') or ''} / sim {s['code']} {s.get('reason') or ''}")
                    for k in diff:
                        print(f"{'':24}   {k}: real {r.get(k)!r}")
                        print(f"{'':24}   {k}: sim  {s.get(k)!r}")
                # a token the server does not know
                r = answer(kubeclient.Client(kv["KUBE_API"], kv["KUBE_CA"], token="bad"), "GET", "/api/v1/nodes/node-a", None, None)
                s = answer(kubeclient.Client(f"https://{sim.host}:{sim.port}", sim.cafile, token="bad"),
                           "GET", "/api/v1/nodes/node-a", None, None)
                diff = sorted(k for k in set(r) | set(s) if r.get(k) != s.get(k))
                rows.append({"case": "unknown bearer token", "request": "GET /api/v1/nodes/node-a", "real": r, "sim": s,
                             "differs": diff})
                print(f"{'same' if not diff else 'DIFF ' + ','.join(diff):24} unknown bearer token: real {r} / sim {s}")
            finally:
                simp.terminate()
                simp.wait()
        finally:
            if env:
                env.stop()
        ndiff = sum(1 for r in rows if r["differs"])
        print(f"sim-compare: {len(rows)} requests, {len(rows) - ndiff} answered alike, {ndiff} differently")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
