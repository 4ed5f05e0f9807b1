#!/usr/bin/env bash
# The fuzzing pass of CI: builds the libFuzzer targets of tests/fuzz/ with
# clang into build-fuzz (-DSPOTD_FUZZ=ON; kept between runs, so only changes
# are rebuilt) and runs each for a bounded time over a copy of its seed
# corpus. Fails on any crash, sanitizer report, leak, timeout or broken
# property; the input is kept under build-fuzz/fuzz-artifacts/ and printed.
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_TARGETS   which targets (default: all)
#   FUZZ_BUILD_DIR build directory (default: build-fuzz next to build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=${FUZZ_BUILD_DIR:-$src/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
read -r -a targets <<<"${FUZZ_TARGETS:-imds imds_client k8s flink config health}"

if ! command -v clang >/dev/null; then
        echo "fuzz: clang is missing (Debian 12: apt-get install clang libclang-rt-14-dev)" >&2
        exit 1
fi
mkdir -p "$build"
if ! { cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER=clang -DSPOTD_FUZZ=ON -DSPOTD_TESTS=OFF \
                -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
        cmake --build "$build" -j"$(nproc)" --target fuzz-targets; } >"$build/fuzz-build.log" 2>&1; then
        tail -n 50 "$build/fuzz-build.log"
        echo "fuzz: the build failed (log: $build/fuzz-build.log)" >&2
        exit 1
fi

# Symbolized stacks in reports, when the symbolizer is there.
for s in llvm-symbolizer /usr/lib/llvm-14/bin/llvm-symbolizer; do
        if command -v "$s" >/dev/null; then
                export ASAN_SYMBOLIZER_PATH=$(command -v "$s")
                break
        fi
done
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

work=$(mktemp -d /tmp/spotd-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
        mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
        cp "$src/tests/fuzz/corpus/$t/"* "$work/$t/corpus/"
        dict=()
        [ -e "$src/tests/fuzz/$t.dict" ] && dict=(-dict="$src/tests/fuzz/$t.dict")
        rc=0
        "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 "${dict[@]}" \
                -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" "$work/$t/corpus" \
                >"$work/$t/log" 2>&1 || rc=$?
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t/log")
        if [ "$rc" -eq 0 ]; then
                echo "fuzz_$t: ${execs:-?} executions in ${seconds} s (${rate:-?}/s), no crash"
                continue
        fi
        failed+=("$t")
        echo "fuzz_$t: FAILED (exit $rc)"
        pattern='^==[0-9]+==ERROR|runtime error|property violated|ERROR: libFuzzer'
        if grep -q -E "$pattern" "$work/$t/log"; then
                grep -E -A40 "$pattern" "$work/$t/log" | awk 'NR <= 60'
        else
                tail -n 40 "$work/$t/log"
        fi
        mkdir -p "$build/fuzz-artifacts/$t"
        for a in "$work/$t/artifacts/"*; do
                [ -e "$a" ] || continue
                cp "$a" "$build/fuzz-artifacts/$t/"
                echo "input kept as $build/fuzz-artifacts/$t/$(basename "$a") (base64):"
                head -c 4096 "$a" | base64
                echo "reproduce: $build/tests/fuzz/fuzz_$t $build/fuzz-artifacts/$t/$(basename "$a")"
        done
done
if ((${#failed[@]})); then
        echo "fuzz: failed: ${failed[*]}" >&2
        exit 1
fi
