#!/usr/bin/env bash
# One real Flink version, end to end: a session cluster of 1 JobManager + 3
# TaskManagers runs ContinuityJob (parallelism 6, checkpoints every 10 s here),
# one TaskManager gets SIGTERM after the first completed checkpoint, and the
# sink must show 0 lost records. Prints start-up time and resident memory.
#   smoke.sh VERSION [DIR]      (FLINK_CACHE as for cluster.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
v=$1 dir=${2:-/tmp/spotd-flink-smoke-$1}
cl="$here/cluster.sh"
trap '"$cl" stop "$dir"' EXIT
"$cl" build "$v"
t0=$(date +%s.%N)
url=$("$cl" start "$v" "$dir" 3)
t1=$(date +%s.%N)
jid=$("$cl" submit "$dir" --parallelism 6 --checkpoint-ms 10000)
json() { curl -sf "$url$1" | python3 -c "import json,sys; j=json.load(sys.stdin); print($2)"; }
until [ "$(json "/jobs/$jid/checkpoints" 'j["counts"]["completed"]')" -ge 1 ]; do sleep 1; done
echo "Flink $v: cluster up in $(python3 -c "print(round($t1-$t0,1))") s; job $jid checkpointed"
ps -o rss=,args= -p "$("$cl" pids "$dir" | awk '{print $2}' | paste -sd,)" |
  awk '{printf "  RSS %d MiB %s\n", $1/1024, ($0 ~ /TaskManagerRunner/ ? "TaskManager" : "JobManager")}'
sleep 3
kill -TERM "$(cat "$dir/pids/tm-1")"
echo "SIGTERM tm-1"
sleep 40
echo "job $(json "/jobs/$jid" 'j["state"], [v["parallelism"] for v in j["vertices"]]')"
python3 "$here/check_sink.py" "$dir/out"
