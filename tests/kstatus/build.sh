#!/usr/bin/env bash
# Builds the kstatus probe (main.go: one object as JSON on stdin -> the
# Status and Message that sigs.k8s.io/cli-utils' kstatus computes for it)
# and caches it outside the work tree, keyed by the cli-utils version and the
# hash of go.sum, main.go and this script, so a warm run costs a stat. Prints
# the path of the binary.
#
# Nothing is downloaded except Go modules through the configured module proxy.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

VERSION=$(sed -n 's/^[[:space:]]*sigs.k8s.io\/cli-utils \(v[0-9][^[:space:]]*\)$/\1/p' go.mod | head -n1)
[ -n "$VERSION" ] || { echo "build.sh: cannot read the sigs.k8s.io/cli-utils version from go.mod" >&2; exit 1; }
key=$(sha256sum go.sum main.go build.sh | sha256sum | cut -c1-12)
cache_root=${WINSTON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/winston}
dir=${KSTATUS_BIN:-$cache_root/kstatus/$VERSION-$key}

if [ -x "$dir/kstatus" ]; then
  echo "$dir/kstatus"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go >= 1.24 is required to build the kstatus probe" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$dir.tmp.$$"
echo "build.sh: building the kstatus probe with sigs.k8s.io/cli-utils $VERSION" >&2
go build -trimpath -ldflags "-s -w" -o "$dir.tmp.$$/kstatus" .
rm -rf "$dir" && mv "$dir.tmp.$$" "$dir"
echo "$dir/kstatus"
