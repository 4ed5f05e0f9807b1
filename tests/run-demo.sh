#!/usr/bin/env bash
# The demo: spotd against the bundled simulators on loopback, as a timeline.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/deps.sh"
spotd_install_packages "${SPOTD_PACKAGES[@]}"
spotd_build >/dev/null
exec "${BUILD_DIR:-$here/../build}/tests/spotd-demo"
