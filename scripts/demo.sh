#!/usr/bin/env bash
# One command to try kache on a laptop, with no container runtime: a real Kubernetes
# control plane (built from source through the Go module proxy, cached in
# ~/.cache/kache), the process kubelet, the Helm chart, and a 3-member CacheCluster.
#
#   scripts/demo.sh up      # build what is missing, start, install, wait until Available
#   scripts/demo.sh down    # stop everything and remove what it created
#
# Needs root (network namespaces for pod IPs), Go 1.21+, Rust, kubectl and a few system
# tools; `up` first names each one missing, with what to install, and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export KACHE_K8S_DIR=${KACHE_DEMO_DIR:-/tmp/kache-demo}
export KACHE_K8S_BRIDGE=${KACHE_DEMO_BRIDGE:-kache-demo0}
export KACHE_K8S_BRIDGE_CIDR=${KACHE_DEMO_BRIDGE_CIDR:-10.90.0.1/16}
export KACHE_K8S_API_PORT=${KACHE_DEMO_API_PORT:-26443}
export KACHE_K8S_ETCD_PORT=${KACHE_DEMO_ETCD_PORT:-25790}
export KACHE_K8S_ETCD_PEER_PORT=${KACHE_DEMO_ETCD_PEER_PORT:-25800}
export KACHE_K8S_KCM_PORT=${KACHE_DEMO_KCM_PORT:-12257}
export KACHE_K8S_SCHED_PORT=${KACHE_DEMO_SCHED_PORT:-12259}

case "${1:-}" in
  up) ;;
  down)
    tests/k8s/cluster.sh down
    exit 0
    ;;
  *)
    echo "usage: scripts/demo.sh up|down" >&2
    exit 2
    ;;
esac

# Everything `up` needs, checked before any work starts: one line per missing tool with
# what to install (Debian/Ubuntu package names), then exit 1. It installs nothing itself:
# a demo should not change a laptop's packages unasked (.ci/run does, on a throwaway CI
# machine). tests/k8s/cluster.sh and build-control-plane.sh check these again, later.
preflight() {
  local missing=() packages=() tool package
  [[ "$(id -u)" == 0 ]] ||
    missing+=("root: network namespaces and a bridge for pod IPs; run: sudo -E env \"PATH=\$PATH\" scripts/demo.sh up")
  command -v cargo >/dev/null ||
    missing+=("cargo: install rustup (https://rustup.rs); rust-toolchain.toml pins the version")
  command -v kubectl >/dev/null ||
    missing+=("kubectl: install kubectl v1.33+ (https://kubernetes.io/docs/tasks/tools/)")
  if ! command -v go >/dev/null; then
    missing+=("go: install Go 1.21+ (https://go.dev/dl; apt: golang-go on Debian 13 / Ubuntu 24.04+)")
  elif ! go env GOVERSION 2>/dev/null | grep -Eq '^go1\.(2[1-9]|[3-9][0-9])'; then
    missing+=("go: $(go env GOVERSION 2>/dev/null || echo "an old Go") is too old: install Go 1.21+ (https://go.dev/dl), which fetches the toolchain the build asks for")
  fi
  # tool:package. cc is the C compiler and linker cargo needs (ring has C code).
  for pair in cc:build-essential curl:curl openssl:openssl ip:iproute2 ss:iproute2 \
    nsenter:util-linux unshare:util-linux flock:util-linux setsid:util-linux mount:mount; do
    tool=${pair%%:*} package=${pair#*:}
    command -v "$tool" >/dev/null && continue
    missing+=("$tool: apt-get install $package")
    [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "scripts/demo.sh up: missing what it needs:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  [[ ${#packages[@]} -eq 0 ]] || echo "  (all packages at once: apt-get install -y ${packages[*]})" >&2
  exit 1
}
preflight

bin=$(tests/k8s/build-control-plane.sh | tail -1)
export PATH="$bin:$PATH"
echo "== building kache (cargo build)"
cargo build --locked -p kache-node -p kache-operator -p process-kubelet --bins
tests/k8s/cluster.sh up
tests/k8s/cluster.sh kubelet-up \
  --image "kache/node=${CARGO_TARGET_DIR:-$root/target}/debug/kache-node" \
  --image "kache/operator=${CARGO_TARGET_DIR:-$root/target}/debug/kache-operator"
eval "$(tests/k8s/cluster.sh env | grep '^export KUBECONFIG=')"

echo "== helm install kache charts/kache"
# The demo CacheCluster lives in "default": the operator watches that namespace only (a Role
# there), not its own release namespace.
helm upgrade --install kache charts/kache --namespace kache-system --create-namespace \
  --set 'watchNamespaces={default}' --wait --timeout 180s
kubectl apply -n default -f manifests/examples/demo.yaml
echo "== waiting for cc/demo to be Available"
for _ in $(seq 1 180); do
  phase=$(kubectl get cc demo -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ "$phase" == Available ]] && break
  sleep 1
done
kubectl get cc demo -o wide
[[ "$phase" == Available ]] || { echo "cc/demo is $phase, not Available" >&2; exit 1; }
ip=$(kubectl get pod demo-0 -o jsonpath='{.status.podIP}')
cat <<TRY

kache is up. Try:

  export KUBECONFIG=$KUBECONFIG
  kubectl get cc -w                                  # watch members, phase and rebalance
  kubectl scale cc/demo --replicas=5                 # then 2: no key is lost
  kubectl describe cc demo                           # conditions and events
  # Auth is on: the operator generated an admin token in the Secret demo-auth.
  TOKEN=\$(kubectl get secret demo-auth -o jsonpath='{.data.admin}' | base64 -d)
  curl -X PUT -H "Authorization: Bearer \$TOKEN" http://$ip:7070/v1/keys/hello -d world
  curl -H "Authorization: Bearer \$TOKEN" http://$ip:7070/v1/keys/hello   # any pod, any key
  curl http://$ip:7070/v1/keys/hello                 # 401: no token
  curl -s http://$ip:7070/v1/cluster | head -c 600   # what the operator reads (open)
  redis-cli -c -h $ip -a "\$TOKEN" SET greeting hello  # Redis clients too (RESP, port 6379)
  redis-cli -c -h $ip -a "\$TOKEN" CLUSTER SHARDS      # the slot map follows kubectl scale

Stop everything with: scripts/demo.sh down
TRY
