#!/usr/bin/env bash
# The mutant check (README: Mutants). Each tests/mutants/NAME.patch breaks
# one guarantee of spotd on purpose; its header names the guarantee and the
# Criterion tests (suite/test, run from tests/test_<suite>) that must notice:
#   # guarantee: a pod replaced since the list is never evicted
#   # tests: guarantees/replaced_pod_never_evicted handle/...
# For each mutant: the patch is applied to a copy of the checked-out tree
# (tracked and untracked files, as they are now), the copy is built
# incrementally (only spotd and the named test binaries), and the named
# tests run in order until one fails: the mutant is killed. It fails the
# run when every named test passes (the mutant survived), when the patch no
# longer applies or the copy does not build (update the patch), or when a
# named test does not exist (update the header).
#
# usage: run.sh [--work DIR] [--baseline] [--list] [NAME...]
#   --work DIR   copy and build tree, kept between runs for incremental
#                builds (default: build/mutants below the source tree)
#   --baseline   first run every named test on the unmutated copy: a test
#                that fails there kills nothing
#   --list       print the mutants as a Markdown table and exit
#   NAME...      only these mutants
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
work=$src/build/mutants
baseline=false
list=false
names=()
while (($#)); do
  case $1 in
    --work) work=$2; shift ;;
    --baseline) baseline=true ;;
    --list) list=true ;;
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) names+=("${1%.patch}") ;;
  esac
  shift
done

header() { sed -n "s/^# $2: *//p" "$1" | head -n1; }

patches=()
if ((${#names[@]})); then
  for n in "${names[@]}"; do patches+=("$here/$n.patch"); done
else
  patches=("$here"/*.patch)
fi
for p in "${patches[@]}"; do
  [ -f "$p" ] || { echo "run.sh: no mutant $p" >&2; exit 2; }
  if [ -z "$(header "$p" guarantee)" ] || [ -z "$(header "$p" tests)" ]; then
    echo "run.sh: $(basename "$p"): a '# guarantee:' and a '# tests:' line are needed" >&2
    exit 2
  fi
done

if $list; then
  echo "| mutant | guarantee it breaks | killed by |"
  echo "|---|---|---|"
  for p in "${patches[@]}"; do
    echo "| $(basename "$p" .patch) | $(header "$p" guarantee) | $(header "$p" tests | sed 's/ /, /g') |"
  done
  exit 0
fi

t0=$(date +%s)
mkdir -p "$work"
exec 9>"$work/.lock"
flock -n 9 || { echo "run.sh: another run holds $work" >&2; exit 2; }
copy=$work/src
build=$work/build
log=$work/logs
rm -rf "$log"
mkdir -p "$copy" "$log"

# The copy follows the checked-out tree: files whose content differs are
# copied (with a new mtime, so they are rebuilt), the rest keep theirs.
sync_tree() {
  local f n=0
  while IFS= read -r -d '' f; do
    [ -f "$src/$f" ] || continue
    if ! cmp -s "$src/$f" "$copy/$f"; then
      mkdir -p "$copy/$(dirname "$f")"
      cp "$src/$f" "$copy/$f"
      n=$((n + 1))
    fi
  done < <(if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
             git -C "$src" ls-files -z --cached --others --exclude-standard
           else # a tarball: everything but build trees
             (cd "$src" && find . -path './build*' -prune -o -type f -print0)
           fi)
  echo "mutants: copy of $src in $copy ($n files updated)"
}
sync_tree

# Targets and test binaries of every mutant to run; a suite without its
# tests/test_<suite>.c is a stale header.
declare -A want=([spotd]=1)
for p in "${patches[@]}"; do
  for t in $(header "$p" tests); do
    if [ ! -f "$copy/tests/test_${t%%/*}.c" ]; then
      echo "mutants: $(basename "$p"): no test binary for $t (tests/test_${t%%/*}.c): update its '# tests:' line" >&2
      exit 1
    fi
    want[test_${t%%/*}]=1
  done
done
targets=("${!want[@]}")

jobs=$(nproc 2>/dev/null || echo 2)
build_targets() { cmake --build "$build" -j"$jobs" --target "$@"; }
# No -Werror: a mutant may leave a variable unused.
if ! cmake -S "$copy" -B "$build" >"$log/configure.log" 2>&1 ||
   ! build_targets "${targets[@]}" >"$log/build.log" 2>&1; then
  echo "mutants: the unmutated copy does not build:" >&2
  tail -n 40 "$log/configure.log" "$log/build.log" >&2
  exit 1
fi

# Runs one suite/test; sets $tested (how many tests matched) and returns the
# test binary's status. Output goes to $2.
run_test() {
  local suite=${1%%/*} out=$2 rc
  timeout 600 "$build/tests/test_$suite" --jobs 1 --fail-fast --filter "$1" >"$out" 2>&1
  rc=$?
  tested=$(sed -n 's/.*Synthesis: Tested: \([0-9]*\).*/\1/p' "$out" | tail -n1)
  return $rc
}

if $baseline; then
  declare -A seen=()
  for p in "${patches[@]}"; do
    for t in $(header "$p" tests); do
      [ -n "${seen[$t]:-}" ] && continue
      seen[$t]=1
      if ! run_test "$t" "$log/baseline-${t//\//-}.log" || [ "${tested:-0}" = 0 ]; then
        echo "mutants: $t fails (or is missing) without any mutant: see $log/baseline-${t//\//-}.log" >&2
        exit 1
      fi
      echo "mutants: baseline $t passes"
    done
  done
fi

rows=()
failed=0
for p in "${patches[@]}"; do
  name=$(basename "$p" .patch)
  guarantee=$(header "$p" guarantee)
  files=$(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$p")
  result="" by=""
  m0=$(date +%s)
  for f in $files; do cp "$copy/$f" "$log/$name.${f//\//-}.orig"; done
  if ! (cd "$copy" && patch -p1 -F0 --forward --batch --no-backup-if-mismatch --dry-run <"$p") >"$log/$name.patch.log" 2>&1; then
    result="DOES NOT APPLY"
  elif ! (cd "$copy" && patch -p1 -F0 --forward --batch --no-backup-if-mismatch <"$p") >>"$log/$name.patch.log" 2>&1; then
    result="DOES NOT APPLY"
  else
    bins=(spotd)
    for t in $(header "$p" tests); do bins+=("test_${t%%/*}"); done
    if ! build_targets "${bins[@]}" >"$log/$name.build.log" 2>&1; then
      result="DOES NOT BUILD"
    else
      for t in $(header "$p" tests); do
        out=$log/$name.${t//\//-}.log
        if run_test "$t" "$out"; then
          if [ "${tested:-0}" = 0 ]; then result="NO TEST $t"; break; fi
          continue
        fi
        if [ "${tested:-0}" = 0 ]; then result="NO TEST $t"; break; fi
        result=killed by=$t
        break
      done
      [ -n "$result" ] || result=SURVIVED
    fi
  fi
  # Back to the tree as it is (a new mtime: the next build recompiles it).
  for f in $files; do cp "$log/$name.${f//\//-}.orig" "$copy/$f"; done
  [ "$result" = killed ] || failed=$((failed + 1))
  echo "mutants: $name: $result${by:+ ($by)} in $(($(date +%s) - m0)) s"
  rows+=("$name|$guarantee|${by:--}|$result")
done

echo
printf '%-28s | %-70.70s | %-56s | %s\n' mutant guarantee "killed by" result
for r in "${rows[@]}"; do
  IFS='|' read -r n g b res <<<"$r"
  printf '%-28s | %-70.70s | %-56s | %s\n' "$n" "$g" "$b" "$res"
done
echo
echo "mutants: ${#patches[@]} run, $((${#patches[@]} - failed)) killed, $failed not; $(($(date +%s) - t0)) s in all; logs in $log"
if ((failed)); then
  echo "mutants: FAILED: a survivor means no test guards that guarantee any more; a patch that no longer applies or builds, or names a test that is gone, needs updating (tests/mutants/, README: Mutants)" >&2
  exit 1
fi
exit 0
