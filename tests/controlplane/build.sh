#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go modules pinned in this directory
# and caches them outside the work tree, keyed by the Kubernetes version and
# the hash of go.sum, so a warm run costs a stat. Prints the binary directory.
#
# Nothing is downloaded except Go modules through the configured module proxy.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

K8S_VERSION=$(sed -n 's/^[[:space:]]*k8s.io\/kubernetes v\(1\.[0-9]*\.[0-9]*\)$/\1/p' go.mod | head -n1)
[ -n "$K8S_VERSION" ] || { echo "build.sh: cannot read the k8s.io/kubernetes version from go.mod" >&2; exit 1; }
minor=${K8S_VERSION#1.}; minor=${minor%%.*}
key=$(sha256sum go.sum cmd/*/main.go build.sh | sha256sum | cut -c1-12)
cache_root=${WINSTON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/winston}
bin=${CONTROLPLANE_BIN:-$cache_root/controlplane/v$K8S_VERSION-$key}

if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go >= 1.24 is required to build the control plane" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$bin.tmp"
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
start=$(date +%s)
echo "build.sh: building etcd and kube-apiserver v$K8S_VERSION (cold builds take several minutes)" >&2
go build -trimpath -ldflags "-s -w" -o "$bin.tmp/etcd" ./cmd/etcd
go build -trimpath -ldflags "$ldflags" -o "$bin.tmp/kube-apiserver" ./cmd/kube-apiserver
rm -rf "$bin" && mv "$bin.tmp" "$bin"
echo "build.sh: built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$bin"
