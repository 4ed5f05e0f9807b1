#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with warnings as
# errors, runs every test under ctest. Needs root (apt, and the journald test's
# mount namespace).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/deps.sh"
spotd_install_packages "${SPOTD_PACKAGES[@]}"
spotd_build
cd "${BUILD_DIR:-$here/../build}"
ctest --output-on-failure --timeout 600 -j2
