{{/*
Chart name, truncated to 63 characters (the DNS-1123 label limit).
*/}}
{{- define "kubemaas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or the release name alone when it already
contains the chart name; truncated to 63 characters.
*/}}
{{- define "kubemaas.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value: <name>-<version>.
*/}}
{{- define "kubemaas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (Deployment selectors are immutable).
*/}}
{{- define "kubemaas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubemaas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Common labels of every object the chart creates.
*/}}
{{- define "kubemaas.labels" -}}
helm.sh/chart: {{ include "kubemaas.chart" . }}
{{ include "kubemaas.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubemaas
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "kubemaas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubemaas.fullname" .) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; the tag defaults to appVersion and a
digest, when set, wins. Call with (dict "image" .Values.image "root" .).
*/}}
{{- define "kubemaas.image" -}}
{{- $img := .image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/*
ClusterRole/Role names: cluster-scoped names must be unique per release, hence fullname.
*/}}
{{- define "kubemaas.rbacName" -}}
{{- include "kubemaas.fullname" . }}
{{- end }}
{{- define "kubemaas.clusterReadName" -}}
{{- printf "%s-cluster-read" (include "kubemaas.fullname" . | trunc 50 | trimSuffix "-") }}
{{- end }}

{{/*
The API permissions the operator uses on namespaced resources (contract 7). Keep this
list and tests/chart/contract.py equal; the chart tests check both ways.
*/}}
{{- define "kubemaas.namespacedRules" -}}
- apiGroups: ["kubemaas.io"]
  resources: ["modelservices", "trainingjobs"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["kubemaas.io"]
  resources: ["modelservices/status", "trainingjobs/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["get", "list", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "patch"]
{{- end }}

{{/*
Cluster-scoped reads kopf needs to discover its resources and namespaces (contract 7).
*/}}
{{- define "kubemaas.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
