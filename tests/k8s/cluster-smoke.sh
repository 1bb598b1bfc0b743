#!/usr/bin/env bash
# End-to-end check of cluster.sh:
#   cold `up` (timed) -> idempotent `up` -> server version, namespaces, default SA
#   -> StatefulSet + headless Service (pods created, Pending, FailedScheduling)
#   -> CRD + custom object -> fake Node => scheduler binds the pods to it
#   -> apiserver reachable from a pod-like network namespace on the bridge
#      (CA-verified /readyz, ServiceAccount bearer token, admin kubeconfig)
#   -> `down` leaves no process, bridge or dir behind
#   -> `up` that fails midway, and `up` interrupted with SIGINT, both clean up.
# Always runs `down` at the end, even on failure. Needs root.
#
# Usage: tests/k8s/cluster-smoke.sh        (state dir: ${KACHE_K8S_DIR:-/tmp/kache-k8s-smoke})
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER="${HERE}/cluster.sh"
export KACHE_K8S_DIR="${KACHE_K8S_DIR:-/tmp/kache-k8s-smoke}"
DIR="${KACHE_K8S_DIR}"
BRIDGE="${KACHE_K8S_BRIDGE:-kache0}"
NS=kt-test
VETH_H=kt-test-h
VETH_C=kt-test-c
NS_IP=10.88.0.50/16
GW=10.88.0.1
API="https://${GW}:6443"
export KUBECONFIG="${DIR}/admin.kubeconfig"

step() { printf '\n=== %s\n' "$*" >&2; }
pass() { printf 'PASS: %s\n' "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
secs() { local ms=$1; printf '%d.%02d' $(( ms / 1000 )) $(( ms % 1000 / 10 )); }
kc() { kubectl --request-timeout=10s "$@" 2> >(grep -v 'exceeds the supported minor version skew' >&2); }

# retry TIMEOUT DESC CMD... : bounded wait
retry() {
  local t=$1 desc=$2; shift 2
  local deadline=$(( $(date +%s) + t ))
  until "$@"; do
    (( $(date +%s) < deadline )) || fail "timed out after ${t}s: ${desc}"
    sleep 1
  done
  pass "${desc}"
}

cleanup_netns() {
  ip netns del "${NS}" 2>/dev/null || true
  ip link del "${VETH_H}" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT
  cleanup_netns
  "${CLUSTER}" down >/dev/null 2>&1 || true
  if [[ ${rc} -eq 0 ]]; then echo "SMOKE OK" >&2; else echo "SMOKE FAILED (rc=${rc})" >&2; fi
  exit "${rc}"
}
trap cleanup EXIT

# Everything that belongs to DIR: pids from pid files + bridge + dir.
assert_gone() {
  local what=$1 p
  shift
  for p in "$@"; do
    if [[ "$(cmdline_of "${p}")" == *"${DIR}/"* ]]; then fail "${what}: pid ${p} still alive"; fi
  done
  if ip link show dev "${BRIDGE}" >/dev/null 2>&1; then fail "${what}: bridge ${BRIDGE} still there"; fi
  [[ ! -e "${DIR}" ]] || fail "${what}: ${DIR} still there"
  pass "${what}: no process, no bridge, no dir"
}
# (pipelines into `grep -q` are avoided: with pipefail, an early grep exit can
# SIGPIPE the writer and turn a match into a failure)
cmdline_of() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }
procs_of_dir() {
  local p
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    if [[ "$(cmdline_of "${p}")" == *"${DIR}/"* ]]; then echo "${p}"; fi
  done
  return 0
}

# ---------------------------------------------------------------------------------
step "cold up"
"${CLUSTER}" down >/dev/null 2>&1 || true
t=$(now_ms)
"${CLUSTER}" up >"${DIR}.up.out"
COLD=$(( $(now_ms) - t ))
[[ "$(tail -n1 "${DIR}.up.out")" == "export KUBECONFIG=${DIR}/admin.kubeconfig" ]] || fail "last line of up"
rm -f "${DIR}.up.out"
pass "cold up in $(secs ${COLD}) s"

step "idempotent up"
t=$(now_ms)
"${CLUSTER}" up >/dev/null
WARM=$(( $(now_ms) - t ))
pass "second up in $(secs ${WARM}) s"
"${CLUSTER}" status >&2 || fail "status"

step "version / namespaces / default SA"
v="$(kc version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n1)"
[[ "${v}" == v1.34.4 ]] || fail "server version ${v}"
pass "server ${v}"
kc get ns >&2
kc -n default get sa default >/dev/null && pass "ServiceAccount default/default"

step "StatefulSet + headless Service"
kc apply -f - >&2 <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: kt-web, namespace: default}
spec:
  clusterIP: None
  selector: {app: kt-web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kt-web, namespace: default}
spec:
  serviceName: kt-web
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: kt-web}}
  template:
    metadata: {labels: {app: kt-web}}
    spec:
      containers:
      - name: c
        image: busybox
        command: [sleep, infinity]
        resources: {requests: {cpu: 100m, memory: 64Mi}}
EOF
pods_created() { [[ "$(kc get pods -l app=kt-web -o name | wc -l)" == 2 ]]; }
retry 60 "StatefulSet controller created 2 pods" pods_created
kc get pods -o wide >&2
phases="$(kc get pods -l app=kt-web -o jsonpath='{.items[*].status.phase}')"
[[ "${phases}" == "Pending Pending" ]] || fail "phases: ${phases}"
pass "pods Pending (no node yet)"
unschedulable() { [[ -n "$(kc get events --field-selector reason=FailedScheduling -o name)" ]]; }
retry 60 "scheduler emitted FailedScheduling (no nodes)" unschedulable
kc get events --field-selector reason=FailedScheduling -o custom-columns=OBJ:.involvedObject.name,MSG:.message >&2
kc get endpointslices -l kubernetes.io/service-name=kt-web >&2

step "CRD + custom object"
kc apply -f - >&2 <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.kt.kache.test}
spec:
  group: kt.kache.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {size: {type: integer}}
EOF
kc wait --for=condition=Established --timeout=60s crd/widgets.kt.kache.test >&2
widget() {
  kc apply -f - >&2 <<'EOF'
apiVersion: kt.kache.test/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
EOF
}
retry 30 "Widget created" widget
[[ "$(kc get widget w1 -o jsonpath='{.spec.size}')" == 3 ]] || fail "widget spec"
pass "Widget w1 read back"

step "fake Node -> scheduler binds the pods"
kc apply -f - >&2 <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: kt-node-1
  labels: {kubernetes.io/hostname: kt-node-1, kubernetes.io/os: linux}
status:
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
  allocatable: {cpu: "4", memory: 8Gi, pods: "110"}
  conditions:
  - type: Ready
    status: "True"
    reason: KubeletReady
    message: fake node for the smoke test
  addresses: [{type: InternalIP, address: 10.88.0.2}]
EOF
cap="$(kc get node kt-node-1 -o jsonpath='{.status.capacity.cpu}')"
[[ "${cap}" == 4 ]] || fail "node status was not stored (capacity.cpu=${cap})"
pass "Node kt-node-1 with capacity stored on create"
bound() { [[ "$(kc get pods -l app=kt-web -o jsonpath='{.items[*].spec.nodeName}')" == "kt-node-1 kt-node-1" ]]; }
retry 60 "both pods bound to kt-node-1" bound
kc get pods -o wide >&2
kc get events --field-selector reason=Scheduled -o custom-columns=OBJ:.involvedObject.name,MSG:.message >&2

step "apiserver from a pod network namespace"
cleanup_netns
ip netns add "${NS}"
ip link add "${VETH_H}" type veth peer name "${VETH_C}"
ip link set "${VETH_C}" netns "${NS}"
ip link set "${VETH_H}" master "${BRIDGE}" up
ip netns exec "${NS}" ip link set lo up
ip netns exec "${NS}" ip addr add "${NS_IP}" dev "${VETH_C}"
ip netns exec "${NS}" ip link set "${VETH_C}" up
ip netns exec "${NS}" ip route add default via "${GW}"
nsreadyz() { [[ "$(ip netns exec "${NS}" curl -sS --max-time 5 --cacert "${DIR}/pki/ca.crt" "${API}/readyz")" == ok ]]; }
retry 20 "curl --cacert ${API}/readyz from netns ${NS} (${NS_IP})" nsreadyz
[[ "$(ip netns exec "${NS}" curl -sk --max-time 5 "${API}/readyz")" == ok ]] || fail "curl -k from netns"
pass "curl -k from netns"
# A ServiceAccount token, the way an in-cluster client would authenticate.
tok="$(kc -n default create token default --duration=10m)"
code="$(ip netns exec "${NS}" curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
  --cacert "${DIR}/pki/ca.crt" -H "Authorization: Bearer ${tok}" "${API}/api")"
[[ "${code}" == 200 ]] || fail "SA token GET /api from netns: HTTP ${code}"
anon="$(ip netns exec "${NS}" curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "${DIR}/pki/ca.crt" "${API}/api")"
pass "ServiceAccount token authenticates from netns (HTTP 200; anonymous gets ${anon})"
out="$(ip netns exec "${NS}" kubectl --request-timeout=10s get --raw /version 2>/dev/null)"
[[ "${out}" == *'"gitVersion": "v1.34.4"'* ]] || fail "admin kubeconfig from netns: ${out}"
pass "admin kubeconfig works from netns"
cleanup_netns
if ip link show "${VETH_H}" >/dev/null 2>&1; then fail "veth left behind"; fi
pass "netns + veth removed"

step "down"
mapfile -t PIDS < <(cat "${DIR}"/pids/*.pid)
t=$(now_ms)
"${CLUSTER}" down >&2
DOWN=$(( $(now_ms) - t ))
assert_gone "down ($(secs ${DOWN}) s)" "${PIDS[@]}"
"${CLUSTER}" down >&2 && pass "second down is a no-op"
"${CLUSTER}" status >/dev/null 2>&1 && fail "status should be non-zero after down"
pass "status rc!=0 after down"

step "up that fails midway cleans up"
if KACHE_K8S_WAIT=1 "${CLUSTER}" up >/dev/null 2>"${DIR}.fail.err"; then fail "up with KACHE_K8S_WAIT=1 should fail"; fi
grep -E 'timed out|ERROR' "${DIR}.fail.err" >&2 || fail "no error message from failed up"
assert_gone "failed up"
rm -rf "${DIR}.fail.err" "${DIR}.failed-logs"

step "SIGINT during up cleans up"
set -m   # own process group, like a terminal's foreground job; SIGINT not ignored
"${CLUSTER}" up >/dev/null 2>"${DIR}.int.err" &
UPPID=$!
set +m
waited=0
until [[ -s "${DIR}/pids/kube-apiserver.pid" ]] || (( waited > 300 )); do sleep 0.1; waited=$((waited + 1)); done
[[ -s "${DIR}/pids/kube-apiserver.pid" ]] || fail "apiserver never started"
mapfile -t PIDS < <(procs_of_dir)
kill -INT -- "-${UPPID}"   # Ctrl-C goes to the whole foreground process group
rc=0; wait "${UPPID}" || rc=$?
[[ ${rc} -eq 130 ]] || fail "interrupted up exited ${rc}, want 130"
grep -E 'interrupted' "${DIR}.int.err" >&2 || fail "no 'interrupted' in up's stderr"
assert_gone "interrupted up (had pids ${PIDS[*]})" "${PIDS[@]}"
rm -rf "${DIR}.int.err" "${DIR}.failed-logs"

printf '\nTIMINGS: cold up %s s, idempotent up %s s, down %s s\n' "$(secs ${COLD})" "$(secs ${WARM})" "$(secs ${DOWN})" >&2
