{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "imgorigin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless the release already has it. */}}
{{- define "imgorigin.fullname" -}}
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

{{- define "imgorigin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "imgorigin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imgorigin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "imgorigin.labels" -}}
helm.sh/chart: {{ include "imgorigin.chart" . }}
{{ include "imgorigin.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "imgorigin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imgorigin.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret passed with envFrom: the user's existingSecret, or the chart's own. */}}
{{- define "imgorigin.secretName" -}}
{{- default (include "imgorigin.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "imgorigin.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The claim holding the cache when persistence is on. */}}
{{- define "imgorigin.pvcName" -}}
{{- default (printf "%s-cache" (include "imgorigin.fullname" .)) .Values.cache.persistence.existingClaim }}
{{- end }}

{{/* The preStop sleep, the drain and a margin: the kubelet's SIGKILL must never cut the drain short. */}}
{{- define "imgorigin.terminationGracePeriodSeconds" -}}
{{- add .Values.gracefulStopTimeout .Values.preStopSleepSeconds .Values.terminationGracePeriodMarginSeconds }}
{{- end }}
