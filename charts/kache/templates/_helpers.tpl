{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "kache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, suffixed with the chart name unless it already contains it.
Truncated so that "<fullname>-operator-metrics" still fits in 63 characters.
*/}}
{{- define "kache.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the operator Deployment, its (Cluster)Role and bindings.
*/}}
{{- define "kache.operatorName" -}}
{{- printf "%s-operator" (include "kache.fullname" .) }}
{{- end }}

{{/*
helm.sh/chart label value.
*/}}
{{- define "kache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the chart.
*/}}
{{- define "kache.labels" -}}
helm.sh/chart: {{ include "kache.chart" . }}
{{ include "kache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kache
{{- end }}

{{/*
Selector labels of the operator pods. They include the component, so that cache pods
(which the operator labels app.kubernetes.io/name=kache too) never match.
*/}}
{{- define "kache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The selector labels as `k=v,k=v` (KACHE_OPERATOR_POD_LABELS): the cache pods'
NetworkPolicy lets the pods with these labels, in the release namespace, read the nodes'
HTTP port.
*/}}
{{- define "kache.selectorString" -}}
{{- $pairs := list }}
{{- range $key, $value := include "kache.selectorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
ServiceAccount of the operator.
*/}}
{{- define "kache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kache.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image.
*/}}
{{- define "kache.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Default image of the cache nodes (KACHE_NODE_IMAGE).
*/}}
{{- define "kache.nodeImage" -}}
{{- .Values.nodeImage | default (printf "kache/node:%s" .Chart.AppVersion) }}
{{- end }}

{{/*
Name of the leader-election Lease (KACHE_OPERATOR_LEASE_NAME).
*/}}
{{- define "kache.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "kache.fullname" .) }}
{{- end }}

{{/*
The namespaces the operator watches, as a JSON list (read it with fromJsonArray): empty with
watchAllNamespaces, else watchNamespaces plus the deprecated watchNamespace, without
repeats, or the release namespace when both are empty.
*/}}
{{- define "kache.watchNamespaces" -}}
{{- $namespaces := list }}
{{- if not .Values.watchAllNamespaces }}
{{- $namespaces = concat (.Values.watchNamespaces | default list) (compact (list (.Values.watchNamespace | default ""))) | uniq }}
{{- if not $namespaces }}
{{- $namespaces = list .Release.Namespace }}
{{- end }}
{{- end }}
{{- toJson $namespaces }}
{{- end }}

{{/*
Fails rendering on combinations that would run the operator unsafely.
*/}}
{{- define "kache.validate" -}}
{{- if and .Values.watchAllNamespaces (or .Values.watchNamespaces .Values.watchNamespace) }}
{{- fail "watchAllNamespaces=true watches every namespace, so watchNamespaces (and the deprecated watchNamespace) must be empty: choose one scope, e.g. --set 'watchNamespaces={}' --set watchNamespace=" }}
{{- end }}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicas=%d needs leaderElection.enabled=true: two operators without a leader would both write the member list of every CacheCluster" (int .Values.replicas)) }}
{{- end }}
{{- end }}

{{/*
The operator's rules on the objects it reconciles: one list for the Roles of the watched
namespaces and for the ClusterRole of watchAllNamespaces. The chart README's RBAC table gives
the reason for each; tests/tests/e2e/security.rs checks the granted rules against it.
*/}}
{{- define "kache.operatorRules" }}
  # The custom resource: watch it and report status. The operator sets no finalizer;
  # cacheclusters/finalizers is what the API server checks before it lets the owner
  # references of the owned objects set blockOwnerDeletion.
  - apiGroups: ["kache.dev"]
    resources: ["cacheclusters"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["kache.dev"]
    resources: ["cacheclusters/status"]
    verbs: ["get", "patch", "update"]
  - apiGroups: ["kache.dev"]
    resources: ["cacheclusters/finalizers"]
    verbs: ["update"]
  # Owned objects: headless + client Services, the config/member-list ConfigMap, the nodes' ServiceAccount.
  - apiGroups: [""]
    resources: ["services", "configmaps", "serviceaccounts"]
    verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
  # TLS and auth Secrets (docs/security.md): get reads the cluster's CA, the generated
  # certificate and token Secrets and the ones users name in spec.tls / spec.auth (their
  # layout is checked, never written); create makes <name>-ca and <name>-auth once; patch
  # (server-side apply) writes <name>-peer-tls and <name>-client-tls when a certificate is
  # issued. No list or watch (no Secret is cached), no update or delete (owner references
  # delete them with their CacheCluster).
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "create", "patch"]
  # Read-only view of the cache pods (readiness, ordinals, pod IPs for status polling).
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch"]
  # Membership/discovery; also required so the operator may create the nodes' Role
  # (which grants list/watch on endpointslices) without the `escalate` verb.
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["get", "list", "watch"]
  # Kubernetes Events about CacheClusters (both APIs, depending on the client library).
  - apiGroups: [""]
    resources: ["events"]
    verbs: ["create", "patch"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
  # The cache nodes themselves.
  - apiGroups: ["apps"]
    resources: ["statefulsets"]
    verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
  - apiGroups: ["policy"]
    resources: ["poddisruptionbudgets"]
    verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
  # The nodes' Role and RoleBinding (read configmaps and endpointslices in their own namespace).
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["roles", "rolebindings"]
    verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
  # Optional NetworkPolicy per CacheCluster (spec.networkPolicy.enabled).
  - apiGroups: ["networking.k8s.io"]
    resources: ["networkpolicies"]
    verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
  {{- if .Values.rbac.serviceMonitors }}
  # Optional prometheus-operator objects per CacheCluster (spec.monitoring): a
  # ServiceMonitor or a PodMonitor, and a PrometheusRule; deleted when turned off.
  - apiGroups: ["monitoring.coreos.com"]
    resources: ["servicemonitors", "podmonitors", "prometheusrules"]
    verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
  {{- end }}
  {{- if .Values.rbac.certManager }}
  # cert-manager Certificates of the members (spec.tls.peer.issuerRef): get reads one to
  # see whether it is current and why it has not issued; create and patch are its
  # server-side apply (create when it does not exist yet). No list or watch (the operator
  # reads each by name at every reconcile), no update or delete (owner references delete
  # them with their CacheCluster). The issued Secrets are read with the Secrets rule.
  - apiGroups: ["cert-manager.io"]
    resources: ["certificates"]
    verbs: ["get", "create", "patch"]
  {{- end }}
{{- end }}
