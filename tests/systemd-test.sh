#!/usr/bin/env bash
# The systemd unit, its example environment file and the journal catalog:
#   1. systemd-analyze verify on the unit as shipped (ExecStart pointed at
#      the built binary), and its sandbox exposure (systemd-analyze security);
#   2. the catalog parses (journalctl --update-catalog against a private
#      root) and has an entry, with Subject, Defined-By and Documentation, for
#      every MESSAGE_ID of agent/log.h;
#   3. spotd accepts every variable of the example environment file;
#   4. the unit for real: a Debian 12 tree (debootstrap, cached in
#      BUILD_DIR/systemd-test) booted with systemd-nspawn runs spotd.service
#      unchanged, with a short watchdog, the documented LoadCredential=
#      drop-in and the catalog installed, against the IMDS and Kubernetes
#      simulators on the host's loopback. It must become ready, stay up, fence
#      the node and evict its TaskManagers from inside the sandbox, explain
#      its entries with `journalctl -x`, show the event with `spotd history`
#      and stop cleanly.
#
#   bash tests/systemd-test.sh [SRC_DIR [BUILD_DIR]]
set -euo pipefail

src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
build=$(cd "${2:-$src/build}" && pwd)
spotd=$build/agent/spotd
work=$build/systemd-test
mkdir -p "$work"
# One run at a time per build tree: the cached trees and logs are shared.
exec 9>"$work/lock"
flock -w 900 9 || { echo "FAIL: another run holds $work/lock" >&2; exit 1; }
tmp=$(mktemp -d)

say() { printf '[systemd %4ss] %s\n' "$SECONDS" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
cleanup() {
  local pid
  for pid in ${sim_pids:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${sim_pids:-}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# 1. The unit.
unit=$src/systemd/spotd.service
sed "s|^ExecStart=/usr/local/bin/spotd |ExecStart=$spotd |" "$unit" >"$tmp/spotd.service"
grep -q "^ExecStart=$spotd run" "$tmp/spotd.service" || fail "ExecStart=/usr/local/bin/spotd run not found in the unit"
if ! out=$(cd "$tmp" && systemd-analyze verify --man=no ./spotd.service 2>&1) || [ -n "$out" ]; then
  fail "systemd-analyze verify: $out"
fi
for want in Type=notify WatchdogSec=30s Restart=on-failure EnvironmentFile=-/etc/spotd/spotd.env \
  ProtectSystem=strict ProtectHome=yes NoNewPrivileges=yes PrivateTmp=yes DynamicUser=yes \
  "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" ProtectKernelTunables=yes ProtectKernelModules=yes \
  ProtectKernelLogs=yes LockPersonality=yes MemoryDenyWriteExecute=yes SystemCallFilter=@system-service; do
  grep -qxF "$want" "$unit" || fail "the unit lacks $want"
done
# Exposure 2.0 at most (systemd-analyze counts in tenths).
if ! out=$(cd "$tmp" && systemd-analyze security --offline=yes --threshold=20 ./spotd.service 2>&1); then
  fail "sandbox exposure above 2.0: $(tail -3 <<<"$out")"
fi
say "unit: verify clean, $(grep -o 'Overall exposure level.*' <<<"$out")"

# 2. The catalog.
catalog=$src/systemd/spotd.catalog
mkdir -p "$tmp/root/usr/lib/systemd/catalog"
cp "$catalog" "$tmp/root/usr/lib/systemd/catalog/"
if ! out=$(journalctl --root="$tmp/root" --update-catalog 2>&1) || [ -n "$out" ]; then
  fail "journalctl --update-catalog: $out"
fi
listed=$(journalctl --root="$tmp/root" --list-catalog | awk '{print $1}' | sort)
ids=$(grep -o '^#define MSG_[A-Z0-9_]* *"[0-9a-f]\{32\}"' "$src/agent/log.h" | grep -o '[0-9a-f]\{32\}' | sort)
[ -n "$ids" ] || fail "no MESSAGE_IDs found in agent/log.h"
missing=$(comm -23 <(echo "$ids") <(echo "$listed"))
[ -z "$missing" ] || fail "no catalog entry for MESSAGE_ID(s) of agent/log.h: $(tr '\n' ' ' <<<"$missing")"
extra=$(comm -13 <(echo "$ids") <(echo "$listed"))
[ -z "$extra" ] || fail "catalog entries for ids agent/log.h does not define: $(tr '\n' ' ' <<<"$extra")"
for id in $ids; do
  entry=$(journalctl --root="$tmp/root" --dump-catalog "$id")
  for h in Subject: Defined-By: Documentation:; do
    grep -q "^$h " <<<"$entry" || fail "catalog entry $id has no $h"
  done
  # A blank line, then the explanation.
  [ "$(awk 'f && NF {n++} /^$/ {f=1} END {print n+0}' <<<"$entry")" -ge 2 ] || fail "catalog entry $id explains nothing"
done
say "catalog: $(wc -l <<<"$ids") entries, one per MESSAGE_ID"

# 3. The example environment file, every line uncommented.
mapfile -t vars < <(sed -n 's/^#\(SPOTD_[A-Z0-9_]*=.*\)$/\1/p' "$src/systemd/spotd.env.example")
((${#vars[@]} > 5)) || fail "no SPOTD_ variables in spotd.env.example"
if ! out=$(env -i "${vars[@]}" "$spotd" run --help 2>&1 >/dev/null) || [ -n "$out" ]; then
  fail "spotd rejects spotd.env.example: $out"
fi
say "spotd.env.example: ${#vars[@]} variables accepted"

# 4. The unit under systemd.
command -v systemd-nspawn >/dev/null || fail "systemd-nspawn is not installed (tests/deps.sh installs systemd-container)"
command -v debootstrap >/dev/null || fail "debootstrap is not installed (tests/deps.sh installs it)"
[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, systemd-nspawn)"
tarball=$work/bookworm-systemd.tar
if [ ! -s "$tarball" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n -E 's/^[[:space:]]*(deb[[:space:]]+(\[[^]]*\][[:space:]]+)?|URIs:[[:space:]]*)([a-z]+:\/\/[^[:space:]]+).*/\3/p' |
    grep -E '/debian/?$' | head -1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap a bookworm tree with systemd from $mirror"
  rm -rf "$work/debootstrap"
  if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,libcurl4,libcjson1,libmicrohttpd12 \
       bookworm "$work/debootstrap" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -20 "$work/debootstrap.log" >&2
    fail "debootstrap failed (log: $work/debootstrap.log)"
  fi
  tar --numeric-owner -C "$work/debootstrap" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work/debootstrap"
fi
root=$work/root
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"

: >"$work/imds-sim.out" # emptied before the jobs start: no stale "listening"
: >"$work/k8s-sim.out"
"$build/tests/sim/imds-sim" --spot terminate --spot-after-ms 3000 >"$work/imds-sim.out" 2>&1 &
sim_pids=$!
mkdir -p "$tmp/k8s"
"$build/tests/sim/k8s-sim" --dir "$tmp/k8s" >"$work/k8s-sim.out" 2>&1 &
sim_pids="$sim_pids $!"
for ((i = 0; i < 200; i++)); do
  grep -q listening "$work/imds-sim.out" && grep -q listening "$work/k8s-sim.out" && break
  sleep 0.1
done
imds=$(grep -o 'http://[0-9.:]*' "$work/imds-sim.out" | head -1 || true)
kube=$(grep -o 'https://[0-9.:]*' "$work/k8s-sim.out" | head -1 || true)
[ -n "$imds" ] && [ -n "$kube" ] || fail "the simulators did not start: $(cat "$work/imds-sim.out" "$work/k8s-sim.out")"

install -m 0755 "$spotd" "$root/usr/local/bin/spotd"
install -m 0644 "$unit" "$root/etc/systemd/system/spotd.service"
install -D -m 0644 "$catalog" "$root/usr/lib/systemd/catalog/spotd.catalog"
chroot "$root" journalctl --update-catalog
install -d -m 0700 "$root/etc/spotd"
install -m 0600 "$tmp/k8s/token" "$root/etc/spotd/kube-token"
install -m 0600 "$tmp/k8s/ca.crt" "$root/etc/spotd/kube-ca.crt"
cat >"$root/etc/spotd/spotd.env" <<EOF
SPOTD_IMDS_ENDPOINT=$imds
SPOTD_KUBE_API=$kube
SPOTD_NODE_NAME=spot-node-1
SPOTD_POLL_INTERVAL=100ms
SPOTD_HEALTH_ADDR=127.0.0.1:0
EOF
# The drop-in spotd.env.example documents, and a watchdog short enough to
# bite within the test if the agent stopped feeding it.
mkdir -p "$root/etc/systemd/system/spotd.service.d"
cat >"$root/etc/systemd/system/spotd.service.d/test.conf" <<'EOF'
[Service]
LoadCredential=kube-token:/etc/spotd/kube-token
LoadCredential=kube-ca:/etc/spotd/kube-ca.crt
Environment=SPOTD_KUBE_TOKEN_FILE=%d/kube-token SPOTD_KUBE_CA_FILE=%d/kube-ca
WatchdogSec=2s
EOF
cat >"$root/etc/systemd/system/spotd-check.service" <<'EOF'
[Unit]
Description=spotd test: collect the results, then power off
After=spotd.service
[Service]
Type=oneshot
StandardOutput=file:/check.log
StandardError=inherit
ExecStart=/bin/sh -c '\
  for i in $(seq 300); do journalctl -q -t spotd MESSAGE_ID=a11e73ecf1174841a611800b7f13bf1a | grep -q . && break; sleep 0.1; done; \
  sleep 5; \
  systemctl show spotd -p ActiveState -p SubState -p NRestarts -p User -p DynamicUser > /running.txt; \
  journalctl -x -q -t spotd MESSAGE_ID=e4c9da6bf184496cb8c964249990883f --no-pager > /explained.txt; \
  /usr/local/bin/spotd history > /history.txt 2>&1; \
  systemctl stop spotd; \
  systemctl show spotd -p ActiveState -p Result -p ExecMainCode -p ExecMainStatus > /stopped.txt; \
  journalctl -t spotd -o json --no-pager > /journal.json; \
  journalctl -u spotd --no-pager > /unit.log'
ExecStopPost=/bin/systemctl poweroff --no-block
EOF
for u in spotd.service spotd-check.service; do
  ln -sf "/etc/systemd/system/$u" "$root/etc/systemd/system/multi-user.target.wants/$u"
done
say "booting the tree with systemd-nspawn"
if ! timeout 120 systemd-nspawn -q -D "$root" -b --register=no --keep-unit --console=pipe \
     >"$work/console.log" 2>&1 </dev/null; then
  tail -30 "$work/console.log" >&2
  fail "systemd-nspawn failed or timed out (console: $work/console.log)"
fi
[ -s "$root/stopped.txt" ] || fail "the check unit did not finish: $(tail -20 "$work/console.log")"
show() { echo "--- $1"; cat "$root/$1"; }
context() { show running.txt; show stopped.txt; show unit.log; show check.log 2>/dev/null || true; }
grep -qx 'ActiveState=active' "$root/running.txt" && grep -qx 'SubState=running' "$root/running.txt" ||
  fail "spotd.service was not running (Type=notify readiness, watchdog): $(context)"
grep -qx 'NRestarts=0' "$root/running.txt" || fail "spotd.service restarted: $(context)"
grep -qx 'DynamicUser=yes' "$root/running.txt" || fail "not a dynamic user: $(context)"
grep -qx 'Result=success' "$root/stopped.txt" && grep -qx 'ExecMainStatus=0' "$root/stopped.txt" &&
  grep -qx 'ActiveState=inactive' "$root/stopped.txt" || fail "spotd.service did not stop cleanly: $(context)"

# The journal, read by the agent's own unit, as journald stored it.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" - "$root/journal.json" <<'EOF' || fail "journal entries: $(context)"
import json, sys
entries = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def ids(mid):
    return [e for e in entries if e.get("MESSAGE_ID") == mid]
assert all(e.get("_SYSTEMD_UNIT") == "spotd.service" for e in entries), "entries not from spotd.service"
notice = ids("e4c9da6bf184496cb8c964249990883f")
assert len(notice) == 1, f"{len(notice)} notice entries"
n = notice[0]
assert n["SPOTD_EVENT_ID"] == "spot-i-0123456789abcdef0-terminate" and n["SPOTD_NODE"] == "spot-node-1", n
assert ids("6147413d8d83401b946c0f997aff043d"), "no fence entry"
assert len([e for e in ids("e843f7d32eb742f2ad85405532a2100d") if "Evicted pod flink/" in e["MESSAGE"]]) == 2, "not 2 evictions"
assert ids("a11e73ecf1174841a611800b7f13bf1a"), "no done entry"
assert ids("10b0765f550541968a02e8b9f755bb63") and ids("552c0adb7bee40e78a79cbe62b8cf3f7"), "no start or stop entry"
EOF
grep -q 'Subject: Spot interruption notice for spot-node-1' "$root/explained.txt" &&
  grep -q 'Defined-By: spotd' "$root/explained.txt" || fail "journalctl -x does not explain the notice: $(cat "$root/explained.txt")"
grep -q 'spot-i-0123456789abcdef0-terminate' "$root/history.txt" || fail "spotd history on the node: $(cat "$root/history.txt")"
say "under systemd: ready, watchdog fed, node fenced and 2 TaskManagers evicted in the sandbox, journalctl -x explains, spotd history reads the local journal, clean stop"
echo "systemd test passed"
