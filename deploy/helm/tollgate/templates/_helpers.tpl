{{/* The release's base name, at most 63 characters. */}}
{{- define "tollgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "tollgate.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The image reference. */}}
{{- define "tollgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding the tokens. */}}
{{- define "tollgate.secretName" -}}
{{- if .Values.tokens.existingSecret -}}
{{- .Values.tokens.existingSecret -}}
{{- else -}}
{{- printf "%s-tokens" (include "tollgate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The control plane's URL as the data planes call it. */}}
{{- define "tollgate.controlPlaneUrl" -}}
{{- if .Values.dataPlane.controlPlaneUrl -}}
{{- .Values.dataPlane.controlPlaneUrl -}}
{{- else -}}
{{- printf "http://%s-control-plane:%d" (include "tollgate.fullname" .) (int .Values.controlPlane.service.port) -}}
{{- end -}}
{{- end -}}
