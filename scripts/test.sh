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
echo "== the fault suite again, with mutual TLS between the nodes (as a CacheCluster runs by default)"
# (--workspace keeps the features the run above unified, so nothing is compiled twice.)
KACHE_FAULT_TLS=1 cargo test --workspace --locked --test faults
echo "== Redis clients (redis-cli, redis-py, go-redis) on a loopback cluster scaling 3 -> 4 -> 2"
tests/resp/run.sh
echo "== crds/ and charts/kache/templates/crd.yaml match operator/src/crd.rs"
cargo run --quiet --locked -p kache-operator --bin crdgen -- --check
echo "== charts/kache/files/prometheus-rules.yaml matches operator/src/alerts.rs; promtool checks and unit-tests it"
cargo run --quiet --locked -p kache-operator --bin rulegen -- --check
promtool=$(scripts/go-tool.sh promtool)
"$promtool" check rules charts/kache/files/prometheus-rules.yaml
"$promtool" test rules tests/monitoring/rules.test.yaml
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
  'watchNamespaces={Not_A_Namespace}' 'watchNamespaces={caches,-bad}' watchNamespaces=caches \
  watchAllNamespaces=maybe 'watchAllNamespaces=true,watchNamespaces={caches}' \
  replicas=2,leaderElection.enabled=false crds.install=maybe rbac.certManager=maybe logFormat=yaml \
  metrics.prometheusRule.enabled=maybe grafana.dashboard.enabled=maybe grafana.dashboard.namespace=Not_A_Namespace; do
  if "$helm" template kache charts/kache --set "$bad" >/dev/null 2>&1; then
    echo "helm template accepted the bad value $bad" >&2
    exit 1
  fi
done
# Least privilege: no wildcard, and none of the dangerous resources or verbs, in any RBAC rule.
# Secrets: exactly get, create and patch (the chart README says why), never list or watch.
# (Each ci/*-values.yaml: watch-namespace, watch-all-namespaces and the deprecated
# watchNamespace render the other scopes.)
for values in charts/kache/ci/*-values.yaml; do
  rbac=$("$helm" template kache charts/kache -f "$values" --show-only templates/rbac.yaml | sed 's/#.*//')
  if grep -nE "\"\*\"|nodes|escalate|bind\"|impersonate" <<<"$rbac"; then
    echo "charts/kache RBAC ($values) grants more than the operator needs" >&2
    exit 1
  fi
  # One Secrets rule in each of the operator's (Cluster)Roles (one per watched namespace).
  secrets=$(grep -A1 'resources: \["secrets"\]' <<<"$rbac" | grep 'verbs:' || true)
  roles=$(grep -c 'resources: \["cacheclusters"\]' <<<"$rbac" || true)
  if [ "$roles" -lt 1 ] || [ "$(grep -c . <<<"$secrets")" != "$roles" ] ||
    grep -vqF 'verbs: ["get", "create", "patch"]' <<<"$secrets"; then
    echo "charts/kache RBAC ($values): Secrets must be exactly get, create, patch in one rule per Role: $secrets" >&2
    exit 1
  fi
done
# cert-manager Certificates: no rule by default; with rbac.certManager=true exactly get,
# create and patch (the chart README says why), never list, watch, update or delete.
rbac=$("$helm" template kache charts/kache --show-only templates/rbac.yaml)
if grep -q 'cert-manager.io' <<<"$rbac"; then
  echo "charts/kache: the default RBAC grants cert-manager Certificates" >&2
  exit 1
fi
rbac=$("$helm" template kache charts/kache --set rbac.certManager=true --show-only templates/rbac.yaml)
certificates=$(grep -A2 'apiGroups: \["cert-manager.io"\]' <<<"$rbac" | sed -n 's/^ *//; 2,3p')
if [ "$certificates" != $'resources: ["certificates"]\nverbs: ["get", "create", "patch"]' ]; then
  printf 'charts/kache: with rbac.certManager=true the Certificates rule must be get, create, patch:\n%s\n' "$certificates" >&2
  exit 1
fi
# Scope: by default the operator's rules are a Role in the release namespace and nothing is
# cluster-wide; watchNamespaces puts a Role in each listed namespace and none elsewhere; only
# watchAllNamespaces=true renders a ClusterRole (so the first check can fail).
rbac_kinds() { # values... -> "kind namespace" of each RBAC object, sorted
  "$helm" template kache charts/kache --namespace kache-system "$@" --show-only templates/rbac.yaml |
    awk '/^kind:/ {kind=$2; ns="-"} /^  namespace:/ && kind {print kind, $2; kind=""} /^---/ && kind {print kind, "-"; kind=""} END {if (kind) print kind, "-"}' |
    sort
}
kinds=$(rbac_kinds)
expected=$'Role kache-system\nRole kache-system\nRoleBinding kache-system\nRoleBinding kache-system'
if [ "$kinds" != "$expected" ]; then
  printf 'charts/kache: the default RBAC is not two Roles and two RoleBindings in kache-system:\n%s\n' "$kinds" >&2
  exit 1
fi
kinds=$(rbac_kinds --set 'watchNamespaces={caches,team-a}' --set leaderElection.enabled=false)
expected=$'Role caches\nRole team-a\nRoleBinding caches\nRoleBinding team-a'
if [ "$kinds" != "$expected" ]; then
  printf 'charts/kache: watchNamespaces={caches,team-a} should give a Role and RoleBinding in each, nothing else:\n%s\n' "$kinds" >&2
  exit 1
fi
if ! grep -qx 'ClusterRole -' <<<"$(rbac_kinds --set watchAllNamespaces=true)"; then
  echo "charts/kache: watchAllNamespaces=true renders no ClusterRole" >&2
  exit 1
fi
# The default render (and manifests/install.yaml, made from it) has no ClusterRole that can
# write anything: the only cluster-scoped RBAC allowed by default is none at all.
rendered=$("$helm" template kache charts/kache --namespace kache-system)
if grep -qE '^kind: ClusterRole(Binding)?$' <<<"$rendered"; then
  echo "charts/kache: the default render has a ClusterRole or ClusterRoleBinding" >&2
  exit 1
fi
# The monitoring extras: the PrometheusRule carries every alert of the rule file, and the
# dashboard ConfigMap carries the sidecar's label and the dashboard JSON; neither by default.
rendered=$("$helm" template kache charts/kache --namespace kache-system)
if grep -qE '^kind: PrometheusRule$|grafana_dashboard' <<<"$rendered"; then
  echo "charts/kache: the default render has a PrometheusRule or a dashboard ConfigMap" >&2
  exit 1
fi
rendered=$("$helm" template kache charts/kache --namespace kache-system --set metrics.prometheusRule.enabled=true \
  --set grafana.dashboard.enabled=true --show-only templates/prometheusrule.yaml --show-only templates/dashboard.yaml)
alerts=$(grep -c '^  - alert: ' charts/kache/files/prometheus-rules.yaml)
if [ "$(grep -c '^    - alert: ' <<<"$rendered")" != "$alerts" ] || ! grep -q '^    grafana_dashboard: "1"$' <<<"$rendered" ||
  ! grep -q '"uid": "kache-cluster"' <<<"$rendered"; then
  echo "charts/kache: the PrometheusRule or the dashboard ConfigMap is not rendered as expected" >&2
  exit 1
fi
echo "== manifests/install.yaml matches the chart"
HELM="$helm" scripts/render-manifests.sh --check
echo "== end to end on a real control plane, from the images (tests/e2e/run.sh builds them)"
tests/e2e/run.sh
echo "== all checks passed"
