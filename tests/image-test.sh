#!/usr/bin/env bash
# The container image: builds the Dockerfile with podman (no daemon, chroot
# isolation, as root), exports the final image to a folder and runs its
# binary there with chroot, as the image's user, against the IMDS and
# Kubernetes simulators on loopback.
#
#   bash tests/image-test.sh [SRC_DIR [BUILD_DIR]]
#
# The Debian base image is never pulled: when podman does not have it, one is
# made with debootstrap from the mirror apt uses here and imported under the
# name the Dockerfile names (the debootstrap tree is cached in
# BUILD_DIR/image-cache). Podman's layer cache keeps later builds short.
set -euo pipefail

src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
build=$(cd "${2:-$src/build}" && pwd)
cache=$build/image-cache
tag=localhost/spotd:test
max_bytes=20000000 # the issue's target: under 20 MB
mkdir -p "$cache"
# One run at a time per build tree: the cached trees and logs are shared.
exec 9>"$cache/lock"
flock -w 900 9 || { echo "FAIL: another run holds $cache/lock" >&2; exit 1; }

say() { printf '[image %5ss] %s\n' "$SECONDS" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "needs root (podman build --isolation=chroot, chroot)"
for t in podman debootstrap chroot; do
  command -v "$t" >/dev/null || fail "$t is not installed (tests/deps.sh installs it)"
done

# The base image name, from the Dockerfile itself.
base=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' "$src/Dockerfile" | head -1)
[ -n "$base" ] || fail "no ARG DEBIAN_IMAGE= in the Dockerfile"

# The mirrors apt uses on this machine (one-line and deb822 sources).
apt_uris() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n -E 's/^[[:space:]]*(deb[[:space:]]+(\[[^]]*\][[:space:]]+)?|URIs:[[:space:]]*)([a-z]+:\/\/[^[:space:]]+).*/\3/p'
}
mirror=$(apt_uris | grep -E '/debian/?$' | head -1 || true)
security=$(apt_uris | grep -E '/debian-security/?$' | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-http://deb.debian.org/debian-security}
mirror=${mirror%/} security=${security%/}

cleanup() {
  local pid
  for pid in ${spotd_pid:-} ${sim_pids:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${sim_pids:-}; do wait "$pid" 2>/dev/null || true; done
  [ -z "${cid:-}" ] || podman rm -f "$cid" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# 1. The base image.
if podman image exists "$base"; then
  say "base image $base is present"
else
  tarball=$cache/debian-bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    say "base image $base missing: debootstrap --variant=minbase bookworm from $mirror"
    rm -rf "$cache/debootstrap"
    if ! debootstrap --variant=minbase bookworm "$cache/debootstrap" "$mirror" >"$cache/debootstrap.log" 2>&1; then
      tail -20 "$cache/debootstrap.log" >&2
      fail "debootstrap failed (log: $cache/debootstrap.log)"
    fi
    tar --numeric-owner -C "$cache/debootstrap" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$cache/debootstrap"
  fi
  say "podman import $tarball as $base"
  podman import --change 'CMD ["/bin/bash"]' "$tarball" "$base" >/dev/null
fi

# 2. The image, from the Dockerfile alone.
git_id=$(git -C "$src" describe --always --dirty --tags 2>/dev/null || echo unknown)
say "podman build (log: $cache/build.log)"
if ! podman build --isolation=chroot --network=host --pull=never \
     --build-arg "DEBIAN_MIRROR=$mirror" --build-arg "DEBIAN_SECURITY_MIRROR=$security" \
     --build-arg "SPOTD_GIT=$git_id" \
     -t "$tag" -f "$src/Dockerfile" "$src" >"$cache/build.log" 2>&1; then
  tail -40 "$cache/build.log" >&2
  fail "podman build failed (log: $cache/build.log)"
fi

# Keep this build's stage as the layer cache of the next run (a tag), and
# drop what earlier runs left.
podman build --isolation=chroot --network=host --pull=never --target build \
  --build-arg "DEBIAN_MIRROR=$mirror" --build-arg "DEBIAN_SECURITY_MIRROR=$security" \
  --build-arg "SPOTD_GIT=$git_id" -t localhost/spotd-build:test -f "$src/Dockerfile" "$src" >>"$cache/build.log" 2>&1
podman image prune -f --filter label=io.spotd.stage=build >/dev/null
podman image prune -f --filter label=org.opencontainers.image.title=spotd >/dev/null

[ "$(podman image inspect --format '{{.Config.User}}' "$tag")" = "65532:65532" ] || fail "image user is not 65532:65532"
podman image inspect --format '{{json .Config.Entrypoint}}' "$tag" | grep -q '"/usr/bin/spotd"' || fail "entrypoint is not /usr/bin/spotd"

# 3. Its file system.
root=$cache/rootfs
rm -rf "$root"
mkdir -p "$root"
cid=$(podman create "$tag")
podman export "$cid" | tar -C "$root" -xf -
podman rm -f "$cid" >/dev/null
cid=
bytes=$(du -sb "$root" | cut -f1)
files=$(find "$root" -type f | wc -l)
say "image file system: $bytes bytes in $files files (podman reports $(podman image inspect --format '{{.Size}}' "$tag") bytes)"
((bytes < max_bytes)) || fail "image is $bytes bytes, the target is under $max_bytes"

for f in bin/sh usr/bin/sh bin/bash usr/bin/bash usr/bin/apt usr/bin/apt-get usr/bin/dpkg usr/bin/busybox; do
  [ ! -e "$root/$f" ] || fail "the image has /$f"
done
grep -q '^spotd:x:65532:65532:' "$root/etc/passwd" || fail "no spotd user (65532) in /etc/passwd"
[ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || fail "no CA bundle"
grep -q 'BEGIN CERTIFICATE' "$root/etc/ssl/certs/ca-certificates.crt" || fail "CA bundle holds no certificate"

# Exactly the libraries the binary loads: ask the image's own loader.
loader=$(cd "$root" && ls usr/lib64/ld-linux-*.so.* usr/lib/ld-linux-*.so.* 2>/dev/null | head -1 || true)
[ -n "$loader" ] || fail "no dynamic loader in the image"
needed=$(chroot "$root" "/$loader" --list /usr/bin/spotd) || fail "the loader cannot resolve spotd's libraries: $needed"
! grep -q 'not found' <<<"$needed" || fail "libraries missing in the image: $needed"
shipped=$(cd "$root" && find . -name '*.so*' -type f | sed 's|.*/||' | sort)
loaded=$(grep -o '/[^ ]*' <<<"$needed" | sed 's|.*/||' | sort -u)
[ "$shipped" = "$loaded" ] || fail "libraries shipped and loaded differ: $(diff <(echo "$shipped") <(echo "$loaded") | tr '\n' ' ')"
say "libraries: $(wc -l <<<"$loaded") ($(tr '\n' ' ' <<<"$loaded"))"

# 4. The binary in the image.
in_image() { chroot --userspec=65532:65532 "$root" /usr/bin/spotd "$@"; }
version=$(in_image version) || fail "spotd version failed in the image"
grep -q '^spotd [0-9]' <<<"$version" || fail "unexpected version output: $version"
say "in the image: $version"

simdir=$root/sim # inside the image: /sim
mkdir -p "$simdir"
# Emptied here, not by the background jobs' redirections: a wait must never
# see what an earlier run wrote.
: >"$cache/imds-sim.out"
: >"$cache/k8s-sim.out"
"$build/tests/sim/imds-sim" --spot terminate --spot-after-ms 700 >"$cache/imds-sim.out" 2>&1 &
sim_pids=$!
"$build/tests/sim/k8s-sim" --dir "$simdir" >"$cache/k8s-sim.out" 2>&1 &
sim_pids="$sim_pids $!"
wait_for() { # FILE PATTERN SECONDS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
wait_for "$cache/imds-sim.out" "listening on" 10 || fail "imds-sim did not start: $(cat "$cache/imds-sim.out")"
wait_for "$cache/k8s-sim.out" "listening on" 20 || fail "k8s-sim did not start: $(cat "$cache/k8s-sim.out")"
imds=$(grep -o 'http://[0-9.:]*' "$cache/imds-sim.out" | head -1)
kube=$(grep -o 'https://[0-9.:]*' "$cache/k8s-sim.out" | head -1)
chmod -R a+rX "$simdir" # the image's user reads the CA and the token

run_in_image() { # LOG [OPTIONS...]: runs until stopped by the caller
  local log=$1
  shift
  : >"$log"
  # chroot execs spotd: the signal below reaches spotd itself.
  chroot --userspec=65532:65532 "$root" /usr/bin/spotd run --imds-endpoint="$imds" --kube-api="$kube" --kube-token-file=/sim/token \
    --kube-ca-file=/sim/ca.crt --node-name=spot-node-1 --poll-interval=100ms \
    --health-addr=127.0.0.1:0 --log-target=stderr "$@" >"$log" 2>&1 &
  spotd_pid=$!
}
stop_spotd() { # LOG
  kill -TERM "$spotd_pid"
  local rc=0
  wait "$spotd_pid" || rc=$?
  spotd_pid=
  [ "$rc" -eq 0 ] || fail "spotd exited with $rc after SIGTERM: $(cat "$1")"
  grep -q 'stopping' "$1" || fail "no stop entry: $(cat "$1")"
}

# A dry run: detects the notice and reads the node over TLS, changes nothing.
log=$cache/dry-run.log
run_in_image "$log" --dry-run
wait_for "$log" "dry run: would cordon node spot-node-1" 20 || fail "no dry-run plan in the image: $(cat "$log")"
wait_for "$log" "dry run: would send PATCH /api/v1/nodes/spot-node-1" 20 ||
  fail "the node was not read over TLS in the image: $(cat "$log")"
port=$(grep -o '(port [0-9]*)' "$log" | grep -o '[0-9]*' | head -1)
curl -sf --noproxy '*' "http://127.0.0.1:$port/healthz" >/dev/null || fail "/healthz of spotd in the image did not answer 200"
stop_spotd "$log"
grep -q 'Kubernetes API https://127.0.0.1:[0-9]* (dry run: reads only)' "$log" || fail "$(cat "$log")"
say "dry run in the image: notice detected, node read over TLS, /healthz 200, clean stop"

# A real run: fences the node and evicts its two TaskManagers.
log=$cache/run.log
run_in_image "$log"
wait_for "$log" "Event spot-i-0123456789abcdef0-terminate handled" 30 || fail "the event was not handled in the image: $(cat "$log")"
stop_spotd "$log"
grep -q 'Node spot-node-1 cordoned and tainted' "$log" || fail "$(cat "$log")"
[ "$(grep -c 'Evicted pod flink/job-a-taskmanager' "$log")" -eq 2 ] || fail "expected 2 evictions: $(cat "$log")"
say "run in the image: node fenced, 2 TaskManagers evicted, clean stop"

echo "image test passed: $bytes bytes, $(wc -l <<<"$loaded") libraries"
