{{/* Kept to the template subset deploy/helm/render.py documents: the tests render the chart with it. */}}
{{- define "otel-exec.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "otel-exec.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "otel-exec.labels" -}}
{{ include "otel-exec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "otel-exec.headersSecret" -}}
{{- default (include "otel-exec.fullname" .) .Values.otlp.existingSecret -}}
{{- end -}}
