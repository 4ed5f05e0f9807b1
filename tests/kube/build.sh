#!/usr/bin/env bash
# Builds (or reuses) the pinned Kubernetes control-plane binaries that the
# real-API-server tests run: etcd, kube-apiserver, kube-controller-manager.
#
#   bash tests/kube/build.sh            # prints the bin directory on stdout
#   bash tests/kube/build.sh --print-go # only find (or fetch) the Go it would use
#
# KUBE_BUILD_DIR  where the binaries are cached (default <repo>/build/kube);
#                 bin/ holds them, bin/.stamp says what they were built from,
#                 and a second run with the same go.mod/go.sum reuses them.
# KUBE_GO_VERSION the Go toolchain fetched when no usable Go is on PATH
#                 (default go1.26.8, pinned by its sha256 below).
#
# Versions are pinned by tests/kube/go.mod and go.sum: k8s.io/kubernetes
# v1.34.4 with its staging modules replaced by the matching v0.34.4 releases,
# and go.etcd.io/etcd/server/v3 v3.6.4 (the etcd that Kubernetes 1.34 ships).
# Everything comes through the Go module proxy ($GOPROXY): the modules, and,
# on a machine whose Go is too old (Debian 12's 1.19), the Go toolchain
# itself as the module golang.org/toolchain.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${KUBE_BUILD_DIR:-$repo/build/kube}
bin=$out/bin
gover=${KUBE_GO_VERSION:-go1.26.8}
# sha256 of https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go1.26.8.linux-amd64.zip
# as `go mod download` fetched and verified it against the checksum database.
toolchain_sha256_go1_26_8_linux_amd64=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
need_minor=24   # go.mod says go 1.24.0

log() { echo "build.sh: $*" >&2; }

k8s_version=$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$here/go.mod")
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$here/go.mod")
stamp_want="k8s=$k8s_version etcd=$etcd_version $(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)"

print_go=false
[[ ${1:-} == --print-go ]] && print_go=true
if ! $print_go && [[ -x $bin/etcd && -x $bin/kube-apiserver && -x $bin/kube-controller-manager &&
      -f $bin/.stamp && $(cat "$bin/.stamp") == "$stamp_want" ]]; then
    log "reusing $bin ($stamp_want)"
    echo "$bin"
    exit 0
fi

# ---- a Go that can build these ------------------------------------------
go_minor() { # prints the minor version of the go binary $1, or 0
    local v
    v=$("$1" env GOVERSION 2>/dev/null || "$1" version 2>/dev/null | awk '{print $3}') || true
    v=${v#go}
    [[ $v =~ ^1\.([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo 0
}

GO=""
if command -v go >/dev/null 2>&1; then
    m=$(GOTOOLCHAIN=local go_minor go)
    if (( m >= need_minor )); then
        GO=go
        export GOTOOLCHAIN=local
    elif (( m >= 21 )); then
        # Go 1.21+ fetches the named toolchain from the module proxy itself.
        GO=go
        export GOTOOLCHAIN=$gover
        log "go on PATH is 1.$m; using GOTOOLCHAIN=$gover"
    else
        log "go on PATH is 1.$m, too old (and predates GOTOOLCHAIN)"
    fi
fi
if [[ -z $GO ]]; then
    # Fetch golang.org/toolchain from the module proxy, as go 1.21+ would.
    goroot=$out/toolchain/$gover
    if [[ ! -x $goroot/bin/go ]]; then
        proxy=${GOPROXY:-https://proxy.golang.org}
        proxy=${proxy%%[,|]*}
        [[ $proxy == direct || $proxy == off ]] && proxy=https://proxy.golang.org
        arch=$(uname -m); case $arch in x86_64) arch=amd64;; aarch64) arch=arm64;; esac
        modver=v0.0.1-$gover.linux-$arch
        url=$proxy/golang.org/toolchain/@v/$modver.zip
        command -v curl >/dev/null || { log "need curl (apt-get install curl)"; exit 1; }
        mkdir -p "$out/toolchain"
        zip=$out/toolchain/$modver.zip
        log "fetching $url"
        curl -fsSL --retry 3 -o "$zip.part" "$url"
        want_var=toolchain_sha256_${gover//./_}_linux_$arch
        want=${!want_var:-}
        got=$(sha256sum "$zip.part" | cut -d' ' -f1)
        if [[ -z $want ]]; then
            log "no pinned sha256 for $modver; refusing to use it unverified"; exit 1
        elif [[ $got != "$want" ]]; then
            log "sha256 mismatch for $modver: got $got want $want"; exit 1
        fi
        mv "$zip.part" "$zip"
        rm -rf "$out/toolchain/unpack"
        mkdir -p "$out/toolchain/unpack"
        if command -v unzip >/dev/null; then
            unzip -q "$zip" -d "$out/toolchain/unpack"
        elif command -v python3 >/dev/null; then
            python3 -m zipfile -e "$zip" "$out/toolchain/unpack"
            chmod -R u+x "$out/toolchain/unpack/golang.org/toolchain@$modver/bin" \
                         "$out/toolchain/unpack/golang.org/toolchain@$modver/pkg/tool"
        else
            log "need unzip or python3 to unpack the toolchain"; exit 1
        fi
        rm -rf "$goroot"
        mv "$out/toolchain/unpack/golang.org/toolchain@$modver" "$goroot"
        rm -rf "$out/toolchain/unpack" "$zip"
    fi
    GO=$goroot/bin/go
    export GOROOT=$goroot GOTOOLCHAIN=local
    log "using $("$GO" version) from $goroot"
fi

if $print_go; then
    echo "$(command -v "$GO") GOTOOLCHAIN=$GOTOOLCHAIN: $("$GO" version)"
    exit 0
fi

# ---- build ---------------------------------------------------------------
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -p=2" GOWORK=off
mkdir -p "$bin"
rm -f "$bin/.stamp"
cd "$here"
vpkg=k8s.io/component-base/version
cpkg=k8s.io/client-go/pkg/version
minor=${k8s_version#v1.}; minor=${minor%%.*}
kflags="-s -w"
for p in $vpkg $cpkg; do
    kflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
log "building kube-apiserver, kube-controller-manager $k8s_version and etcd $etcd_version into $bin"
"$GO" build -trimpath -ldflags="$kflags" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
"$GO" build -trimpath -ldflags="$kflags" -o "$bin/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
"$GO" build -trimpath -ldflags="-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
echo "$stamp_want" > "$bin/.stamp"
log "done: $(du -sh "$bin" | cut -f1) in $bin"
echo "$bin"
