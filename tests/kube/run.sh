#!/usr/bin/env bash
# The real-API-server tests (tests/kube/README.md):
#
#   bash tests/kube/run.sh [BUILD_DIR]
#
# 1. builds or reuses etcd, kube-apiserver, kube-controller-manager
#    (build.sh; KUBE_BUILD_DIR, default <repo>/build/kube);
# 2. needs spotd built in BUILD_DIR (default <repo>/build): agent/spotd,
#    tests/sim/imds-sim, tests/sim/k8s-sim (BUILD_DIR=... bash tests/deps.sh);
# 3. runs test_real.py (the chart with the real helm, spotd under the chart's
#    RBAC) and sim_compare.py (the simulator's answers beside the real ones),
#    each on its own control plane on loopback, stopped at the end.
# Exit status: test_real.py's (sim_compare.py only reports).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
KUBE_BIN=$(bash "$here/build.sh")
export KUBE_BIN
# Debian's python3 with python3-yaml (as tests/chart-test.sh), else python3.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
rc=0
"$py" "$here/test_real.py" --build "$build" --src "$src" || rc=$?
"$py" "$here/sim_compare.py" --build "$build" || true
exit $rc
