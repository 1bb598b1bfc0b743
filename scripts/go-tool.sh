#!/usr/bin/env bash
# Build a Go tool from the Go module proxy once and cache it; print its path.
#
#   scripts/go-tool.sh umoci       # -> ~/.cache/kache/tools/umoci-v0.6.0/umoci
#   scripts/go-tool.sh actionlint
#   scripts/go-tool.sh promtool    # Prometheus's rule and metrics checker
#
# The tools and their pinned versions are listed below. Each is built inside its
# own module (so the module's replace directives apply, which `go install
# pkg@version` refuses), like tests/k8s/build-control-plane.sh builds the control
# plane. A cached binary is reused when present. Knobs: KACHE_CACHE (cache root,
# default ~/.cache/kache), KACHE_BUILD_NICE (default 19).
set -euo pipefail

tool=${1:?usage: scripts/go-tool.sh umoci|actionlint|promtool}
case "$tool" in
  umoci)      module=github.com/opencontainers/umoci version=v0.6.0  pkg=./cmd/umoci ;;
  actionlint) module=github.com/rhysd/actionlint     version=v1.7.12 pkg=./cmd/actionlint ;;
  # Prometheus tags its Go module v0.3xx.y for its 3.xx.y releases (promtool is cmd/promtool).
  promtool)   module=github.com/prometheus/prometheus version=v0.316.0 pkg=./cmd/promtool ;;
  *) echo "scripts/go-tool.sh: unknown tool $tool" >&2; exit 2 ;;
esac

dir="${KACHE_CACHE:-$HOME/.cache/kache}/tools/$tool-$version"
bin="$dir/$tool"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "scripts/go-tool.sh: $tool needs Go (https://go.dev/dl) to build" >&2; exit 1; }
echo "[go-tool] building $tool $version from the Go module proxy (once)" >&2
src=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[[ -n "$src" && -d "$src" ]] || { echo "scripts/go-tool.sh: go mod download $module@$version failed" >&2; exit 1; }
mkdir -p "$dir"
# A temporary name of this process's own: tests running in parallel may build the same
# tool at once on a fresh machine, and each rename then puts a whole binary in place.
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$src" && GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" nice -n "${KACHE_BUILD_NICE:-19}" \
  go build -trimpath -o "$tmp" "$pkg")
mv -f "$tmp" "$bin"
echo "$bin"
