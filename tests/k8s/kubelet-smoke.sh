#!/usr/bin/env bash
# End-to-end check of the process kubelet (kache-kubelet) on a real control plane:
#   Node registered and Ready, Lease renewed
#   -> StatefulSet (2 pods, readiness + liveness probes, PVC, ConfigMap volume, fieldRef env,
#      $(VAR) args) and a Deployment (command through the image map, envFrom, Secret volume)
#      run: pods Running + Ready, IPs in the pod CIDR, EndpointSlices list exactly those IPs
#   -> inside a pod: hostname, env, args, ServiceAccount token/ca.crt/namespace; the pod's
#      own kube client (Config::infer, in-cluster) authenticates as its ServiceAccount with
#      a token bound to the pod (SelfSubjectReview)
#   -> SIGKILLed process restarts (restartCount 1), its PVC keeps data across restarts
#   -> failing liveness probe restarts the container; failing readiness takes the IP out
#      of the EndpointSlice's ready endpoints
#   -> a ConfigMap change reaches the mounted file
#   -> deleting a pod: graceful stop, object gone, StatefulSet recreates it, data kept
#   -> an unmapped image is ErrImagePull/ImagePullBackOff, not a crash
#   -> kubelet-down stops every pod process and removes every network namespace.
# Needs root and `cargo build -p process-kubelet --bins` (kache-kubelet and the pod program
# kache-e2e-app; done here unless KACHE_SMOKE_NO_BUILD=1).
#
# If a cluster is already running in ${KACHE_K8S_DIR:-/tmp/kache-k8s} (someone else's),
# it is shared, not touched: the test registers its own tainted Node `kt-smoke` with its own
# pod CIDR, uses only namespace kt-smoke, and removes all of that at the end. Otherwise it
# brings up a cluster in ${KACHE_K8S_DIR:-/tmp/kache-k8s} and takes it down at the end.
#
# Usage: tests/k8s/kubelet-smoke.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../.." && pwd)"
CLUSTER="${HERE}/cluster.sh"
export KACHE_K8S_DIR="${KACHE_K8S_DIR:-/tmp/kache-k8s}"
DIR="${KACHE_K8S_DIR}"
export KUBECONFIG="${DIR}/admin.kubeconfig"
NS=kt-smoke
APP="${CARGO_TARGET_DIR:-${REPO}/target}/debug/kache-e2e-app"
BRIDGE_CIDR="${KACHE_K8S_BRIDGE_CIDR:-10.88.0.1/16}"
API_IP="${BRIDGE_CIDR%/*}"
API_PORT="${KACHE_K8S_API_PORT:-6443}"
NET16="${API_IP%.*.*}"   # 10.88

T0=$(date +%s)
step() { printf '\n=== [%3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
pass() { printf 'PASS: %s\n' "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
kc() { kubectl --request-timeout=10s "$@" 2> >(grep -v 'exceeds the supported minor version skew' >&2); }
retry() {
  local t=$1 desc=$2; shift 2
  local deadline=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || fail "timed out after ${t}s: ${desc}"
    sleep 1
  done
  pass "${desc}"
}
jp() { kc -n "${NS}" get "$1" -o jsonpath="$2"; }
json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[k] if isinstance(d,dict) else d[int(k)]
print(d if not isinstance(d,(dict,list)) else json.dumps(d))' "$1"; }

# ---- mode ---------------------------------------------------------------------------
if "${CLUSTER}" status >/dev/null 2>&1; then
  SHARED=1
  export KACHE_K8S_NODE_NAME=kt-smoke KACHE_K8S_POD_CIDR="${NET16}.250.0/24"
  NODE=kt-smoke
  STATE="${DIR}/kubelet-kt-smoke"
  KUBELET_LOG="${DIR}/logs/kache-kubelet-kt-smoke.log"
  KUBELET_EXTRA=(-- --register-with-taints=kache.dev/kt-smoke=true:NoSchedule --provision-namespace="${NS}")
elif [[ -e "${DIR}" ]]; then
  # Half a cluster: not ours to take down, and not usable either.
  echo "FAIL: ${DIR} exists but \`cluster.sh status\` is not healthy; fix it or run cluster.sh down" >&2
  exit 1
else
  SHARED=0
  export KACHE_K8S_POD_CIDR="${NET16}.1.0/24"
  NODE="${KACHE_K8S_NODE_NAME:-kache-local}"
  STATE="${DIR}/kubelet"
  KUBELET_LOG="${DIR}/logs/kache-kubelet.log"
  KUBELET_EXTRA=()
fi
CIDR_PREFIX="${KACHE_K8S_POD_CIDR%.*}."   # a /24: 10.88.x.

cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  if [[ ${rc} -ne 0 ]]; then
    echo "--- kubelet log (tail)" >&2; tail -n 40 "${KUBELET_LOG}" 2>/dev/null >&2
    kc -n "${NS}" get pods -o wide >&2
  fi
  if [[ ${SHARED} == 1 ]]; then
    # The kubelet is down by now (or stops here), so nothing finalizes the pods:
    # force-delete them, as one does for pods of a node that is gone.
    kc delete namespace "${NS}" --wait=false >/dev/null 2>&1
    "${CLUSTER}" kubelet-down >/dev/null 2>&1
    kc -n "${NS}" delete pods --all --force --grace-period=0 >/dev/null 2>&1
    kc delete node "${NODE}" >/dev/null 2>&1
    kc -n kube-node-lease delete lease "${NODE}" >/dev/null 2>&1
    kc wait --for=delete namespace/"${NS}" --timeout=120s >/dev/null 2>&1 || echo "warning: namespace ${NS} still terminating" >&2
    kc delete pv -l kache.dev/provisioned-by="${NODE}" >/dev/null 2>&1
    rm -rf "${STATE}" "${KUBELET_LOG}" "${DIR}/pids/kache-kubelet-kt-smoke.pid"
    echo "(shared cluster left running)" >&2
  else
    "${CLUSTER}" down >/dev/null 2>&1
  fi
  if [[ ${rc} -eq 0 ]]; then echo "KUBELET SMOKE OK" >&2; else echo "KUBELET SMOKE FAILED (rc=${rc})" >&2; fi
  exit "${rc}"
}
trap cleanup EXIT

# ---- build, cluster, kubelet ---------------------------------------------------------
if [[ "${KACHE_SMOKE_NO_BUILD:-0}" != 1 ]]; then
  step "cargo build -p process-kubelet --bins"
  (cd "${REPO}" && cargo build -q -p process-kubelet --bins)
fi
[[ -x "${APP}" ]] || fail "${APP} missing"

if [[ ${SHARED} == 1 ]]; then
  step "cluster already running in ${DIR}: sharing it (Node ${NODE}, pods in ${KACHE_K8S_POD_CIDR}, namespace ${NS})"
  kc get namespace "${NS}" >/dev/null 2>&1 && fail "namespace ${NS} exists: another smoke run?"
else
  step "cluster up (${DIR})"
  "${CLUSTER}" up >/dev/null
fi

step "kubelet up"
"${CLUSTER}" kubelet-up --image "kache/e2e-app=${APP}" "${KUBELET_EXTRA[@]}" >&2
node_ready() { [[ "$(kc get node "${NODE}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
retry 30 "Node ${NODE} Ready" node_ready
[[ "$(kc get node "${NODE}" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')" == "${API_IP}" ]] \
  || fail "InternalIP"
[[ "$(kc get node "${NODE}" -o jsonpath='{.status.capacity.pods}')" == 110 ]] || fail "capacity.pods"
pass "Node InternalIP ${API_IP}, capacity pods 110"
renew0="$(kc -n kube-node-lease get lease "${NODE}" -o jsonpath='{.spec.renewTime}')"
[[ -n "${renew0}" ]] || fail "no Lease for ${NODE}"
pass "Lease kube-node-lease/${NODE} (renewTime ${renew0})"

# ---- workloads ----------------------------------------------------------------------
step "StatefulSet + Deployment"
kc apply -f - >&2 <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: ${NS}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, namespace: ${NS}}
data: {greeting: hello, app.conf: "mode=one\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: ${NS}}
stringData: {user: admin, password: hunter2}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ${NS}}
spec: {clusterIP: None, selector: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: ${NS}}
spec:
  serviceName: web
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: ${NODE}}
      tolerations: [{key: kache.dev/kt-smoke, operator: Exists, effect: NoSchedule}]
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: kache/e2e-app:smoke
        args: ["--data-dir=/data", "--config-file=/etc/app/app.conf", "hello-\$(POD_NAME)", "\$\$(POD_NAME)"]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: GREETING, valueFrom: {configMapKeyRef: {name: app-config, key: greeting}}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
        livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1, failureThreshold: 2}
        volumeMounts:
        - {name: data, mountPath: /data}
        - {name: config, mountPath: /etc/app}
      volumes:
      - {name: config, configMap: {name: app-config}}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tool, namespace: ${NS}}
spec:
  replicas: 1
  selector: {matchLabels: {app: tool}}
  template:
    metadata: {labels: {app: tool}}
    spec:
      nodeSelector: {kubernetes.io/hostname: ${NODE}}
      tolerations: [{key: kache.dev/kt-smoke, operator: Exists, effect: NoSchedule}]
      containers:
      - name: tool
        image: kache/e2e-app
        command: [/usr/local/bin/kache-e2e-app, "--port=9090"]
        args: ["\$(user)-\$(CFG_greeting)"]
        envFrom:
        - secretRef: {name: creds}
        - {configMapRef: {name: app-config}, prefix: CFG_}
        startupProbe: {tcpSocket: {port: 9090}, periodSeconds: 1, failureThreshold: 30}
        readinessProbe: {exec: {command: [sh, -c, 'test "\$(cat /etc/creds/pw)" = hunter2']}, periodSeconds: 1}
        volumeMounts: [{name: creds, mountPath: /etc/creds, readOnly: true}]
      volumes:
      - {name: creds, secret: {secretName: creds, items: [{key: password, path: pw}]}}
EOF
retry 30 "StatefulSet created 2 pods" bash -c "[[ \$(kubectl -n ${NS} get pods -l app=web -o name 2>/dev/null | wc -l) == 2 ]]"
kc -n "${NS}" wait --for=condition=Ready pod -l app=web --timeout=120s >&2
kc -n "${NS}" wait --for=condition=Ready pod -l app=tool --timeout=120s >&2
kc -n "${NS}" get pods,pvc -o wide >&2
pass "web-0, web-1 and the tool pod are Ready"

step "pod IPs, EndpointSlices"
ip_of() { jp "pod/$1" '{.status.podIP}'; }
IP0="$(ip_of web-0)"; IP1="$(ip_of web-1)"
for ip in "${IP0}" "${IP1}"; do [[ "${ip}" == "${CIDR_PREFIX}"* ]] || fail "pod IP ${ip} not in ${KACHE_K8S_POD_CIDR}"; done
[[ "$(jp pod/web-0 '{.status.phase} {.status.hostIP}')" == "Running ${API_IP}" ]] || fail "phase/hostIP"
pass "pods Running with IPs ${IP0} ${IP1} in ${KACHE_K8S_POD_CIDR}, hostIP ${API_IP}"
slice_ips() { kc -n "${NS}" get endpointslices -l kubernetes.io/service-name=web -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}{"\n"}{end}' | sort | tr '\n' ' '; }
want="$(printf '%s\n' "${IP0}" "${IP1}" | sort | tr '\n' ' ')"
slices_match() { [[ "$(slice_ips)" == "${want}" ]]; }
retry 30 "EndpointSlice of Service web lists ${want}" slices_match

step "what a pod sees"
W="$(curl -sS --max-time 5 "http://${IP0}:8080/whoami")"
[[ "$(json_field hostname <<<"${W}")" == web-0 ]] || fail "hostname: ${W}"
[[ "$(json_field env.POD_NAME <<<"${W}")" == web-0 ]] || fail "POD_NAME"
[[ "$(json_field env.POD_NAMESPACE <<<"${W}")" == "${NS}" ]] || fail "POD_NAMESPACE"
[[ "$(json_field env.POD_IP <<<"${W}")" == "${IP0}" ]] || fail "POD_IP"
[[ "$(json_field env.NODE_NAME <<<"${W}")" == "${NODE}" ]] || fail "NODE_NAME"
[[ "$(json_field env.GREETING <<<"${W}")" == hello ]] || fail "GREETING (configMapKeyRef)"
[[ "$(json_field env.KUBERNETES_SERVICE_HOST <<<"${W}")" == "${API_IP}" ]] || fail "KUBERNETES_SERVICE_HOST"
[[ "$(json_field env.KUBERNETES_SERVICE_PORT <<<"${W}")" == "${API_PORT}" ]] || fail "KUBERNETES_SERVICE_PORT"
[[ "$(json_field rest <<<"${W}")" == '["hello-web-0", "$(POD_NAME)"]' ]] || fail "args expansion: $(json_field rest <<<"${W}")"
[[ "$(json_field namespace <<<"${W}")" == "${NS}" ]] || fail "serviceaccount/namespace"
[[ "$(json_field ca_present <<<"${W}")" == True ]] || fail "serviceaccount/ca.crt"
(( $(json_field token_bytes <<<"${W}") > 100 )) || fail "serviceaccount/token"
[[ "$(json_field config <<<"${W}")" == "mode=one" ]] || fail "ConfigMap volume"
[[ "$(json_field starts <<<"${W}")" == 1 ]] || fail "first start"
pass "hostname, fieldRef/configMapKeyRef env, KUBERNETES_SERVICE_*, \$(VAR) args, SA files, ConfigMap volume"
A="$(curl -sS --max-time 20 "http://${IP0}:8080/apiserver")"
[[ "$(json_field username <<<"${A}")" == "system:serviceaccount:${NS}:default" ]] || fail "in-cluster client: ${A}"
[[ "$(json_field pod_name <<<"${A}")" == web-0 ]] || fail "token not bound to the pod: ${A}"
[[ "$(json_field cluster_url <<<"${A}")" == "https://${API_IP}:${API_PORT}/" ]] || fail "cluster_url: ${A}"
pass "the pod's Config::infer() client reaches https://${API_IP}:${API_PORT} as system:serviceaccount:${NS}:default (token bound to web-0)"
TOOL="$(kc -n "${NS}" get pods -l app=tool -o jsonpath='{.items[0].status.podIP}')"
T="$(curl -sS --max-time 5 "http://${TOOL}:9090/whoami")"
[[ "$(json_field rest <<<"${T}")" == '["admin-hello"]' ]] || fail "Deployment args from envFrom: ${T}"
[[ "$(json_field argv.0 <<<"${T}")" == "${APP}" ]] || fail "command[0] not mapped: ${T}"
pass "Deployment: command[0] mapped to ${APP##*/}, envFrom secret+prefixed configMap, exec readiness probe on a Secret volume"

step "a SIGKILLed process is restarted"
pidf="${STATE}/pods/${NS}_web-0/app.pid"
PID="$(cat "${pidf}")"
[[ "$(ip netns identify "${PID}")" == kpod-* ]] || fail "pid ${PID} is not in a kpod netns"
kill -KILL "${PID}"
restarted() { [[ "$(jp pod/web-0 '{.status.containerStatuses[0].restartCount}')" == 1 ]]; }
retry 30 "restartCount 0 -> 1" restarted
[[ "$(jp pod/web-0 '{.status.containerStatuses[0].lastState.terminated.exitCode}')" == 137 ]] || fail "lastState exit 137"
kc -n "${NS}" wait --for=condition=Ready pod/web-0 --timeout=60s >&2
[[ "$(curl -sS --max-time 5 "http://${IP0}:8080/whoami" | json_field starts)" == 2 ]] || fail "PVC data lost on restart"
pass "lastState exit 137, Ready again, PVC start counter 2"

step "liveness and readiness"
curl -sS --max-time 5 -X POST "http://${IP1}:8080/fail-liveness" >/dev/null
live_restarted() { [[ "$(jp pod/web-1 '{.status.containerStatuses[0].restartCount}')" == 1 ]]; }
retry 30 "failing liveness probe restarts web-1" live_restarted
[[ "$(jp pod/web-1 '{.status.containerStatuses[0].lastState.terminated.message}')" == *"Liveness probe failed"* ]] \
  || fail "lastState message"
kc -n "${NS}" wait --for=condition=Ready pod/web-1 --timeout=60s >&2
curl -sS --max-time 5 -X POST "http://${IP1}:8080/unready" >/dev/null
unready_slice() {
  [[ "$(kc -n "${NS}" get endpointslices -l kubernetes.io/service-name=web -o jsonpath="{range .items[*].endpoints[?(@.addresses[0]=='${IP1}')]}{.conditions.ready}{end}")" == false ]]
}
retry 30 "failing readiness probe: ${IP1} not ready in the EndpointSlice" unready_slice
[[ "$(jp pod/web-1 '{.status.conditions[?(@.type=="Ready")].status}')" == False ]] || fail "web-1 still Ready"

step "ConfigMap update reaches the volume"
kc -n "${NS}" patch configmap app-config -p '{"data":{"app.conf":"mode=two\n"}}' >/dev/null
config_updated() { [[ "$(curl -sS --max-time 5 "http://${IP0}:8080/whoami" | json_field config)" == "mode=two" ]]; }
retry 40 "web-0 reads mode=two from its ConfigMap volume" config_updated

step "deleting a pod"
UID1="$(jp pod/web-1 '{.metadata.uid}')"
OLD_PID="$(cat "${STATE}/pods/${NS}_web-1/app.pid")"
t0=$(date +%s)
kc -n "${NS}" delete pod web-1 --timeout=60s >&2
(( $(date +%s) - t0 < 20 )) || fail "deletion took too long"
[[ ! -e "/proc/${OLD_PID}" ]] || fail "old process ${OLD_PID} still alive"
recreated() { local u; u="$(jp pod/web-1 '{.metadata.uid}')"; [[ -n "${u}" && "${u}" != "${UID1}" ]]; }
retry 30 "StatefulSet recreated web-1 (new uid)" recreated
kc -n "${NS}" wait --for=condition=Ready pod/web-1 --timeout=60s >&2
IP1="$(ip_of web-1)"
[[ "$(curl -sS --max-time 5 "http://${IP1}:8080/whoami" | json_field starts)" == 3 ]] || fail "web-1 lost its PVC data"
pass "old process gone, object deleted, web-1 back at ${IP1} with its PVC (start 3)"

step "unmapped image"
kc apply -f - >&2 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: unmapped, namespace: ${NS}}
spec:
  nodeSelector: {kubernetes.io/hostname: ${NODE}}
  tolerations: [{key: kache.dev/kt-smoke, operator: Exists, effect: NoSchedule}]
  containers: [{name: c, image: "example.com/not-mapped:1.0"}]
EOF
# ErrImagePull on the first try, ImagePullBackOff while the next one waits.
errimage() { [[ "$(jp pod/unmapped '{.status.containerStatuses[0].state.waiting.reason}')" =~ ^(ErrImagePull|ImagePullBackOff)$ ]]; }
retry 30 "unmapped image: Waiting ErrImagePull/ImagePullBackOff" errimage
node_ready || fail "kubelet not Ready any more"

step "Lease renewal"
lease_renewed() { [[ "$(kc -n kube-node-lease get lease "${NODE}" -o jsonpath='{.spec.renewTime}')" != "${renew0}" ]]; }
retry 30 "Lease renewed since the start" lease_renewed

step "kubelet-down stops everything it started"
mapfile -t PIDS < <(cat "${STATE}"/pods/*/*.pid 2>/dev/null)
mapfile -t NETNS < <(ls "${STATE}/netns")
(( ${#PIDS[@]} >= 3 && ${#NETNS[@]} >= 4 )) || fail "expected >=3 pids and >=4 netns, got ${#PIDS[@]} / ${#NETNS[@]}"
"${CLUSTER}" kubelet-down >&2
for p in "${PIDS[@]}"; do [[ ! -e "/proc/${p}" ]] || fail "pid ${p} survived kubelet-down"; done
for n in "${NETNS[@]}"; do
  if ip netns list | awk '{print $1}' | grep -qx -- "${n}"; then fail "netns ${n} survived kubelet-down"; fi
done
not_ready() { [[ "$(kc get node "${NODE}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == False ]]; }
retry 10 "Node ${NODE} reported NotReady" not_ready
pass "${#PIDS[@]} processes and ${#NETNS[@]} network namespaces gone"
