#!/usr/bin/env bash
# Prints the path of prometheus-operator's ServiceMonitor CRD, fetched once through the Go
# module proxy (the module's zip holds example/prometheus-operator-crd/) and cached, so that
# tests/chart.rs can apply the chart's ServiceMonitor to a real API server.
#
#   servicemonitor-crd.sh        fetch if needed, print the cached file's path
#
# Environment: XLB_K8S_CACHE, as scripts/k8s/apiserver.sh (default ~/.cache/xlb/k8s); the
# file lands in $XLB_K8S_CACHE/prometheus-operator/<version>/. Needs Go (any version: a
# module download needs no toolchain of the module's own). go checks the zip against the
# checksum database, as for any module.
set -euo pipefail

VERSION=v0.85.0
MODULE=github.com/prometheus-operator/prometheus-operator
FILE=example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml

CACHE=${XLB_K8S_CACHE:-$HOME/.cache/xlb/k8s}
OUT=$CACHE/prometheus-operator/$VERSION/${FILE##*/}

die() { echo "servicemonitor-crd: error: $*" >&2; exit 1; }

if [[ ! -s $OUT ]]; then
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "go is not installed (it fetches $MODULE@$VERSION)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # Outside any module (a temporary directory), so no go.mod or go.work is involved.
  json=$(cd "$tmp" && GOWORK=off GOFLAGS='' go mod download -json "$MODULE@$VERSION") ||
    die "go mod download $MODULE@$VERSION failed: $json"
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  [[ -n $dir && -f $dir/$FILE ]] || die "no $FILE in $MODULE@$VERSION ($json)"
  mkdir -p "${OUT%/*}"
  cp "$dir/$FILE" "$OUT.tmp.$$"
  mv -f "$OUT.tmp.$$" "$OUT"
fi
echo "$OUT"
