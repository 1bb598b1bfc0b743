#!/usr/bin/env bash
# Launch a real local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) as plain background processes,
# and optionally the process kubelet (kache-kubelet, from tools/process-kubelet, built
# by `cargo build -p process-kubelet`), which runs pods as local processes. There is no
# container runtime. Pods reach the apiserver from their own network
# namespace via the bridge address (default https://10.88.0.1:6443).
#
# Usage:
#   cluster.sh up     [--dir DIR]   start (idempotent); prints the kubeconfig
#                                   path, then `export KUBECONFIG=...` (last line)
#   cluster.sh down   [--dir DIR]   stop everything (kubelet first, with its pods
#                                   and kpod-* namespaces), delete the bridge and DIR
#   cluster.sh status [--dir DIR]   show component/bridge/apiserver state (rc 0 = all up;
#                                   the kubelet is reported but optional)
#   cluster.sh env    [--dir DIR]   print `export KUBECONFIG=...`
#   cluster.sh kubelet-up [--dir DIR] [--image NAME=PATH]... [-- KUBELET-FLAGS...]
#                                   start kache-kubelet (Node ${KACHE_K8S_NODE_NAME:-kache-local})
#                                   on a running cluster; waits until it runs. Already
#                                   running: nothing changes (kubelet-down first)
#   cluster.sh kubelet-down [--dir DIR]
#                                   stop the kubelet (it stops its pods), then remove
#                                   any kpod-* namespace it recorded and what runs in it
#
# DIR defaults to ${KACHE_K8S_DIR:-/tmp/kache-k8s}. Must run as root: it
# creates a bridge and writes /proc/sys/net/ipv4/ip_forward.
#
# Knobs (env), with defaults:
#   KACHE_K8S_BIN            bin dir (default: last line of build-control-plane.sh,
#                            which returns immediately when the binaries are cached)
#   KACHE_K8S_BRIDGE         kache0
#   KACHE_K8S_BRIDGE_CIDR    10.88.0.1/16  (bridge address = apiserver address; pod subnet)
#   KACHE_K8S_SERVICE_CIDR   10.96.0.0/16  (first IP 10.96.0.1 = `kubernetes` service)
#   KACHE_K8S_API_PORT       6443
#   KACHE_K8S_API_BIND       0.0.0.0       (the address the apiserver listens on)
#   KACHE_K8S_ETCD_PORT      23790         (client, 127.0.0.1 only; plain http)
#   KACHE_K8S_ETCD_PEER_PORT 23800
#   KACHE_K8S_KCM_PORT       10257         (controller-manager healthz, 127.0.0.1)
#   KACHE_K8S_SCHED_PORT     10259         (scheduler healthz, 127.0.0.1)
#   KACHE_K8S_ETCD_NO_FSYNC  true          (etcd --unsafe-no-fsync: throwaway data)
#   KACHE_K8S_WAIT           120           (seconds allowed for each readiness step)
#   KACHE_K8S_STOP_TIMEOUT   15            (seconds from SIGTERM to SIGKILL in `down`)
#   KACHE_KUBELET_BIN        ${CARGO_TARGET_DIR:-<repo>/target}/debug/kache-kubelet
#   KACHE_K8S_NODE_NAME      kache-local   (the kubelet's Node)
#   KACHE_K8S_POD_CIDR       10.88.1.0/24  (pod IPs the kubelet hands out; default: the
#                                          second /24 of KACHE_K8S_BRIDGE_CIDR's subnet)
#   KACHE_KUBELET_STOP_TIMEOUT 40          (seconds from SIGTERM to SIGKILL for the kubelet)
set -euo pipefail

SELF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

BRIDGE="${KACHE_K8S_BRIDGE:-kache0}"
BRIDGE_CIDR="${KACHE_K8S_BRIDGE_CIDR:-10.88.0.1/16}"
SERVICE_CIDR="${KACHE_K8S_SERVICE_CIDR:-10.96.0.0/16}"
API_PORT="${KACHE_K8S_API_PORT:-6443}"
API_BIND="${KACHE_K8S_API_BIND:-0.0.0.0}"
ETCD_PORT="${KACHE_K8S_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${KACHE_K8S_ETCD_PEER_PORT:-23800}"
KCM_PORT="${KACHE_K8S_KCM_PORT:-10257}"
SCHED_PORT="${KACHE_K8S_SCHED_PORT:-10259}"
ETCD_NO_FSYNC="${KACHE_K8S_ETCD_NO_FSYNC:-true}"
WAIT="${KACHE_K8S_WAIT:-120}"
STOP_TIMEOUT="${KACHE_K8S_STOP_TIMEOUT:-15}"

SA_ISSUER="https://kubernetes.default.svc.cluster.local"
CLUSTER_NAME="kache"
MARKER=".kache-k8s-cluster"              # DIR is only ever rm -rf'ed if it has this
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
KUBELET=kache-kubelet
KUBELET_BIN="${KACHE_KUBELET_BIN:-${CARGO_TARGET_DIR:-${SELF_DIR}/../../target}/debug/kache-kubelet}"
NODE_NAME="${KACHE_K8S_NODE_NAME:-kache-local}"
KUBELET_STOP_TIMEOUT="${KACHE_KUBELET_STOP_TIMEOUT:-40}"

T0_MS="$(( ${EPOCHREALTIME/./} / 1000 ))"
elapsed() { local ms=$(( ${EPOCHREALTIME/./} / 1000 - T0_MS )); printf '%d.%01d' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }
# Keep a copy of the original stdout/stderr. A signal trap runs with whatever
# redirections were active when the signal arrived (e.g. the `>/dev/null 2>&1`
# around a readiness probe), and `exit` from the trap never undoes them; so
# log() writes to the saved copy and the cleanup path restores both.
exec {OUT_FD}>&1 {ERR_FD}>&2
log() { printf '[cluster %6ss] %s\n' "$(elapsed)" "$*" >&"${ERR_FD}"; }
die() { log "ERROR: $*"; exit 1; }

# ---- address arithmetic ------------------------------------------------------
ip2int() { local a b c d; IFS=. read -r a b c d <<<"$1"; echo $(( (a << 24) | (b << 16) | (c << 8) | d )); }
int2ip() { local n=$1; echo "$(( (n >> 24) & 255 )).$(( (n >> 16) & 255 )).$(( (n >> 8) & 255 )).$(( n & 255 ))"; }
# network address of A.B.C.D/P
netaddr() { local ip="${1%/*}" p="${1#*/}"; int2ip $(( $(ip2int "${ip}") & ((0xffffffff << (32 - p)) & 0xffffffff) )); }

API_IP="${BRIDGE_CIDR%/*}"
POD_CIDR="$(netaddr "${BRIDGE_CIDR}")/${BRIDGE_CIDR#*/}"
SERVICE_IP="$(int2ip $(( $(ip2int "$(netaddr "${SERVICE_CIDR}")") + 1 )))"
API_URL="https://${API_IP}:${API_PORT}"
# the kubelet's pod IPs: the second /24 of the bridge subnet (10.88.1.0/24)
KUBELET_POD_CIDR="${KACHE_K8S_POD_CIDR:-$(int2ip $(( $(ip2int "$(netaddr "${BRIDGE_CIDR}")") + 256 )))/24}"

# ---- args --------------------------------------------------------------------
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

CMD="${1:-}"; [[ $# -gt 0 ]] && shift
DIR="${KACHE_K8S_DIR:-/tmp/kache-k8s}"
KUBELET_ARGS=()   # kubelet-up only: --image ... and anything after --
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) [[ $# -ge 2 ]] || die "--dir needs an argument"; DIR="$2"; shift 2 ;;
    --dir=*) DIR="${1#--dir=}"; shift ;;
    --image) [[ "${CMD}" == kubelet-up && $# -ge 2 ]] || die "--image NAME=PATH is for kubelet-up"
             KUBELET_ARGS+=("--image=$2"); shift 2 ;;
    --image=*) [[ "${CMD}" == kubelet-up ]] || die "--image is for kubelet-up"; KUBELET_ARGS+=("$1"); shift ;;
    --) [[ "${CMD}" == kubelet-up ]] || die "-- is for kubelet-up"; shift; KUBELET_ARGS+=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
DIR="$(realpath -m -- "${DIR}")"
case "${DIR}" in
  /|/tmp|/root|/home|/usr|/var|/etc|"${HOME}") die "refusing to use ${DIR} as the state dir" ;;
esac
PKI="${DIR}/pki"
LOCK="${DIR}.lock"

# ---- helpers -----------------------------------------------------------------
need() { command -v "$1" >/dev/null || die "$1 not found in PATH"; }

take_lock() {
  mkdir -p "$(dirname "${LOCK}")"
  exec 9>"${LOCK}"
  flock -w 120 9 || die "another cluster.sh holds ${LOCK}"
}

# pid of component $1 if it is alive, is not a zombie and really is ours
# (its command line mentions DIR/); empty otherwise.
pid_of() {
  local f="${DIR}/pids/$1.pid" pid
  [[ -f "${f}" ]] || return 0
  pid="$(cat "${f}" 2>/dev/null || true)"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 0
  is_ours "${pid}" && echo "${pid}"
  return 0
}
is_ours() {
  local pid=$1 cmdline state
  [[ -r "/proc/${pid}/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/${pid}/cmdline" || true)"
  [[ "${cmdline}" == *"${DIR}/"* ]] || return 1
  state="$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null || true)"
  [[ -n "${state}" && "${state}" != Z ]]
}

# Component processes that belong to DIR but whose pid file is missing (e.g. a
# pid file lost to a Ctrl-C at the wrong moment, or DIR/pids removed by hand):
# found by their command line, which always contains DIR/.
stray_pids() {
  local p exe base
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    exe="$(tr '\0' '\n' 2>/dev/null <"/proc/${p}/cmdline" | head -1 || true)"
    base="${exe##*/}"
    case " ${COMPONENTS[*]} ${KUBELET} " in *" ${base} "*) ;; *) continue ;; esac
    is_ours "${p}" && echo "${p}"
  done
  return 0
}

port_in_use() { [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }

# start NAME BINARY ARGS... : detached (own session, stdin /dev/null), log in
# DIR/logs/NAME.log, pid in DIR/pids/NAME.pid (written by the process itself
# right before exec, so it is the real pid even if setsid forks).
start() {
  local name=$1; shift
  local pidf="${DIR}/pids/${name}.pid" pid i
  if pid="$(pid_of "${name}")" && [[ -n "${pid}" ]]; then
    log "${name} already running (pid ${pid})"
    return 0
  fi
  rm -f "${pidf}"
  log "starting ${name}"
  {
    echo "==== $(date -u +%FT%TZ) $*"
  } >>"${DIR}/logs/${name}.log"
  # The child closes every inherited fd above 2 (our lock on fd 9, and any
  # pipe a caller such as `$(cluster.sh up)` or a test harness passed down), so
  # nothing waits on the daemons and the lock is released when we exit.
  # shellcheck disable=SC2016
  setsid --fork bash -c '
      for fd in /proc/self/fd/*; do
        fd=${fd##*/}; if (( fd > 2 )); then eval "exec ${fd}>&-" 2>/dev/null; fi
      done
      echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "${pidf}" "$@" \
    >>"${DIR}/logs/${name}.log" 2>&1 </dev/null
  for ((i = 0; i < 100; i++)); do
    [[ -s "${pidf}" ]] && return 0
    sleep 0.05
  done
  die "${name} did not write its pid file"
}

# wait_until DESC COMPONENT CMD... : retry CMD every 0.5 s for up to WAIT s;
# fail early (with the log tail) if COMPONENT dies.
wait_until() {
  local desc=$1 comp=$2; shift 2
  local deadline=$(( $(date +%s) + WAIT ))
  while true; do
    if "$@" >/dev/null 2>&1; then log "ready: ${desc}"; return 0; fi
    if [[ -n "${comp}" && -z "$(pid_of "${comp}")" ]]; then
      log "${comp} exited; last lines of ${DIR}/logs/${comp}.log:"
      tail -n 30 "${DIR}/logs/${comp}.log" >&2 || true
      die "${comp} died while waiting for: ${desc}"
    fi
    (( $(date +%s) < deadline )) || die "timed out after ${WAIT}s waiting for: ${desc}"
    sleep 0.5
  done
}

# body_is URL EXPECTED [curl args...]
body_is() {
  local url=$1 want=$2 got; shift 2
  got="$(curl -sS --max-time 5 "$@" "${url}" 2>/dev/null)" || return 1
  [[ "${got}" == "${want}" ]]
}
etcd_healthy() {
  local got
  got="$(curl -sS --max-time 5 "http://127.0.0.1:${ETCD_PORT}/health" 2>/dev/null)" || return 1
  [[ "${got}" == *'"health":"true"'* ]]
}
kc() { kubectl --kubeconfig="${DIR}/admin.kubeconfig" --request-timeout=10s "$@"; }
kubectl_readyz() { [[ "$(kc get --raw=/readyz 2>/dev/null)" == ok ]]; }
default_sa() { kc -n default get serviceaccount default -o name && kc -n default get configmap kube-root-ca.crt -o name; }

# ---- network -------------------------------------------------------------------
ensure_bridge() {
  local addrs
  if ! ip link show dev "${BRIDGE}" >/dev/null 2>&1; then
    log "creating bridge ${BRIDGE} ${BRIDGE_CIDR}"
    ip link add name "${BRIDGE}" type bridge
  fi
  addrs="$(ip -4 -o addr show dev "${BRIDGE}")"
  if [[ " ${addrs} " != *" inet ${BRIDGE_CIDR} "* ]]; then
    ip addr add "${BRIDGE_CIDR}" dev "${BRIDGE}"
  fi
  ip link set dev "${BRIDGE}" up
  # Remember the original value so `down` can restore it.
  [[ -f "${DIR}/state/ip_forward.orig" ]] || cat /proc/sys/net/ipv4/ip_forward >"${DIR}/state/ip_forward.orig"
  echo 1 >/proc/sys/net/ipv4/ip_forward
}

# pid of a kube-apiserver advertising on the bridge address that is NOT ours
# (another state dir). Its bridge must survive our teardown, e.g. when
# `up --dir B` fails on a port clash with a running cluster A.
other_apiserver() {
  local p cmdline
  for p in /proc/[0-9]*; do
    cmdline="$(tr '\0' ' ' 2>/dev/null <"${p}/cmdline" || true)"
    [[ "${cmdline}" == *kube-apiserver*" --advertise-address=${API_IP} "* ]] || continue
    [[ "${cmdline}" == *"${DIR}/"* ]] && continue
    echo "${p#/proc/}"
    return 0
  done
  return 0
}

remove_bridge() {
  local other
  other="$(other_apiserver)"
  if [[ -n "${other}" ]]; then
    log "bridge ${BRIDGE} is used by another cluster (kube-apiserver pid ${other}); leaving it"
    return 0
  fi
  if ip link show dev "${BRIDGE}" >/dev/null 2>&1; then
    log "deleting bridge ${BRIDGE}"
    ip link del dev "${BRIDGE}" || log "warning: could not delete ${BRIDGE}"
  fi
  if [[ -f "${DIR}/state/ip_forward.orig" ]]; then
    cat "${DIR}/state/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward 2>/dev/null || true
  fi
}

# ---- PKI -------------------------------------------------------------------------
b64() { base64 -w0 <"$1"; }

# sign NAME CN O EKU [SAN]: RSA key + cert signed by ${SIGN_CA:-ca}
sign() {
  local name=$1 cn=$2 o=$3 eku=$4 san=${5:-} subj ca="${SIGN_CA:-ca}"
  subj="/CN=${cn}"
  if [[ -n "${o}" ]]; then subj="/O=${o}${subj}"; fi
  {
    echo "[ext]"
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = ${eku}"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid"
    if [[ -n "${san}" ]]; then echo "subjectAltName = ${san}"; fi
  } >"${PKI}/${name}.ext"
  openssl genrsa -out "${PKI}/${name}.key" 2048 2>/dev/null
  openssl req -new -config "${PKI}/req.cnf" -key "${PKI}/${name}.key" -subj "${subj}" -out "${PKI}/${name}.csr"
  openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/${ca}.crt" -CAkey "${PKI}/${ca}.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "${PKI}/${name}.ext" -extensions ext -out "${PKI}/${name}.crt" 2>/dev/null
  rm -f "${PKI}/${name}.csr" "${PKI}/${name}.ext"
}

# kubeconfig FILE USER CERTNAME
kubeconfig() {
  local file=$1 user=$2 cert=$3
  cat >"${file}.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ${CLUSTER_NAME}
  cluster:
    server: ${API_URL}
    certificate-authority-data: $(b64 "${PKI}/ca.crt")
users:
- name: ${user}
  user:
    client-certificate-data: $(b64 "${PKI}/${cert}.crt")
    client-key-data: $(b64 "${PKI}/${cert}.key")
contexts:
- name: ${CLUSTER_NAME}
  context:
    cluster: ${CLUSTER_NAME}
    user: ${user}
current-context: ${CLUSTER_NAME}
EOF
  chmod 600 "${file}.tmp"
  mv "${file}.tmp" "${file}"
}

gen_pki() {
  if [[ -f "${PKI}/.complete" ]]; then
    log "reusing certificates in ${PKI}"
    return 0
  fi
  log "generating certificates in ${PKI}"
  rm -rf "${PKI}"
  mkdir -p "${PKI}"
  chmod 700 "${PKI}"
  # -config points at this file so the system openssl.cnf (and its default
  # extensions) never leaks in.
  printf '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, digitalSignature, keyEncipherment, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n' \
    >"${PKI}/req.cnf"
  local ca
  for ca in ca front-proxy-ca; do
    openssl genrsa -out "${PKI}/${ca}.key" 2048 2>/dev/null
    openssl req -x509 -new -config "${PKI}/req.cnf" -extensions v3_ca -key "${PKI}/${ca}.key" \
      -subj "/CN=kache-k8s-${ca}" -days 3650 -sha256 -out "${PKI}/${ca}.crt"
  done

  local san="IP:127.0.0.1,IP:${API_IP},IP:${SERVICE_IP},DNS:localhost,DNS:kubernetes"
  san+=",DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign apiserver kube-apiserver "" serverAuth "${san}"
  sign admin kubernetes-admin system:masters clientAuth
  sign controller-manager system:kube-controller-manager "" clientAuth
  sign scheduler system:kube-scheduler "" clientAuth
  # apiserver -> kubelet (logs/exec/port-forward), for a future process kubelet
  sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
  # aggregation layer / requestheader authn (what kubeadm calls front-proxy).
  # Without it the controller-manager and scheduler log a "missing content for
  # CA bundle requestheader-client-ca-file" error over and over.
  SIGN_CA=front-proxy-ca sign front-proxy-client front-proxy-client "" clientAuth

  # service-account token signing key pair
  openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null

  kubeconfig "${DIR}/admin.kubeconfig" kubernetes-admin admin
  kubeconfig "${DIR}/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  kubeconfig "${DIR}/scheduler.kubeconfig" system:kube-scheduler scheduler
  chmod 600 "${PKI}"/*.key
  touch "${PKI}/.complete"
}

# ---- down ------------------------------------------------------------------------
# stop_group NAME... : SIGTERM all, wait up to STOP_TIMEOUT, then SIGKILL.
stop_group() {
  local name pid pids=() deadline p left
  for name in "$@"; do
    pid="$(pid_of "${name}")"
    if [[ -n "${pid}" ]]; then pids+=("${pid}"); log "stopping ${name} (pid ${pid})"; fi
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$(( $(date +%s) + STOP_TIMEOUT ))
  while true; do
    left=()
    for p in "${pids[@]}"; do if is_ours "${p}"; then left+=("${p}"); fi; done
    [[ ${#left[@]} -gt 0 ]] || return 0
    if (( $(date +%s) >= deadline )); then
      log "SIGKILL ${left[*]} (still alive after ${STOP_TIMEOUT}s)"
      kill -KILL "${left[@]}" 2>/dev/null || true
      sleep 0.2
      return 0
    fi
    sleep 0.2
  done
}

teardown() {
  local strays
  # Kubelets first, while the apiserver still answers: they stop their pods
  # and remove their network namespaces themselves.
  stop_all_kubelets
  # The apiserver and its clients first, etcd last, so the apiserver does not
  # spend its shutdown retrying a dead etcd.
  stop_group kube-scheduler kube-controller-manager kube-apiserver
  stop_group etcd
  strays="$(stray_pids | tr '\n' ' ')"
  if [[ -n "${strays// /}" ]]; then
    log "killing leftover processes of ${DIR}: ${strays}"
    # shellcheck disable=SC2086
    kill -TERM ${strays} 2>/dev/null || true
    sleep 2
    strays="$(stray_pids | tr '\n' ' ')"
    # shellcheck disable=SC2086
    [[ -n "${strays// /}" ]] && kill -KILL ${strays} 2>/dev/null || true
  fi
  remove_bridge
  if [[ -d "${DIR}" ]]; then
    if [[ -f "${DIR}/${MARKER}" ]]; then
      rm -rf "${DIR}"
      log "removed ${DIR}"
    elif [[ -z "$(ls -A "${DIR}")" ]]; then
      rmdir "${DIR}"
    else
      log "warning: ${DIR} has no ${MARKER}; not removing it"
    fi
  fi
}

# ---- kubelet ---------------------------------------------------------------------
# One kubelet per Node name. The default Node (kache-local) is the component
# `kache-kubelet` with state in DIR/kubelet; another Node NAME (for a second
# node, or a test sharing the cluster) is `kache-kubelet-NAME` with state in
# DIR/kubelet-NAME, and needs a pod CIDR of its own (KACHE_K8S_POD_CIDR).
if [[ "${NODE_NAME}" == kache-local ]]; then
  KUBELET_NAME="${KUBELET}"; KUBELET_STATE="${DIR}/kubelet"
else
  [[ "${NODE_NAME}" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "bad node name ${NODE_NAME}"
  KUBELET_NAME="${KUBELET}-${NODE_NAME}"; KUBELET_STATE="${DIR}/kubelet-${NODE_NAME}"
fi

# Network namespaces a kubelet created (it leaves a marker per namespace in
# STATE/netns) that are still there: SIGKILL what runs inside (only the kubelet
# starts processes there) and delete them. Normally there are none: the kubelet
# cleans up on SIGTERM; this covers a kubelet that was killed.
cleanup_kpods() {
  local markers="$1/netns" m ns pids
  [[ -d "${markers}" ]] || return 0
  for m in "${markers}"/kpod-*; do
    [[ -e "${m}" ]] || continue
    ns="${m##*/}"
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "${ns}"; then
      pids="$(ip netns pids "${ns}" 2>/dev/null | tr '\n' ' ')"
      if [[ -n "${pids// /}" ]]; then
        log "killing processes left in ${ns}: ${pids}"
        # shellcheck disable=SC2086
        kill -KILL ${pids} 2>/dev/null || true
      fi
      ip netns del "${ns}" 2>/dev/null || log "warning: could not delete netns ${ns}"
      log "removed network namespace ${ns}"
    fi
    rm -f "${m}"
  done
}

# stop_kubelet NAME STATE: SIGTERM (it stops its pods within their grace
# periods), SIGKILL after KUBELET_STOP_TIMEOUT, then remove leftover namespaces.
stop_kubelet() {
  local saved="${STOP_TIMEOUT}"
  STOP_TIMEOUT="${KUBELET_STOP_TIMEOUT}"
  stop_group "$1"
  STOP_TIMEOUT="${saved}"
  cleanup_kpods "$2"
}

# every kubelet of DIR (for `down`)
stop_all_kubelets() {
  local f name node
  for f in "${DIR}"/pids/"${KUBELET}".pid "${DIR}"/pids/"${KUBELET}"-*.pid; do
    [[ -e "${f}" ]] || continue
    name="${f##*/}"; name="${name%.pid}"
    node="${name#"${KUBELET}"}"; node="${node#-}"
    stop_kubelet "${name}" "${DIR}/kubelet${node:+-${node}}"
  done
  for f in "${DIR}"/kubelet "${DIR}"/kubelet-*; do
    [[ -d "${f}" ]] && cleanup_kpods "${f}"
  done
  return 0
}

# the kubelet logged "kubelet running" since its last start
kubelet_running() {
  awk '/^==== /{ok=0} /kubelet running/{ok=1} END{exit !ok}' "${DIR}/logs/${KUBELET_NAME}.log" 2>/dev/null
}

cmd_kubelet_up() {
  local pid
  need ip; need nsenter; need unshare; need mount; need flock; need setsid; need curl
  [[ "$(id -u)" == 0 ]] || die "must run as root (network namespaces)"
  [[ -x "${KUBELET_BIN}" ]] || die "${KUBELET_BIN} missing: run \`cargo build -p process-kubelet\` (or set KACHE_KUBELET_BIN)"
  [[ -f "${DIR}/admin.kubeconfig" ]] || die "no cluster in ${DIR}: run \`cluster.sh up\` first"
  body_is "${API_URL}/readyz" ok --cacert "${PKI}/ca.crt" || die "apiserver ${API_URL} is not ready"
  take_lock
  if pid="$(pid_of "${KUBELET_NAME}")" && [[ -n "${pid}" ]]; then
    log "${KUBELET_NAME} already running (pid ${pid}); kubelet-down first to change its flags"
    rm -f "${LOCK}"
    return 0
  fi
  mkdir -p "${KUBELET_STATE}" "${DIR}/logs" "${DIR}/pids"
  start "${KUBELET_NAME}" "$(realpath "${KUBELET_BIN}")" \
    --kubeconfig="${DIR}/admin.kubeconfig" \
    --state-dir="${KUBELET_STATE}" \
    --node-name="${NODE_NAME}" \
    --bridge="${BRIDGE}" \
    --pod-cidr="${KUBELET_POD_CIDR}" \
    --api-host="${API_IP}" \
    --api-port="${API_PORT}" \
    "${KUBELET_ARGS[@]}"
  wait_until "${KUBELET_NAME} (Node ${NODE_NAME})" "${KUBELET_NAME}" kubelet_running
  rm -f "${LOCK}"
  log "kubelet up: Node ${NODE_NAME}, pods in ${KUBELET_POD_CIDR}, log ${DIR}/logs/${KUBELET_NAME}.log, pod logs ${KUBELET_STATE}/pods/"
}

cmd_kubelet_down() {
  take_lock
  stop_kubelet "${KUBELET_NAME}" "${KUBELET_STATE}"
  rm -f "${LOCK}"
  log "kubelet down (Node ${NODE_NAME})"
}

cmd_down() {
  take_lock
  teardown
  rm -f "${LOCK}"
  log "down"
}

# ---- up --------------------------------------------------------------------------
UP_DONE=0
on_up_exit() {
  local rc=$?
  [[ "${UP_DONE}" == 1 ]] && return 0
  trap '' INT TERM HUP
  exec 1>&"${OUT_FD}" 2>&"${ERR_FD}"
  log "up failed (rc=${rc}); tearing down"
  if [[ -f "${DIR}/${MARKER}" && -n "$(ls -A "${DIR}/logs" 2>/dev/null)" ]]; then
    rm -rf "${DIR}.failed-logs"
    cp -r "${DIR}/logs" "${DIR}.failed-logs" 2>/dev/null && log "logs kept in ${DIR}.failed-logs"
  fi
  teardown || true
  rm -f "${LOCK}"
  exit "${rc}"
}

cmd_up() {
  local bin c port
  need openssl; need curl; need kubectl; need ip; need flock; need setsid; need ss
  [[ "$(id -u)" == 0 ]] || die "must run as root (bridge + ip_forward)"

  if [[ -n "${KACHE_K8S_BIN:-}" ]]; then
    bin="${KACHE_K8S_BIN}"
  else
    bin="$("${SELF_DIR}/build-control-plane.sh" | tail -n 1)"
  fi
  for c in "${COMPONENTS[@]}"; do [[ -x "${bin}/${c}" ]] || die "${bin}/${c} missing"; done

  take_lock
  if [[ -d "${DIR}" && ! -f "${DIR}/${MARKER}" && -n "$(ls -A "${DIR}")" ]]; then
    die "${DIR} exists, is not empty and was not created by cluster.sh"
  fi

  trap on_up_exit EXIT
  trap 'log "interrupted"; exit 130' INT
  trap 'log "terminated"; exit 143' TERM
  trap 'log "hangup"; exit 129' HUP

  mkdir -p "${DIR}"/{logs,pids,state,etcd,certs}
  touch "${DIR}/${MARKER}"
  chmod 700 "${DIR}/etcd"

  # Ports must be free unless we hold them already.
  local -A port_of=([etcd]="${ETCD_PORT} ${ETCD_PEER_PORT}" [kube-apiserver]="${API_PORT}"
                    [kube-controller-manager]="${KCM_PORT}" [kube-scheduler]="${SCHED_PORT}")
  for c in "${COMPONENTS[@]}"; do
    [[ -n "$(pid_of "${c}")" ]] && continue
    for port in ${port_of[${c}]}; do
      if port_in_use "${port}"; then die "port ${port} (for ${c}) is already in use"; fi
    done
  done

  ensure_bridge
  gen_pki

  cat >"${DIR}/cluster.env" <<EOF
# written by tests/k8s/cluster.sh; sourceable
KACHE_K8S_DIR=${DIR}
KACHE_K8S_BIN=${bin}
KUBECONFIG=${DIR}/admin.kubeconfig
KACHE_K8S_API_URL=${API_URL}
KACHE_K8S_API_IP=${API_IP}
KACHE_K8S_API_PORT=${API_PORT}
KACHE_K8S_CA=${PKI}/ca.crt
KACHE_K8S_CA_KEY=${PKI}/ca.key
KACHE_K8S_BRIDGE=${BRIDGE}
KACHE_K8S_BRIDGE_CIDR=${BRIDGE_CIDR}
KACHE_K8S_POD_CIDR=${POD_CIDR}
KACHE_K8S_SERVICE_CIDR=${SERVICE_CIDR}
KACHE_K8S_SERVICE_IP=${SERVICE_IP}
EOF

  start etcd "${bin}/etcd" \
    --name=kache \
    --data-dir="${DIR}/etcd" \
    --listen-client-urls="http://127.0.0.1:${ETCD_PORT}" \
    --advertise-client-urls="http://127.0.0.1:${ETCD_PORT}" \
    --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster="kache=http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster-state=new \
    --unsafe-no-fsync="${ETCD_NO_FSYNC}"
  wait_until "etcd /health" etcd etcd_healthy

  start kube-apiserver "${bin}/kube-apiserver" \
    --advertise-address="${API_IP}" \
    --bind-address="${API_BIND}" \
    --secure-port="${API_PORT}" \
    --cert-dir="${DIR}/certs/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
    --client-ca-file="${PKI}/ca.crt" \
    --tls-cert-file="${PKI}/apiserver.crt" \
    --tls-private-key-file="${PKI}/apiserver.key" \
    --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" \
    --kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer="${SA_ISSUER}" \
    --service-account-key-file="${PKI}/sa.pub" \
    --service-account-signing-key-file="${PKI}/sa.key" \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --authorization-mode=Node,RBAC \
    --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="${PKI}/front-proxy-client.crt" \
    --proxy-client-key-file="${PKI}/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --profiling=false
  wait_until "kube-apiserver ${API_URL}/readyz" kube-apiserver \
    body_is "${API_URL}/readyz" ok --cacert "${PKI}/ca.crt"
  wait_until "kubectl get --raw=/readyz" kube-apiserver kubectl_readyz

  start kube-controller-manager "${bin}/kube-controller-manager" \
    --kubeconfig="${DIR}/controller-manager.kubeconfig" \
    --authentication-kubeconfig="${DIR}/controller-manager.kubeconfig" \
    --authorization-kubeconfig="${DIR}/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="${KCM_PORT}" \
    --cert-dir="${DIR}/certs/kube-controller-manager" \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="${PKI}/sa.key" \
    --root-ca-file="${PKI}/ca.crt" \
    --cluster-signing-cert-file="${PKI}/ca.crt" \
    --cluster-signing-key-file="${PKI}/ca.key" \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --cluster-name="${CLUSTER_NAME}" \
    --flex-volume-plugin-dir="${DIR}/flexvolume" \
    --leader-elect=false \
    --profiling=false
  start kube-scheduler "${bin}/kube-scheduler" \
    --kubeconfig="${DIR}/scheduler.kubeconfig" \
    --authentication-kubeconfig="${DIR}/scheduler.kubeconfig" \
    --authorization-kubeconfig="${DIR}/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="${SCHED_PORT}" \
    --cert-dir="${DIR}/certs/kube-scheduler" \
    --leader-elect=false \
    --profiling=false
  wait_until "kube-controller-manager https://127.0.0.1:${KCM_PORT}/healthz" kube-controller-manager \
    body_is "https://127.0.0.1:${KCM_PORT}/healthz" ok -k
  wait_until "kube-scheduler https://127.0.0.1:${SCHED_PORT}/healthz" kube-scheduler \
    body_is "https://127.0.0.1:${SCHED_PORT}/healthz" ok -k
  wait_until "ServiceAccount default/default + ConfigMap default/kube-root-ca.crt" kube-controller-manager \
    default_sa

  for c in "${COMPONENTS[@]}"; do
    [[ -n "$(pid_of "${c}")" ]] || die "${c} is not running"
  done
  UP_DONE=1
  trap - EXIT INT TERM HUP
  log "cluster up: ${API_URL} (bridge ${BRIDGE} ${BRIDGE_CIDR}, services ${SERVICE_CIDR})"
  echo "${DIR}/admin.kubeconfig"
  echo "export KUBECONFIG=${DIR}/admin.kubeconfig"
}

# ---- status ----------------------------------------------------------------------
cmd_status() {
  local c pid ok=0 addrs
  for c in "${COMPONENTS[@]}"; do
    pid="$(pid_of "${c}")"
    if [[ -n "${pid}" ]]; then
      printf '%-24s running (pid %s)\n' "${c}" "${pid}"
    else
      printf '%-24s not running\n' "${c}"; ok=1
    fi
  done
  if ip link show dev "${BRIDGE}" >/dev/null 2>&1; then
    addrs="$(ip -4 -o addr show dev "${BRIDGE}" | awk '{print $4}' | tr '\n' ' ')"
    printf '%-24s present %s\n' "bridge ${BRIDGE}" "${addrs}"
  else
    printf '%-24s absent\n' "bridge ${BRIDGE}"; ok=1
  fi
  if [[ -f "${PKI}/ca.crt" ]] && body_is "${API_URL}/readyz" ok --cacert "${PKI}/ca.crt"; then
    printf '%-24s ok (%s)\n' "apiserver /readyz" "${API_URL}"
  else
    printf '%-24s not ready (%s)\n' "apiserver /readyz" "${API_URL}"; ok=1
  fi
  pid="$(pid_of "${KUBELET_NAME}")"
  if [[ -n "${pid}" ]]; then
    printf '%-24s running (pid %s, Node %s)\n' "${KUBELET_NAME}" "${pid}" "${NODE_NAME}"
  else
    printf '%-24s not running (optional: cluster.sh kubelet-up)\n' "${KUBELET_NAME}"
  fi
  if [[ -f "${DIR}/admin.kubeconfig" ]]; then
    printf '%-24s %s\n' "kubeconfig" "${DIR}/admin.kubeconfig"
  fi
  return "${ok}"
}

cmd_env() {
  [[ -f "${DIR}/admin.kubeconfig" ]] || die "no cluster in ${DIR}"
  echo "export KUBECONFIG=${DIR}/admin.kubeconfig"
}

case "${CMD}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  kubelet-up) cmd_kubelet_up ;;
  kubelet-down) cmd_kubelet_down ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
