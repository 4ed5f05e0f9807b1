#!/usr/bin/env python3
"""A kubelet stand-in for the real-API-server tests (started by kubeenv.py).

For each node it is given it:
  - registers the Node object (Ready, capacity, InternalIP 127.0.0.1, the
    spot capacity-type label) and re-creates it should it disappear;
  - marks each pod bound to it (spec.nodeName) Running and Ready through the
    status subresource; a pod annotated kubelet-stub.spotd.io/command (a JSON
    argv) gets that process started, with the first container's plain env,
    and goes Succeeded/Failed when it exits by itself; its podIP is
    kubelet-stub.spotd.io/pod-ip when annotated, else 127.0.0.1;
  - finishes graceful deletion: a pod with a deletionTimestamp has its
    process sent SIGTERM, and is deleted with grace 0 (uid precondition) once
    the process has exited, or at the end of its grace period (then SIGKILL).
    A pod without a process is deleted at once, or after
    kubelet-stub.spotd.io/terminate-after seconds (a slow shutdown).

It polls (list every 0.2 s): no watch, no leases, no containers.
"""
import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kubeclient  # noqa: E402

ANN_CMD = "kubelet-stub.spotd.io/command"
ANN_SLOW = "kubelet-stub.spotd.io/terminate-after"
ANN_IP = "kubelet-stub.spotd.io/pod-ip"


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


class Kubelet:
    def __init__(self, client, nodes):
        self.c = client
        self.nodes = set(nodes)
        self.procs = {}      # pod uid -> Popen
        self.term_at = {}    # pod uid -> when the deletion was first seen
        self.done = set()    # uids already deleted by us
        self.running = set()  # uids marked Running

    def register(self, n):
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {
            "kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "eks.amazonaws.com/capacityType": "SPOT"}}}
        try:
            self.c.post("/api/v1/nodes", body)
        except kubeclient.ApiError as e:
            if e.code != 409:
                raise
        t = now()
        res = {"cpu": "4", "memory": "16Gi", "pods": "110"}
        self.c.patch(f"/api/v1/nodes/{n}/status", {"status": {
            "capacity": res, "allocatable": res,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": n}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet stand-in",
                            "lastHeartbeatTime": t, "lastTransitionTime": t}],
            "nodeInfo": {"kubeletVersion": "v1.34.4", "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "stub://1", "kernelVersion": "", "osImage": "", "machineID": "",
                         "systemUUID": "", "bootID": "", "kubeProxyVersion": ""}}})
        log("registered node", n)

    def mark_running(self, pod):
        md, spec = pod["metadata"], pod["spec"]
        uid = md["uid"]
        cmd = (md.get("annotations") or {}).get(ANN_CMD)
        if cmd and uid not in self.procs:
            argv = json.loads(cmd)
            env = dict(os.environ)
            for e in spec["containers"][0].get("env", []):
                if "value" in e:
                    env[e["name"]] = e["value"]
            env.update(POD_NAME=md["name"], POD_NAMESPACE=md["namespace"], NODE_NAME=spec["nodeName"])
            logf = open(f"/tmp/kubelet-stub-{md['namespace']}-{md['name']}.log", "ab")
            self.procs[uid] = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            logf.close()
        # the pod's IP: a loopback address of its own when the test gives one
        # (a TaskManager process bound to it, or a JobManager simulator's
        # TaskManager of that IP), else the node's
        ip = (md.get("annotations") or {}).get(ANN_IP, "127.0.0.1")
        t = now()
        conds = [{"type": k, "status": "True", "lastTransitionTime": t}
                 for k in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        self.patch_status(pod, {
            "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": t, "conditions": conds,
            "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                                   "started": True, "restartCount": 0, "state": {"running": {"startedAt": t}}}
                                  for c in spec["containers"]]})
        self.running.add(uid)
        log("running", md["namespace"], md["name"], "(process %d)" % self.procs[uid].pid if uid in self.procs else "")

    def patch_status(self, pod, status):
        md = pod["metadata"]
        try:
            self.c.patch(f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}/status",
                         {"metadata": {"uid": md["uid"]}, "status": status})
        except kubeclient.ApiError as e:
            if e.code not in (404, 409):
                raise

    def finished(self, pod, rc):
        t = now()
        phase = "Succeeded" if rc == 0 else "Failed"
        self.patch_status(pod, {"phase": phase, "conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "False", "lastTransitionTime": t}],
            "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                                   "restartCount": 0, "state": {"terminated": {"exitCode": rc, "finishedAt": t}}}
                                  for c in pod["spec"]["containers"]]})
        log("process of", pod["metadata"]["name"], "exited", rc, "->", phase)

    def terminate(self, pod):
        md = pod["metadata"]
        uid = md["uid"]
        p = self.procs.get(uid)
        first = uid not in self.term_at
        if first:
            self.term_at[uid] = time.time()
            log("terminating", md["namespace"], md["name"], "grace", md.get("deletionGracePeriodSeconds"))
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = parse_ts(md["deletionTimestamp"])
        if p is not None:
            if p.poll() is None and time.time() < end:
                return
            if p.poll() is None:
                log("grace period over: SIGKILL", md["name"])
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        else:
            slow = (md.get("annotations") or {}).get(ANN_SLOW)
            if slow and time.time() < min(end, self.term_at[uid] + float(slow)):
                return
        try:
            self.c.delete(f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}",
                          {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                           "preconditions": {"uid": uid}})
        except kubeclient.ApiError as e:
            if e.code not in (404, 409):
                raise
        self.done.add(uid)
        self.procs.pop(uid, None)
        log("deleted", md["namespace"], md["name"])

    def step(self):
        for n in self.nodes:
            if not self.c.exists(f"/api/v1/nodes/{n}"):
                self.register(n)
        pods = self.c.get("/api/v1/pods")["items"]
        seen = set()
        for pod in pods:
            md, spec = pod["metadata"], pod["spec"]
            if spec.get("nodeName") not in self.nodes or md["uid"] in self.done:
                continue
            uid = md["uid"]
            seen.add(uid)
            if md.get("deletionTimestamp"):
                self.terminate(pod)
            elif uid not in self.running and pod.get("status", {}).get("phase") in (None, "Pending"):
                self.mark_running(pod)
            elif uid in self.procs and self.procs[uid].poll() is not None:
                self.finished(pod, self.procs.pop(uid).returncode)
        for uid in list(self.procs):
            if uid not in seen:   # deleted behind our back (grace 0 by someone else)
                p = self.procs.pop(uid)
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()

    def shutdown(self, *_):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        sys.exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", required=True)
    ap.add_argument("--nodes", required=True)
    ap.add_argument("--interval", type=float, default=0.2)
    a = ap.parse_args()
    c = kubeclient.from_env(a.env)
    k = Kubelet(c, a.nodes.split(","))
    signal.signal(signal.SIGTERM, k.shutdown)
    signal.signal(signal.SIGINT, k.shutdown)
    while True:
        try:
            k.step()
        except (kubeclient.ApiError, OSError) as e:
            log("error:", e)
            c.close()
        time.sleep(a.interval)


if __name__ == "__main__":
    main()
