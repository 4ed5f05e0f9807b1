"""What tests/chart_test.py (helm template, no cluster) and
tests/kube/test_real.py (helm install into a real API server) share: running
helm with its state kept in a scratch directory, values files, and the
agent's options as `spotd --help` lists them."""
import json
import os
import re
import subprocess
import tempfile

# Options the chart sets from first-class values (or itself): value path.
RESERVED = {
    "node-name": None, "health-addr": None, "health-max-connections": "health.maxConnections",
    "dry-run": "dryRun", "force-delete": "forceDelete", "log-format": "logFormat", "log-level": "logLevel",
}


def run_helm(helm, tmp, args, kubeconfig="/nonexistent", timeout=180):
    """helm ARGS with its cache, config and data under tmp (nothing of the
    user's), talking to kubeconfig's cluster (none by default)."""
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, KUBECONFIG=kubeconfig, HELM_CACHE_HOME=tmp + "/hc",
                                   HELM_CONFIG_HOME=tmp + "/hcfg", HELM_DATA_HOME=tmp + "/hd"))


def values_file(tmp, values):
    """A values file for -f: JSON, which helm reads as the YAML it is."""
    fd, path = tempfile.mkstemp(suffix=".json", dir=tmp)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f)
    return path


def agent_options(spotd):
    """(name, env, default) of every option `spotd --help` lists."""
    out = subprocess.run([spotd, "--help"], capture_output=True, text=True, timeout=10, env={}).stdout
    return re.findall(r"^  --(\S+)\s.*\n\s+env (SPOTD_\S+), default \"(.*)\"$", out, re.M)


def every_option_config(opts, chart, reserved):
    """config: with every option of opts not in reserved at its default,
    typed as the chart's values.schema.json says."""
    cprops = json.load(open(os.path.join(chart, "values.schema.json")))["properties"]["config"]["properties"]
    config = {}
    for name, _, default in opts:
        if name in reserved:
            continue
        t = cprops[name].get("type")
        config[name] = (default == "true") if t == "boolean" else int(default) if t == "integer" else default
    return config
