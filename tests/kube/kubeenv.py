#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback for the tests (tests/kube).

    kubeenv.py start DIR [--nodes a,b]   start, write DIR/env and DIR/kubeconfig
    kubeenv.py stop DIR                  stop everything started, remove DIR

Started, each on free loopback ports:
  etcd                      plain HTTP on 127.0.0.1, data in DIR/etcd
  kube-apiserver            HTTPS with a CA and serving certificate made here
                            with openssl; client certificates, ServiceAccount
                            tokens (issuer, key, signing key), authorization
                            Node,RBAC, the default admission plugins
  kube-controller-manager   --controllers=disruption only, with its own
                            identity (system:kube-controller-manager) and
                            per-controller ServiceAccount credentials, as in
                            a cluster: PodDisruptionBudgets get their status
  kubelet_stub.py           registers the Node objects, marks their pods
                            Running and Ready, finishes graceful deletion

DIR/env (shell syntax, KEY='value') names KUBE_API, KUBE_CA, KUBE_ADMIN_CERT,
KUBE_ADMIN_KEY, KUBECONFIG, the ports and the pids. The binaries come from
tests/kube/build.sh (KUBE_BIN, or the bin directory it prints).

In Python: `with KubeEnv(dir) as env:` starts and stops it (env.client() is an
admin client).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kubeclient  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def openssl_pki(pki):
    """CA, API server serving cert, client certs, ServiceAccount key pair."""
    os.makedirs(pki, exist_ok=True)
    p = lambda n: os.path.join(pki, n)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.crt"),
        "-days", "2", "-subj", "/CN=spotd-test-ca")
    ext = p("server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
                "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
    certs = {"server": ("/CN=kube-apiserver", ext),
             "admin": ("/O=system:masters/CN=spotd-test-admin", None),
             "kcm": ("/CN=system:kube-controller-manager", None)}
    for name, (subj, extfile) in certs.items():
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", p(name + ".key"), "-out", p(name + ".csr"),
            "-subj", subj)
        if extfile is None:
            extfile = p(name + ".ext")
            with open(extfile, "w") as f:
                f.write("extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
        run("openssl", "x509", "-req", "-in", p(name + ".csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
            "-CAcreateserial", "-out", p(name + ".crt"), "-days", "2", "-extfile", extfile)
    run("openssl", "genrsa", "-out", p("sa.key"), "2048")
    run("openssl", "rsa", "-in", p("sa.key"), "-pubout", "-out", p("sa.pub"))


def kubeconfig(path, server, ca, cert, key):
    # JSON is YAML: helm and client-go read it.
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "test", "user": {"client-certificate": cert, "client-key": key}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)


def bin_dir():
    if os.environ.get("KUBE_BIN"):
        return os.environ["KUBE_BIN"]
    out = subprocess.run(["bash", os.path.join(HERE, "build.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


class KubeEnv:
    def __init__(self, d, nodes=("node-a", "node-b")):
        self.dir = os.path.abspath(d)
        self.nodes = list(nodes)
        self.procs = {}
        self.argv = {}
        self.env = {}

    # -- lifecycle --------------------------------------------------------
    def _spawn(self, name, argv, **kw):
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        log.close()
        self.procs[name] = p
        self.argv[name] = (argv, kw)
        with open(os.path.join(self.dir, name + ".pid"), "w") as f:
            f.write(str(p.pid))
        return p

    def _wait(self, what, fn, timeout, proc=None):
        end = time.time() + timeout
        while time.time() < end:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {self.dir}/{what}.log")
            try:
                if fn():
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {timeout}s; see {self.dir}/{what}.log")

    def start(self):
        t0 = time.time()
        if os.path.exists(os.path.join(self.dir, "env")):
            raise RuntimeError(f"{self.dir} holds a running environment (stop it first)")
        os.makedirs(self.dir, exist_ok=True)
        bins = bin_dir()
        pki = os.path.join(self.dir, "pki")
        openssl_pki(pki)
        p = lambda n: os.path.join(pki, n)  # noqa: E731
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        try:
            etcd = self._spawn("etcd", [
                os.path.join(bins, "etcd"), "--name", "test", "--data-dir", os.path.join(self.dir, "etcd"),
                "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"test={peer_url}", "--unsafe-no-fsync", "--log-level", "warn",
                "--quota-backend-bytes", str(1 << 30)])
            self._wait("etcd", lambda: json.load(urllib.request.urlopen(
                etcd_url + "/health", timeout=2)).get("health") == "true", 30, etcd)
            server = f"https://127.0.0.1:{api_port}"
            api = self._spawn("kube-apiserver", [
                os.path.join(bins, "kube-apiserver"),
                "--etcd-servers", etcd_url,
                "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                "--secure-port", str(api_port),
                "--tls-cert-file", p("server.crt"), "--tls-private-key-file", p("server.key"),
                "--client-ca-file", p("ca.crt"),
                "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file", p("sa.pub"),
                "--service-account-signing-key-file", p("sa.key"),
                "--authorization-mode", "Node,RBAC",
                "--service-cluster-ip-range", "10.96.0.0/24",
                "--allow-privileged=true",
                # Every request of anyone but the test's admin and the control
                # plane, at Metadata level: who asked what, and the answer code.
                "--audit-policy-file", self._audit_policy(),
                "--audit-log-path", os.path.join(self.dir, "audit.log"), "--audit-log-format", "json",
                "--profiling=false", "--v=1"])
            admin = kubeclient.Client(server, p("ca.crt"), p("admin.crt"), p("admin.key"), timeout=5)
            self._wait_ready(admin, api, 120)
            kubeconfig(os.path.join(self.dir, "kubeconfig"), server, p("ca.crt"), p("admin.crt"), p("admin.key"))
            kubeconfig(os.path.join(self.dir, "kcm.kubeconfig"), server, p("ca.crt"), p("kcm.crt"), p("kcm.key"))
            self._spawn("kube-controller-manager", [
                os.path.join(bins, "kube-controller-manager"),
                "--kubeconfig", os.path.join(self.dir, "kcm.kubeconfig"),
                "--controllers", "disruption",
                "--use-service-account-credentials=true",
                "--leader-elect=false", "--secure-port", "0", "--profiling=false", "--v=1"])
            self.env = {
                "KUBE_DIR": self.dir, "KUBE_API": server, "KUBE_CA": p("ca.crt"),
                "KUBE_ADMIN_CERT": p("admin.crt"), "KUBE_ADMIN_KEY": p("admin.key"),
                "KUBECONFIG": os.path.join(self.dir, "kubeconfig"),
                "KUBE_ETCD": etcd_url, "KUBE_AUDIT_LOG": os.path.join(self.dir, "audit.log"), "KUBE_NODES": ",".join(self.nodes),
            }
            envfile = os.path.join(self.dir, "env")
            self._write_env(envfile + ".tmp")
            self._spawn("kubelet", [sys.executable, os.path.join(HERE, "kubelet_stub.py"), "--env", envfile + ".tmp",
                                    "--nodes", ",".join(self.nodes)])
            for n in self.nodes:
                self._wait("kubelet", lambda: admin.exists(f"/api/v1/nodes/{n}"), 30, self.procs["kubelet"])
            self._write_env(envfile)
            os.unlink(envfile + ".tmp")
        except BaseException:
            self.stop(remove=False)
            raise
        print(f"kubeenv: up in {time.time() - t0:.1f}s: {server} (env {self.dir}/env)", file=sys.stderr)
        return self

    def _wait_ready(self, admin, proc, timeout):
        self._wait("kube-apiserver", lambda: admin.request("GET", "/readyz", raw=True)[0] == 200, timeout, proc)

    def kill_apiserver(self):
        """SIGKILL kube-apiserver (a control-plane crash: connections reset,
        then refused); restart_apiserver() brings it back."""
        p = self.procs["kube-apiserver"]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def restart_apiserver(self, timeout=120):
        """Starts kube-apiserver again with the same arguments (same port,
        same etcd: every object is still there) and waits until /readyz."""
        argv, kw = self.argv["kube-apiserver"]
        p = self._spawn("kube-apiserver", argv, **kw)
        admin = self.client()
        self._wait_ready(admin, p, timeout)
        admin.close()
        self._write_env(os.path.join(self.dir, "env"))

    def _audit_policy(self):
        path = os.path.join(self.dir, "audit-policy.json")
        with open(path, "w") as f:
            json.dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"], "rules": [
                {"level": "None", "users": ["spotd-test-admin", "system:kube-controller-manager", "system:apiserver"]},
                {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
                {"level": "None", "nonResourceURLs": ["/readyz*", "/healthz*", "/livez*"]},
                {"level": "Metadata"}]}, f)
        return path

    def _write_env(self, path):
        pids = {f"KUBE_PID_{k.upper().replace('-', '_')}": str(p.pid) for k, p in self.procs.items()}
        with open(path, "w") as f:
            for k, v in {**self.env, **pids}.items():
                f.write(f"{k}='{v}'\n")

    def stop(self, remove=True):
        stop(self.dir, remove)

    def client(self, token=None):
        if token:
            return kubeclient.Client(self.env["KUBE_API"], self.env["KUBE_CA"], token=token)
        return kubeclient.Client(self.env["KUBE_API"], self.env["KUBE_CA"], self.env["KUBE_ADMIN_CERT"],
                                 self.env["KUBE_ADMIN_KEY"])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(remove=not os.environ.get("KUBE_KEEP"))


ORDER = ["kubelet", "kube-controller-manager", "kube-apiserver", "etcd"]


def stop(d, remove=True):
    """Stops what DIR's pid files name (each in its own session: the whole
    process group), in reverse start order, then removes DIR."""
    d = os.path.abspath(d)
    for name in ORDER:
        pf = os.path.join(d, name + ".pid")
        if not os.path.exists(pf):
            continue
        pid = int(open(pf).read())
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            os.unlink(pf)
            continue
        end = time.time() + 10
        while time.time() < end:
            try:
                # reap it when it is our child; otherwise just probe
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    pass
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.unlink(pf)
    if remove and os.path.isdir(d):
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["start", "stop"])
    ap.add_argument("dir")
    ap.add_argument("--nodes", default="node-a,node-b")
    ap.add_argument("--keep", action="store_true", help="stop: keep DIR (logs)")
    a = ap.parse_args()
    if a.cmd == "start":
        KubeEnv(a.dir, a.nodes.split(",")).start()
        print(os.path.join(os.path.abspath(a.dir), "env"))
    else:
        stop(a.dir, remove=not a.keep)


if __name__ == "__main__":
    main()
