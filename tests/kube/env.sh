#!/usr/bin/env bash
# The real control plane for tests on loopback (see kubeenv.py):
#   bash tests/kube/env.sh start DIR   # prints DIR/env; source it for KUBECONFIG etc.
#   bash tests/kube/env.sh stop DIR    # stops everything started, removes DIR
# Builds the binaries first when needed (build.sh; KUBE_BIN overrides).
set -euo pipefail
exec python3 "$(dirname "$0")/kubeenv.py" "$@"
