#!/usr/bin/env bash
# The real-Flink tests of the test command (tests/flink/README.md):
#
#   bash tests/flink/run.sh [BUILD_DIR]
#
# Per version (SPOTD_FLINK_VERSIONS, default 1.18.1 1.20.5 2.3.0: the oldest
# line spotd supports, the last 1.x and the newest 2.x) one reclaim of one
# node of three, handled by the spotd of BUILD_DIR, on a real Flink session
# cluster: reclaim.py --ways spotd --check, with the Kubernetes default
# grace period of 30 s. It fails when a record is lost, the job ever goes
# FAILED, the downscale takes other than one restart, growing back takes
# more than one more, or the job never gets back to full parallelism; the
# times (output gap, input replayed, seconds to full parallelism) are
# printed, not judged (this machine is shared and noisy). Java 17 and Maven
# come from Debian's packages, Flink's jars from Maven Central, cached in
# FLINK_CACHE (default build/flink); 8 minutes for the three once cached.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
rc=0
for v in ${SPOTD_FLINK_VERSIONS:-1.18.1 1.20.5 2.3.0}; do
  python3 "$here/reclaim.py" "$v" --ways spotd --pod-grace 30 --build "$build" \
    --dir "$build/flink-runs/$v" --check || rc=1
done
exit $rc
