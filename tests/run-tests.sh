#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with warnings as
# errors, runs every test under ctest (the soak and the valgrind pass
# included), then the suite again in a sanitizer build. Needs root (apt, and
# the journald test's mount namespace).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/deps.sh"
spotd_install_packages "${SPOTD_PACKAGES[@]}"
spotd_build
rc=0
(cd "${BUILD_DIR:-$here/../build}" && ctest --output-on-failure --timeout 600 -j2) || rc=1
# The figures of the soak and of the valgrind pass (ctest shows output only on failure).
sed -n -e '/^soak: spotd polling/,/^soak: /p' -e '/^valgrind: /p' \
  "${BUILD_DIR:-$here/../build}/Testing/Temporary/LastTest.log" 2>/dev/null || true
# The benchmarks' smoke-run verdicts (their figures are in that log).
sed -n '/^benchmarks: /p' "${BUILD_DIR:-$here/../build}/Testing/Temporary/LastTest.log" 2>/dev/null || true
# The mutant check's count and time (tests/mutants/run.sh; its table is in that log).
sed -n '/^mutants: [0-9]* run, /p' "${BUILD_DIR:-$here/../build}/Testing/Temporary/LastTest.log" 2>/dev/null || true

# The real-peer tests: the chart and spotd against a real kube-apiserver, etcd
# and the disruption controller (tests/kube/README.md). The first run builds
# the pinned binaries from their Go modules into build/kube (3 to 12 minutes
# on 2 cores, by load); later runs reuse them.
bash "$here/kube/run.sh" "${BUILD_DIR:-$here/../build}" > "${BUILD_DIR:-$here/../build}/real-kube.log" 2>&1 || {
  rc=1; tail -n 60 "${BUILD_DIR:-$here/../build}/real-kube.log"; }
grep -E '^(real-kube|sim-compare): ' "${BUILD_DIR:-$here/../build}/real-kube.log" || true
# The real-Flink tests: spotd handling one reclaim on a real Flink 1.18.1,
# 1.20.5 and 2.3.0 (tests/flink/README.md); 8 minutes for the three once
# Java, Maven and the jars are there (the first run fetches them).
bash "$here/flink/run.sh" "${BUILD_DIR:-$here/../build}" > "${BUILD_DIR:-$here/../build}/real-flink.log" 2>&1 || {
  rc=1; tail -n 80 "${BUILD_DIR:-$here/../build}/real-flink.log"; }
grep -E '^real-flink: ' "${BUILD_DIR:-$here/../build}/real-flink.log" || true

# The same suite again in an AddressSanitizer + UndefinedBehaviorSanitizer
# build (its own build tree, kept between runs): the test processes and every
# spotd they start are sanitized (tests/helpers.h passes these options on).
# A report fails the test: ASan, LeakSanitizer and UBSan exit non-zero, and
# ctest also fails a test whose output holds one (FAIL_REGULAR_EXPRESSION).
# Left out, as they cannot work there or would only repeat themselves:
# deploy (packages the plain binary into a chart, a systemd unit and a
# container image, where no ASan runtime exists), fuzz (its own clang
# libFuzzer+ASan build) and valgrind (valgrind cannot run ASan binaries).
asan=${ASAN_BUILD_DIR:-$here/../build-asan}
BUILD_DIR=$asan spotd_build -DSPOTD_SANITIZE=ON
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LSAN_OPTIONS=exitcode=23
(cd "$asan" && ctest --output-on-failure --timeout 600 -j2 -LE 'deploy|fuzz|valgrind') || rc=1
exit $rc
