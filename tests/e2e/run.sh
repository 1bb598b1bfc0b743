#!/usr/bin/env bash
# End-to-end tests of kache on a real control plane with the process kubelet
# (tests/tests/e2e.rs). Builds what is missing (control-plane binaries from the Go
# module proxy, cached in ~/.cache/kache; the kache images with scripts/build-images.sh,
# in target/images/oci), starts a private control plane whose kubelet runs the pods from
# those images, runs the scenarios, and tears everything down, also on failure.
#
#   tests/e2e/run.sh            # what scripts/test.sh runs
#   KACHE_E2E_KEEP=1 tests/e2e/run.sh   # leave the cluster up afterwards for debugging
#
# Outputs (kubectl get cc -w transcripts, timings) go to target/e2e/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

# A control plane of its own, so a developer's cluster (tests/k8s/cluster.sh defaults)
# is never touched: its own state dir, bridge and addresses.
export KACHE_K8S_DIR=${KACHE_E2E_DIR:-/tmp/kache-e2e}
export KACHE_K8S_BRIDGE=${KACHE_E2E_BRIDGE:-kache-e2e0}
export KACHE_K8S_BRIDGE_CIDR=${KACHE_E2E_BRIDGE_CIDR:-10.89.0.1/16}
export KACHE_K8S_NODE_NAME=kache-local
export KACHE_K8S_API_PORT=${KACHE_E2E_API_PORT:-16443}
export KACHE_K8S_ETCD_PORT=${KACHE_E2E_ETCD_PORT:-24790}
export KACHE_K8S_ETCD_PEER_PORT=${KACHE_E2E_ETCD_PEER_PORT:-24800}
export KACHE_K8S_KCM_PORT=${KACHE_E2E_KCM_PORT:-11257}
export KACHE_K8S_SCHED_PORT=${KACHE_E2E_SCHED_PORT:-11259}

bin=$(tests/k8s/build-control-plane.sh | tail -1)
export PATH="$bin:$PATH"
export HELM="$bin/helm"

echo "== build kache-kubelet, and the kache-node and kache-operator images (scripts/build-images.sh)"
cargo build --locked -p process-kubelet --bins
# The kubectl plugin the scenarios run as `kubectl kache` (tests/tests/e2e/plugin.rs).
cargo build --locked -p kubectl-kache
# A second tag of each image (same layers, another version label) for the upgrade scenario.
KACHE_IMAGE_EXTRA_TAG=0.1.0-upgrade scripts/build-images.sh
images="${CARGO_TARGET_DIR:-$root/target}/images/oci"
# The kubelet's way of running an image, once outside Kubernetes: unpacked, chrooted, as 65532.
KACHE_IMAGE_STORE="$images" cargo test --locked -p process-kubelet --features image-smoke --test image_smoke
cargo test --locked -p kache-e2e --features e2e --test e2e --no-run
# kubectl-kache against a bare kube-apiserver and a real node behind the pod proxy (no
# kubelet; seconds): the plugin's own test, before the long scenarios.
KACHE_K8S_BIN="$bin" cargo test --locked -p kubectl-kache --features apiserver --test apiserver

cleanup() {
  local rc=$?
  if [[ -n "${KACHE_E2E_KEEP:-}" ]]; then
    echo "== KACHE_E2E_KEEP set: cluster left up ($(tests/k8s/cluster.sh env | tail -1))"
  else
    tests/k8s/cluster.sh down >/dev/null 2>&1 || tests/k8s/cluster.sh down || true
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== control plane and kubelet"
tests/k8s/cluster.sh down >/dev/null 2>&1 || true
tests/k8s/cluster.sh up
# The pods run the images (kache/node:<version>, kache/operator:<version>), not host binaries.
tests/k8s/cluster.sh kubelet-up -- --image-store "$images"
eval "$(tests/k8s/cluster.sh env | grep '^export KUBECONFIG=')"
# No `kubectl apply` of crds/ here: the chart's templates/crd.yaml installs the CRD, and helm
# would refuse to adopt one that kubectl created.

echo "== scenarios"
mkdir -p target/e2e
started=$(date +%s)
if ! cargo test --locked -p kache-e2e --features e2e --test e2e -- --nocapture 2>&1 | tee target/e2e/run.log; then
  echo "== e2e failed; cluster state, kubelet and pod logs:" >&2
  kubectl get nodes,pods -A -o wide >&2 || true
  kubectl get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -30 >&2 || true
  echo "---- kubelet log (last 40 lines)" >&2
  tail -40 "$KACHE_K8S_DIR/logs/kache-kubelet.log" >&2 || true
  for f in "$KACHE_K8S_DIR"/kubelet/pods/*/*.log; do
    [[ -e "$f" ]] || continue
    echo "---- $f (last 30 lines)" >&2
    tail -30 "$f" >&2
  done
  exit 1
fi
echo "== e2e passed in $(( $(date +%s) - started ))s"
