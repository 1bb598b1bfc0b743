#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler), etcd (+ etcdctl) and helm from source, using only the Go
# module proxy (no GitHub, no release tarballs, no Docker).
#
# Output: ${KACHE_CACHE:-$HOME/.cache/kache}/k8s/<k8s-version>/bin/
# The bin dir is printed on the last line of stdout.
#
# Idempotent: if every binary is present and reports the expected version, the
# script exits immediately (warm path, well under 2 s). Only missing or
# mismatched components are rebuilt. Go's module and build caches
# (GOMODCACHE / GOCACHE) are left at their defaults so reruns are cheap.
#
# Knobs (env):
#   KACHE_CACHE          cache root (default ~/.cache/kache)
#   KACHE_BUILD_NICE     niceness for go commands (default 19)
#   KACHE_GO_BUILD_P     go build -p value (default 2)
set -euo pipefail

# ---- pinned versions -------------------------------------------------------
K8S_VERSION="v1.34.4"      # k8s.io/kubernetes tag; staging modules are v0.<minor>.<patch>
ETCD_VERSION="v3.6.16"     # go.etcd.io/etcd/server/v3 (and etcdctl/v3)
HELM_VERSION="v3.22.0"     # helm.sh/helm/v3

CACHE_ROOT="${KACHE_CACHE:-$HOME/.cache/kache}"
BIN_DIR="${CACHE_ROOT}/k8s/${K8S_VERSION}/bin"
NICE="${KACHE_BUILD_NICE:-19}"
GO_P="${KACHE_GO_BUILD_P:-2}"

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler)

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

# ---- version checks (warm path) --------------------------------------------
# Each returns 0 iff the binary exists and reports exactly the pinned version.
k8s_ok() {
  local b
  for b in "${K8S_BINS[@]}"; do
    [[ -x "${BIN_DIR}/$b" ]] || return 1
    [[ "$("${BIN_DIR}/$b" --version 2>/dev/null)" == "Kubernetes ${K8S_VERSION}" ]] || return 1
  done
}
etcd_ok() {
  [[ -x "${BIN_DIR}/etcd" && -x "${BIN_DIR}/etcdctl" ]] || return 1
  # Capture first: `cmd | grep -q` trips pipefail when grep exits early (SIGPIPE).
  local out
  out="$("${BIN_DIR}/etcd" --version 2>/dev/null)" || return 1
  [[ "${out}" == "etcd Version: ${ETCD_VERSION#v}"$'\n'* ]] || return 1
  out="$("${BIN_DIR}/etcdctl" version 2>/dev/null)" || return 1
  [[ "${out}" == "etcdctl version: ${ETCD_VERSION#v}"$'\n'* ]] || return 1
}
helm_ok() {
  [[ -x "${BIN_DIR}/helm" ]] || return 1
  [[ "$("${BIN_DIR}/helm" version --template '{{.Version}}' 2>/dev/null)" == "${HELM_VERSION}" ]] || return 1
}

if k8s_ok && etcd_ok && helm_ok; then
  echo "${BIN_DIR}"
  exit 0
fi

# ---- cold path ---------------------------------------------------------------
command -v go >/dev/null || { log "go not found in PATH"; exit 1; }
mkdir -p "${BIN_DIR}"

# Serialize concurrent invocations (e.g. parallel test jobs) on the same version.
if command -v flock >/dev/null; then
  exec 9>"${BIN_DIR}/../.build.lock"
  flock 9
  # Someone else may have finished the build while we waited.
  if k8s_ok && etcd_ok && helm_ok; then
    echo "${BIN_DIR}"
    exit 0
  fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kache-k8s-build.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# Modules we pull have no VCS metadata anyway; do not let go.work leak in.
export GOWORK=off

gorun() { nice -n "${NICE}" go "$@"; }

# Path of a module's go.mod inside the module cache (downloads if needed).
modfile() {
  gorun mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

BUILD_DATE="$(date -u +'%Y-%m-%dT%H:%M:%SZ')"

# ---- kubernetes --------------------------------------------------------------
build_k8s() {
  local ver="${K8S_VERSION#v}" major minor patch staging_ver kmod dir m
  IFS=. read -r major minor patch <<<"${ver}"
  staging_ver="v0.${minor}.${patch}"
  log "kubernetes ${K8S_VERSION} (staging modules ${staging_ver})"

  kmod="$(modfile "k8s.io/kubernetes@${K8S_VERSION}")"
  [[ -f "${kmod}" ]] || { log "could not download k8s.io/kubernetes@${K8S_VERSION}"; exit 1; }

  dir="${WORK}/k8s"
  mkdir -p "${dir}"
  # Same go/godebug lines as upstream, so runtime GODEBUG defaults match
  # an official build.
  {
    echo "module kache.local/k8s-control-plane"
    echo
    grep -E '^go [0-9]' "${kmod}"
    grep -E '^godebug ' "${kmod}" || true
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    # Staging modules: k8s.io/kubernetes requires them at v0.0.0 and replaces
    # them with ./staging/src/k8s.io/<name>, which is meaningless outside its
    # own repo. Every one that it actually *requires* is published at
    # v0.<minor>.<patch> from the same release; point the replace there.
    # (Replaces for unrequired ones, e.g. sample-controller, are skipped:
    # they're not in the graph and not always published for every patch.)
    for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "${kmod}"); do
      if grep -Eq "^[[:space:]]+${m//./\\.} v0\.0\.0([[:space:]]|$)" "${kmod}"; then
        echo "	${m} => ${m} ${staging_ver}"
      fi
    done
    echo ")"
    echo
    echo "tool ("
    for m in "${K8S_BINS[@]}"; do echo "	k8s.io/kubernetes/cmd/${m}"; done
    echo ")"
  } >"${dir}/go.mod"

  (cd "${dir}" && gorun mod tidy)

  local pkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version
  local ldflags="-s -w"
  local kv
  for kv in "gitVersion=${K8S_VERSION}" "gitMajor=${major}" "gitMinor=${minor}" \
            "gitTreeState=clean" "gitCommit=" "buildDate=${BUILD_DATE}"; do
    ldflags+=" -X ${pkg}.${kv} -X ${cpkg}.${kv}"
  done

  mkdir -p "${dir}/out"
  log "go build ${K8S_BINS[*]} (this is the slow part)"
  (cd "${dir}" && gorun build -p "${GO_P}" -trimpath -ldflags "${ldflags}" -o "${dir}/out/" \
      $(printf 'k8s.io/kubernetes/cmd/%s ' "${K8S_BINS[@]}"))
  for m in "${K8S_BINS[@]}"; do mv -f "${dir}/out/${m}" "${BIN_DIR}/${m}"; done
}

# ---- etcd ----------------------------------------------------------------------
build_etcd() {
  log "etcd ${ETCD_VERSION}"
  local dir="${WORK}/etcd" smod
  mkdir -p "${dir}/out"
  smod="$(modfile "go.etcd.io/etcd/server/v3@${ETCD_VERSION}")"
  {
    echo "module kache.local/etcd"
    echo
    grep -E '^go [0-9]' "${smod}"
    echo
    echo "require ("
    echo "	go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
    echo "	go.etcd.io/etcd/etcdctl/v3 ${ETCD_VERSION}"
    echo ")"
    echo
    # server/v3's module root is `package main` (main.go -> etcdmain.Main),
    # etcdctl/v3's module root likewise.
    echo "tool ("
    echo "	go.etcd.io/etcd/server/v3"
    echo "	go.etcd.io/etcd/etcdctl/v3"
    echo ")"
  } >"${dir}/go.mod"
  (cd "${dir}" && gorun mod tidy)
  # etcd's version string is a constant in api/v3/version; GitSHA is not
  # knowable from the module proxy, so it keeps its default.
  # Both packages would be named "v3" by `go build -o dir/`, so build each with
  # an explicit output name (the second build reuses the first's cache).
  (cd "${dir}" && gorun build -p "${GO_P}" -trimpath -ldflags "-s -w" -o "${dir}/out/etcd" go.etcd.io/etcd/server/v3)
  (cd "${dir}" && gorun build -p "${GO_P}" -trimpath -ldflags "-s -w" -o "${dir}/out/etcdctl" go.etcd.io/etcd/etcdctl/v3)
  mv -f "${dir}/out/etcd" "${BIN_DIR}/etcd"
  mv -f "${dir}/out/etcdctl" "${BIN_DIR}/etcdctl"
}

# ---- helm ----------------------------------------------------------------------
build_helm() {
  log "helm ${HELM_VERSION}"
  local hmod cgo kmaj kmin
  hmod="$(modfile "helm.sh/helm/v3@${HELM_VERSION}")"
  # Mirror helm's Makefile: default Capabilities.KubeVersion is derived from
  # the client-go it was built against (v0.X.Y -> 1.X).
  cgo="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "${hmod}")"
  kmaj="$(echo "${cgo#v}" | cut -d. -f1)"; kmaj=$((kmaj + 1))
  kmin="$(echo "${cgo#v}" | cut -d. -f2)"
  local ldflags="-s -w"
  ldflags+=" -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${kmaj}"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${kmin}"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${kmaj}"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${kmin}"
  mkdir -p "${WORK}/helm-bin"
  GOBIN="${WORK}/helm-bin" gorun install -p "${GO_P}" -trimpath -ldflags "${ldflags}" \
      "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  mv -f "${WORK}/helm-bin/helm" "${BIN_DIR}/helm"
}

k8s_ok || build_k8s
etcd_ok || build_etcd
helm_ok || build_helm

fail=0
k8s_ok || { log "kubernetes binaries failed version check"; fail=1; }
etcd_ok || { log "etcd binaries failed version check"; fail=1; }
helm_ok || { log "helm failed version check"; fail=1; }
[[ ${fail} -eq 0 ]] || exit 1

log "kube-apiserver: $("${BIN_DIR}/kube-apiserver" --version)"
log "etcd:           $("${BIN_DIR}/etcd" --version | head -1)"
log "helm:           $("${BIN_DIR}/helm" version --short)"
echo "${BIN_DIR}"
