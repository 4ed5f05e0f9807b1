#!/usr/bin/env bash
# Valgrind memcheck over the integration tests: test_integration, test_handle,
# test_lifecycle and test_rescale run as usual, but every spotd they start runs under
# valgrind (SPOTD_TEST_WRAPPER, read by tests/helpers.h). A memory error or a
# definite leak in a spotd makes valgrind exit 99; the tests assert exit 0
# and tests/helpers.h also prints any report it finds in spotd's output as
# SPOTD-MEMORY-ERROR (for the tests that do not check the status, such as
# the SIGKILL ones), which fails this script too.
#
#   bash tests/valgrind-run.sh [BUILD_DIR]
#
# SPOTD_TEST_TIME_SCALE stretches the tests' waits and time bounds: valgrind
# runs spotd some 20-50 times slower on CPU.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
command -v valgrind >/dev/null || { echo "valgrind is not installed (tests/deps.sh installs it)" >&2; exit 1; }

export SPOTD_TEST_WRAPPER="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-fds=no --num-callers=40 -q"
export SPOTD_TEST_TIME_SCALE=${SPOTD_TEST_TIME_SCALE:-4}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

fail=0
for t in test_integration test_handle test_lifecycle test_rescale; do
  start=$SECONDS
  if ! "$build/tests/$t" --jobs 1 --ascii 2>&1 | tee "$log"; then
    echo "valgrind: $t failed" >&2
    fail=1
  fi
  # Belt and braces: any report from a spotd child fails the run.
  if grep -q "SPOTD-MEMORY-ERROR" "$log"; then
    echo "valgrind: $t: a spotd child reported a memory error or a definite leak" >&2
    fail=1
  fi
  echo "valgrind: $t done in $((SECONDS - start)) s"
done
if ((fail)); then
  echo "valgrind: FAILED" >&2
  exit 1
fi
echo "valgrind: no memory error and nothing definitely lost in any spotd"
