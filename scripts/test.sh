#!/usr/bin/env bash
# Runs every check kache has: formatting, lints, all tests, and script syntax.
# This is the README's test command; .ci/run calls it after installing what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets --locked
echo "== Redis clients (redis-cli, redis-py, go-redis) on a loopback cluster scaling 3 -> 4 -> 2"
tests/resp/run.sh
echo "== crds/ and charts/kache/templates/crd.yaml match operator/src/crd.rs"
cargo run --quiet --locked -p kache-operator --bin crdgen -- --check
echo "== the module graph has no import cycles (scripts/code-map.py)"
python3 scripts/code-map.py graph >/dev/null || python3 scripts/code-map.py graph
echo "== shell scripts parse"
for script in .ci/run scripts/*.sh bench/*.sh tests/k8s/*.sh tests/e2e/*.sh; do
  bash -n "$script"
done
echo "== images/Dockerfile matches images/images.env (scripts/build-images.sh --check-dockerfile)"
scripts/build-images.sh --check-dockerfile
echo "== .github/workflows pass actionlint (built from the Go module proxy once, then cached)"
"$(scripts/go-tool.sh actionlint)" .github/workflows/*.yml
echo "== control-plane binaries and helm (built from the Go module proxy once, then cached)"
k8s_bin=$(tests/k8s/build-control-plane.sh | tail -1)
echo "== helm chart: lint, render with each charts/kache/ci/*-values.yaml"
helm="$k8s_bin/helm"
"$helm" lint --strict charts/kache
for values in charts/kache/ci/*-values.yaml; do
  "$helm" lint --strict charts/kache --namespace kache-system -f "$values" >/dev/null
  "$helm" template kache charts/kache --namespace kache-system -f "$values" >/dev/null
done
# The CRD is a template (so helm upgrade updates it), rendered exactly once even with
# --include-crds (a crds/ copy would make helm install fail on the template's), kept on
# helm uninstall, and left out with crds.install=false. (Rendered into a variable first:
# `helm ... | grep -q` fails under pipefail when grep stops reading early.)
rendered=$("$helm" template kache charts/kache --include-crds)
crds=$(grep -c '^kind: CustomResourceDefinition$' <<<"$rendered" || true)
[ "$crds" = 1 ] || { echo "helm template renders the CRD $crds times, not once" >&2; exit 1; }
grep -q '^    helm.sh/resource-policy: keep$' <<<"$rendered" ||
  { echo "the chart's CRD lacks helm.sh/resource-policy: keep" >&2; exit 1; }
rendered=$("$helm" template kache charts/kache --set crds.install=false)
if grep -q '^kind: CustomResourceDefinition$' <<<"$rendered"; then
  echo "crds.install=false still renders the CRD" >&2
  exit 1
fi
# The values schema and the template guards must refuse bad values.
for bad in replicas=abc image.pullPolicy=Sometimes unknownKey=1 watchNamespace=Not_A_Namespace \
  replicas=2,leaderElection.enabled=false crds.install=maybe; do
  if "$helm" template kache charts/kache --set "$bad" >/dev/null 2>&1; then
    echo "helm template accepted the bad value $bad" >&2
    exit 1
  fi
done
# Least privilege: no wildcard, and none of the dangerous resources or verbs, in any RBAC rule.
# Secrets: exactly get, create and patch (the chart README says why), never list or watch.
for values in charts/kache/ci/*-values.yaml; do
  rbac=$("$helm" template kache charts/kache -f "$values" --show-only templates/rbac.yaml | sed 's/#.*//')
  if grep -nE "\"\*\"|nodes|escalate|bind\"|impersonate" <<<"$rbac"; then
    echo "charts/kache RBAC ($values) grants more than the operator needs" >&2
    exit 1
  fi
  secrets=$(grep -A1 'resources: \["secrets"\]' <<<"$rbac" | grep 'verbs:' || true)
  if [ "$(grep -c . <<<"$secrets")" != 1 ] || ! grep -qF 'verbs: ["get", "create", "patch"]' <<<"$secrets"; then
    echo "charts/kache RBAC ($values): Secrets must be exactly get, create, patch in one rule: $secrets" >&2
    exit 1
  fi
done
echo "== manifests/install.yaml matches the chart"
HELM="$helm" scripts/render-manifests.sh --check
echo "== end to end on a real control plane, from the images (tests/e2e/run.sh builds them)"
tests/e2e/run.sh
echo "== all checks passed"
