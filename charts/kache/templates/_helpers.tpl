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
Fails rendering on combinations that would run the operator unsafely.
*/}}
{{- define "kache.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicas=%d needs leaderElection.enabled=true: two operators without a leader would both write the member list of every CacheCluster" (int .Values.replicas)) }}
{{- end }}
{{- end }}
