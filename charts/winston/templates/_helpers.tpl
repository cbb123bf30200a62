{{/* Name of the chart, overridable. */}}
{{- define "winston.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: <release>-winston, or the release name when it already contains the chart name. */}}
{{- define "winston.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "winston.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; pass (dict "ctx" $ "component" "controller"). */}}
{{- define "winston.labels" -}}
helm.sh/chart: {{ include "winston.chart" .ctx }}
{{ include "winston.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: winston
{{- end }}

{{- define "winston.selectorLabels" -}}
app.kubernetes.io/name: {{ include "winston.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "winston.controllerName" -}}
{{- printf "%s-controller" (include "winston.fullname" .) }}
{{- end }}

{{- define "winston.proxyName" -}}
{{- printf "%s-proxy" (include "winston.fullname" .) }}
{{- end }}

{{- define "winston.intakeName" -}}
{{- printf "%s-intake" (include "winston.fullname" .) }}
{{- end }}

{{- define "winston.intakeServiceAccount" -}}
{{- default (include "winston.intakeName" .) .Values.intake.serviceAccount.name }}
{{- end }}

{{- define "winston.intakeNamespace" -}}
{{- default .Release.Namespace .Values.intake.namespace }}
{{- end }}

{{- define "winston.controllerServiceAccount" -}}
{{- default (include "winston.controllerName" .) .Values.controller.serviceAccount.name }}
{{- end }}

{{- define "winston.proxyServiceAccount" -}}
{{- default (include "winston.proxyName" .) .Values.proxy.serviceAccount.name }}
{{- end }}

{{- define "winston.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end }}

{{/* The image tenant agent services run by default: the reference runtime. */}}
{{- define "winston.agentImage" -}}
{{ default .Values.image.repository .Values.agentImage.repository }}:{{ default (printf "%s-agent" (default .Chart.AppVersion .Values.image.tag)) .Values.agentImage.tag }}
{{- end }}

{{/* The Secrets named by the model catalog, deduplicated and sorted. */}}
{{- define "winston.upstreamSecrets" -}}
{{- $names := dict }}
{{- range $id, $m := .Values.models }}
{{- if $m.upstreamKey }}
{{- $_ := set $names $m.upstreamKey.secretName true }}
{{- end }}
{{- end }}
{{- keys $names | sortAlpha | join "," }}
{{- end }}

{{/* Volume name for an upstream-key Secret (a DNS label). */}}
{{- define "winston.upstreamVolume" -}}
{{- printf "upstream-%s" (sha256sum . | trunc 10) }}
{{- end }}

{{/*
The namespaces the controller watches, as a JSON list: controller.tenantNamespaces
and controller.watchNamespace together, sorted, without duplicates; empty means all
namespaces. The release namespace holds the proxy's upstream-key Secrets, which the
controller must never be able to read: with the proxy enabled, listing it is refused.
*/}}
{{- define "winston.tenantNamespaces" -}}
{{- $list := concat (.Values.controller.tenantNamespaces | default list) (compact (list .Values.controller.watchNamespace)) | uniq | sortAlpha }}
{{- if and .Values.proxy.enabled (has .Release.Namespace $list) }}
{{- fail (printf "controller.tenantNamespaces/watchNamespace must not include the release namespace %q: the controller would be granted its Secrets, the proxy's upstream keys among them. Keep Tenants in namespaces of their own (or install the release elsewhere)" .Release.Namespace) }}
{{- end }}
{{- toJson $list }}
{{- end }}

{{/*
The controller's rules on the watched namespaces: exactly what it uses.
Tenants, TenantInstances and CreditLedgers: read, watch and change; it
creates and deletes only the two children (Tenants belong to users). Their
status and finalizers subresources. The Secrets of the tenants' instances
(credentials, database password): read, created, applied (patch), watched by
metadata for changes, and deleted by teardown; never `update`. ConfigMaps: `get`
only (a Tenant's application migrations, `components.database.migrations`).
Events (core and events.k8s.io), created and aggregated by patch.
*/}}
{{- define "winston.controllerRules" -}}
- apiGroups: [winston.dev]
  resources: [tenants]
  verbs: [get, list, watch, patch, update]
- apiGroups: [winston.dev]
  resources: [tenantinstances, creditledgers]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [winston.dev]
  resources: [tenants/status, tenantinstances/status, creditledgers/status]
  verbs: [get, patch, update]
- apiGroups: [winston.dev]
  resources: [tenants/finalizers, tenantinstances/finalizers, creditledgers/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
