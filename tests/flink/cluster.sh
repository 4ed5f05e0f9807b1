#!/usr/bin/env bash
# A real Flink cluster on loopback, put together from Maven Central's jars
# (flink-dist is not served there): one JobManager process, TaskManager
# processes ("pods", one each), the adaptive scheduler, checkpoints to a
# local directory. Flink's defaults otherwise (heartbeats, restart strategy,
# cooldowns); what differs is listed in write_conf below.
#
#   cluster.sh build VERSION                   jars into $FLINK_CACHE/VERSION/lib, job jar
#   cluster.sh start VERSION DIR [N]           session cluster: JobManager + N TaskManagers (default 3: tm-1..tm-N
#                                              on 127.0.1.1..127.0.1.N)
#   cluster.sh start-app VERSION DIR N [ARGS]  application cluster (flink-container's
#                                              StandaloneApplicationClusterEntryPoint), the job
#                                              (ContinuityJob ARGS) started by the JobManager
#   cluster.sh add-tm DIR NAME [IP]            one more TaskManager, taskmanager.resource-id=NAME,
#                                              bound to IP (a loopback address: its "pod IP")
#   cluster.sh submit DIR [JOB ARGS]           upload the job jar, run ContinuityJob; prints the job id
#   cluster.sh url DIR                         http://127.0.0.1:PORT of the REST API
#   cluster.sh pids DIR                        "NAME PID" per process still alive
#   cluster.sh stop DIR                        stop every process of the cluster (TERM, then KILL)
#
# DIR holds everything of one cluster: conf/, log/NAME.log, pids/NAME,
# checkpoints/, out/ (the job's sink). FLINK_CACHE defaults to build/flink
# under the repository (ignored by git). Memory (small on purpose, 2-core
# machine): JobManager process 768m, TaskManager process 640m with 2 slots
# and no managed memory (the hashmap state backend uses none).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
FLINK_CACHE=${FLINK_CACHE:-$repo/build/flink}
MAIN_CLASS=spotd.flink.ContinuityJob

die() { echo "cluster.sh: $*" >&2; exit 1; }

ensure_tools() {
  if command -v java >/dev/null && command -v mvn >/dev/null; then return; fi
  [ "$(id -u)" -eq 0 ] || die "java and mvn missing and not root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless maven >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

major() { echo "${1%%.*}"; }

cmd_build() {
  local v=$1 app=${2:-}
  ensure_tools
  local d=$FLINK_CACHE/$v
  if [ -f "$d/build/continuity-job.jar" ] && [ -f "$d/lib/flink-runtime-$v.jar" ] &&
     { [ -z "$app" ] || ls "$d"/lib/flink-container-*.jar >/dev/null 2>&1; }; then
    return 0
  fi
  local prof=()
  # flink-container is published for x.y.0 (and a few patch releases) only; its
  # entry point works with the runtime of any patch release of the same minor.
  [ -n "$app" ] && prof=(-Papplication -Dflink.container.version="${FLINK_CONTAINER_VERSION:-${v%.*}.0}")
  mkdir -p "$d"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -Dflink.version="$v" -Dflink.build="$d/build" -Dflink.lib="$d/lib" \
      "${prof[@]}" package >"$d/mvn.log" 2>&1 || { cat "$d/mvn.log" >&2; die "maven build of Flink $v failed"; }
}

# The JVM options Flink's own flink-conf.yaml / config.yaml carries for Java 17.
JAVA_OPENS="--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED \
--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED \
--add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED \
--add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED \
--add-opens=java.base/java.text=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"

write_conf() {
  local v=$1 dir=$2
  mkdir -p "$dir/conf" "$dir/log" "$dir/pids" "$dir/checkpoints" "$dir/out"
  local conf=flink-conf.yaml
  [ "$(major "$v")" -ge 2 ] && conf=config.yaml
  echo "$v" > "$dir/version"
  echo "$conf" > "$dir/conf-name"
  local rpc rest
  rpc=$(free_port); rest=$(free_port)
  echo "$rest" > "$dir/rest-port"
  # Flat "key: value" lines: valid in 1.x's flink-conf.yaml and 2.x's config.yaml.
  cat > "$dir/conf/$conf" <<EOF
jobmanager.rpc.address: 127.0.0.1
jobmanager.rpc.port: $rpc
jobmanager.bind-host: 127.0.0.1
jobmanager.memory.process.size: 768m
jobmanager.memory.jvm-metaspace.size: 160m
jobmanager.scheduler: adaptive
taskmanager.host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
taskmanager.numberOfTaskSlots: 2
taskmanager.memory.process.size: 640m
taskmanager.memory.managed.size: 0m
taskmanager.memory.jvm-metaspace.size: 160m
taskmanager.memory.jvm-overhead.min: 64m
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $rest
state.backend.type: hashmap
state.checkpoints.dir: file://$dir/checkpoints
execution.checkpointing.dir: file://$dir/checkpoints
web.tmpdir: $dir/web
io.tmp.dirs: $dir/tmp
EOF
  mkdir -p "$dir/web" "$dir/tmp"
  cat > "$dir/conf/log4j.properties" <<'EOF'
monitorInterval = 0
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
appender.main.name = MainAppender
appender.main.type = File
appender.main.append = true
appender.main.fileName = ${sys:log.file}
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd'T'HH:mm:ss,SSS}{UTC}Z %-5p %-60c %x - %m%n
logger.pekko.name = org.apache.pekko
logger.pekko.level = INFO
logger.adaptive.name = org.apache.flink.runtime.scheduler.adaptive
logger.adaptive.level = DEBUG
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = OFF
EOF
}

classpath() {
  local v=$1
  local d=$FLINK_CACHE/$v
  echo "$d/lib/*"
}

# Runs BashJavaUtils as Flink's scripts do; prints the JVM flags on line 1
# and the dynamic configuration (-D k=v ...) on line 2.
resource_params() {
  local v=$1 dir=$2 what=$3
  local out
  out=$(java -Xmx64m -XX:+UseSerialGC -cp "$(classpath "$v")" -Dlog4j.configurationFile=file:/dev/null \
        org.apache.flink.runtime.util.bash.BashJavaUtils "$what" --configDir "$dir/conf" 2>&1) ||
    die "BashJavaUtils $what failed: $out"
  echo "$out" | grep 'BASH_JAVA_UTILS_EXEC_RESULT:' | sed 's/^.*BASH_JAVA_UTILS_EXEC_RESULT://'
}

# launch DIR NAME MAINCLASS KIND ARGS...: one JVM in the background, its pid in pids/NAME.
launch() {
  local dir=$1 name=$2 main=$3 kind=$4; shift 4
  local v; v=$(cat "$dir/version")
  local params jvm dyn
  params=$(resource_params "$v" "$dir" "$kind")
  jvm=$(echo "$params" | sed -n 1p)
  dyn=$(echo "$params" | sed -n 2p)
  local cp; cp=$(classpath "$v")
  [ -f "$dir/job-on-classpath" ] && cp="$cp:$FLINK_CACHE/$v/build/continuity-job.jar"
  # shellcheck disable=SC2086 # flag lists are split on purpose
  nohup setsid java $jvm -XX:+UseSerialGC $JAVA_OPENS \
      -Dlog.file="$dir/log/$name.log" -Dlog4j.configurationFile="file:$dir/conf/log4j.properties" \
      -cp "$cp" "$main" --configDir "$dir/conf" $dyn "$@" \
      >"$dir/log/$name.out" 2>&1 </dev/null &
  echo $! > "$dir/pids/$name"
}

rest_url() { echo "http://127.0.0.1:$(cat "$1/rest-port")"; }

wait_rest() {
  local dir=$1 t=0
  until curl -sf "$(rest_url "$dir")/overview" >/dev/null 2>&1; do
    sleep 0.5; t=$((t + 1))
    [ $t -lt 240 ] || die "JobManager REST did not come up (see $dir/log/jobmanager.log)"
    kill -0 "$(cat "$dir/pids/jobmanager")" 2>/dev/null || die "JobManager exited (see $dir/log/jobmanager.out)"
  done
}

# wait_tms DIR N: until N TaskManagers are registered.
wait_tms() {
  local dir=$1 n=$2 t=0
  until [ "$(curl -sf "$(rest_url "$dir")/overview" | python3 -c 'import json,sys; print(json.load(sys.stdin)["taskmanagers"])' 2>/dev/null)" = "$n" ]; do
    sleep 0.5; t=$((t + 1))
    [ $t -lt 240 ] || die "$n TaskManagers did not register"
  done
}

# add-tm DIR NAME [IP]: IP (a loopback address, default 127.0.0.1) is the
# "pod IP" the TaskManager binds to and announces, as a pod's own IP would be.
cmd_add_tm() {
  local dir=$1 name=$2 ip=${3:-127.0.0.1}
  launch "$dir" "$name" org.apache.flink.runtime.taskexecutor.TaskManagerRunner GET_TM_RESOURCE_PARAMS \
      -D "taskmanager.resource-id=$name" -D "taskmanager.host=$ip" -D "taskmanager.bind-host=$ip"
}

cmd_start() {
  local v=$1 dir=$2 n=${3:-3}
  cmd_build "$v"
  rm -rf "$dir"; mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  write_conf "$v" "$dir"
  launch "$dir" jobmanager org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint \
      GET_JM_RESOURCE_PARAMS --executionMode cluster
  wait_rest "$dir"
  for i in $(seq 1 "$n"); do cmd_add_tm "$dir" "tm-$i" "127.0.1.$i"; done
  wait_tms "$dir" "$n"
  rest_url "$dir"
}

cmd_start_app() {
  local v=$1 dir=$2 n=$3; shift 3
  cmd_build "$v" app
  rm -rf "$dir"; mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  write_conf "$v" "$dir"
  touch "$dir/job-on-classpath"
  launch "$dir" jobmanager org.apache.flink.container.entrypoint.StandaloneApplicationClusterEntryPoint \
      GET_JM_RESOURCE_PARAMS --job-classname "$MAIN_CLASS" --out "$dir/out" "$@"
  wait_rest "$dir"
  for i in $(seq 1 "$n"); do cmd_add_tm "$dir" "tm-$i"; done
  wait_tms "$dir" "$n"
  rest_url "$dir"
}

cmd_submit() {
  local dir=$1; shift
  local v; v=$(cat "$dir/version")
  local url; url=$(rest_url "$dir")
  local up id
  up=$(curl -sf -X POST -F "jarfile=@$FLINK_CACHE/$v/build/continuity-job.jar" "$url/jars/upload") ||
    die "jar upload failed"
  id=$(echo "$up" | python3 -c 'import json,sys,os; print(os.path.basename(json.load(sys.stdin)["filename"]))')
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"entryClass": sys.argv[1], "programArgsList": sys.argv[2:]}))' \
         "$MAIN_CLASS" --out "$dir/out" "$@")
  curl -sf -X POST -H 'Content-Type: application/json' -d "$body" "$url/jars/$id/run" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["jobid"])' || die "job submission failed"
}

cmd_pids() {
  local dir=$1 f
  for f in "$dir"/pids/*; do
    [ -f "$f" ] || continue
    kill -0 "$(cat "$f")" 2>/dev/null && echo "$(basename "$f") $(cat "$f")"
  done
  return 0
}

cmd_stop() {
  local dir=$1 f pid pids=()
  for f in "$dir"/pids/*; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -CONT "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local t=0
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $t -lt 100 ]; do sleep 0.1; t=$((t + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
  done
  return 0
}

[ $# -ge 1 ] || { sed -n '2,20p' "$0"; exit 2; }
c=$1; shift
case $c in
  build) cmd_build "$@" ;;
  start) cmd_start "$@" ;;
  start-app) cmd_start_app "$@" ;;
  add-tm) cmd_add_tm "$@" ;;
  submit) cmd_submit "$@" ;;
  url) rest_url "$1" ;;
  pids) cmd_pids "$1" ;;
  stop) cmd_stop "$1" ;;
  *) die "unknown command $c" ;;
esac
